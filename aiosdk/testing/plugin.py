"""The pytest plugin (registered by entry point; its fixtures do nothing until a test uses them)."""
