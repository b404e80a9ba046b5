"""Pieces every CLI command module shares: lazy services, the JSON serializer, diagnostics, progress."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from appliance.services import Services


class Context:
    """Lazily built services for the command that runs (so --help and --version touch nothing on disk)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._services: Services | None = None

    @property
    def services(self) -> Services:
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


def interactive(quiet: bool) -> bool:
    """Whether progress bars may be drawn: an interactive stderr, not --quiet, not a dumb terminal."""
    return not quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def _bar(label: str, quiet: bool, count_bytes: bool):
    if not interactive(quiet):
        return None, contextlib.nullcontext()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (DownloadColumn(), TransferSpeedColumn()) if count_bytes else (MofNCompleteColumn(),
                                                                             TimeRemainingColumn())
    bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), *columns,
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar


def hash_progress(label: str, quiet: bool = False):
    """A progress callback for hashing: a rich bar (bytes, speed) on an interactive stderr, nothing in pipes or
    with --quiet. Returns (update or None, a context manager)."""
    return _bar(label, quiet, count_bytes=True)


def count_progress(label: str, quiet: bool = False):
    """The same for counted items (done / total, time left)."""
    return _bar(label, quiet, count_bytes=False)
