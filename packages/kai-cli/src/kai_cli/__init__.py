"""kai_cli."""
