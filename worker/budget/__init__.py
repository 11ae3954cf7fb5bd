"""The platform's request budget, shared by every worker process on every host."""
