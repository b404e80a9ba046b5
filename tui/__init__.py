"""The Textual terminal UI. Calls appliance services in thread workers; holds no business logic."""
