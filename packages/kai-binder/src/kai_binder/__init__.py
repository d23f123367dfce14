"""kai_binder."""
