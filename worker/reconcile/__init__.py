"""The reconcile step: match a bill to its redemptions, call the platform, record outcomes."""
