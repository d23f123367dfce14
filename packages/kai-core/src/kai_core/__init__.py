"""kai_core."""
