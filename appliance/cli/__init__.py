"""The headless CLI (`appliance ...`): the only module of appliance/ that may import tui (the bare `appliance`
command opens the TUI). `appliance.cli:main` is the console script."""

from appliance.cli.root import cli, main

__all__ = ["cli", "main"]
