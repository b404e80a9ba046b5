"""Pieces every CLI command module shares: lazy services, the JSON serializer, diagnostics, progress."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click


class Context:
    """Lazily built services for the command that runs (so --help and --version touch nothing on disk)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._services = None

    @property
    def services(self):
        if self._services is None:
            from appliance.services import Services

            self._services = Services.create()
        return self._services


pass_ctx = click.make_pass_decorator(Context)


def dumps(data: Any) -> str:
    """The one JSON serializer shared by every --json output."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a path that is not UTF-8 (surrogate escapes): \u escapes keep it exact and printable
        text = json.dumps(data, indent=2, ensure_ascii=True, default=str)
    return text


def diag(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(message, err=True)


def hash_progress(label: str, quiet: bool = False):
    """A progress callback for hashing: a rich bar on an interactive stderr, nothing in pipes or with --quiet."""
    if quiet or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        return None, _nullcontext()
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
