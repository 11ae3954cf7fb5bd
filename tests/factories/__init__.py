"""Test data builders, one module per area. Each adds rows to a session and flushes."""
