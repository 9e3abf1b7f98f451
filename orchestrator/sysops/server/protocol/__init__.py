"""Generated stubs of the control API."""
