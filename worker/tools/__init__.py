"""The demo, its scenario and publishing events: the only code that imports the sandbox."""
