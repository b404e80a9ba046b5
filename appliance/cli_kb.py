"""`appliance kb ...`: the knowledge base (the offline library) from the command line."""

from __future__ import annotations

import datetime
import os
import sys
import threading
from pathlib import Path

import click

from appliance.cli_support import Context, diag, dumps, pass_ctx
from appliance.errors import EXIT_FAILURE


@click.group()
def kb() -> None:
    """The offline library: add manuals, books and ZIM archives, search them.

    \b
    Examples:
      appliance kb add ~/manuals /media/usb/wikimed.zim
      appliance kb search "how do I stop heavy bleeding"
      appliance kb list
    """


def _progress_bar(quiet: bool):
    """A rich bar (files, chunks, rate, ETA) on an interactive stderr only; nothing in pipes or with --quiet."""
    if quiet or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[chunks]} chunks  {task.fields[rate]}  ETA {task.fields[eta]}"),
                   TextColumn("{task.fields[current]}"), console=Console(stderr=True), transient=True)
    task = bar.add_task("files", total=None, chunks=0, rate="", eta="?", current="")

    def update(p) -> None:
        eta = "?" if p.eta_s is None else str(datetime.timedelta(seconds=int(p.eta_s)))
        name = Path(p.current).name
        bar.update(task, completed=p.files_done, total=p.files_total, chunks=p.chunks_done,
                   rate=f"{p.rate:.1f}/s" if p.rate else "", eta=eta, current=name[-40:])

    return update, bar


@kb.command("add")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--full-zim", is_flag=True, help="Embed ZIM archives whole (small ones only) instead of registering them.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def kb_add(obj: Context, paths: tuple[Path, ...], full_zim: bool, as_json: bool) -> None:
    """Add files or directories (recursive): txt, md, html, pdf, epub, zim.

    \b
    Unchanged files are skipped, changed ones replaced. With no PATH, an interrupted
    `kb add` resumes where it stopped. ZIM archives are registered and searched through
    their own full-text index.
    Examples:
      appliance kb add ~/manuals
      appliance kb add /media/usb/wikipedia_en_medicine.zim
      appliance kb add          # resume an interrupted ingest
    """
    knowledge = obj.services.kb
    if not paths and not knowledge.pending():
        raise click.UsageError("no path given and no interrupted ingest to resume; try: appliance kb add ~/manuals")
    if not paths:
        diag(f"resuming an interrupted ingest ({len(knowledge.pending())} files left)", obj.quiet)
    update, bar = _progress_bar(obj.quiet)
    cancel = threading.Event()
    try:
        if bar is not None:
            with bar:
                report = knowledge.add(list(paths), progress=update, cancel=cancel, full_zim=full_zim)
        else:
            report = knowledge.add(list(paths), cancel=cancel, full_zim=full_zim)
    except KeyboardInterrupt:
        cancel.set()
        raise
    data = report.as_dict()
    if as_json:
        click.echo(dumps(data))
    else:
        parts = [f"{report.added} added", f"{report.replaced} replaced", f"{report.skipped} unchanged",
                 f"{report.chunks} chunks"]
        if report.registered:
            parts.append(f"{report.registered} ZIM registered")
        if report.ignored:
            parts.append(f"{report.ignored} other files ignored")
        click.echo(", ".join(parts) + f" in {report.seconds:.1f} s")
        for path, note in report.notes:
            click.echo(f"note      {path}: {note}")
        for path, reason in report.failed:
            click.echo(f"FAILED    {path}: {reason}")
        if report.cancelled:
            click.echo("interrupted; run `appliance kb add` to resume")
    if report.failed:
        sys.exit(EXIT_FAILURE)


@kb.command("search")
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 100), default=5, show_default=True, help="How many passages.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_search(obj: Context, query: str, k: int, as_json: bool) -> None:
    """Search the library by meaning and by words; prints score, file, section, page, snippet.

    \b
    Nothing is printed (and the exit code is 1) when nothing is relevant enough.
    Examples:
      appliance kb search "how to purify water with bleach"
      appliance kb search --json -k 10 "tourniquet"
    """
    if not query.strip():
        raise click.UsageError('the query is empty; try: appliance kb search "purify water"')
    hits = obj.services.kb.search(query, k=k)
    if as_json:
        click.echo(dumps([hit.as_dict() for hit in hits]))
    else:
        for number, hit in enumerate(hits, 1):
            where = ", ".join(p for p in (hit.heading, f"page {hit.page}" if hit.page is not None else "") if p)
            click.echo(f"[{number}] {hit.score:.3f}  {hit.path}")
            click.echo(f"    {hit.title}" + (f" — {where}" if where else ""))
            click.echo(f"    {hit.snippet}")
        if not hits:
            diag("the library has nothing on this", obj.quiet)
    if not hits:
        sys.exit(EXIT_FAILURE)


@kb.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_list(obj: Context, as_json: bool) -> None:
    """List the documents and ZIM archives in the library.

    \b
    Example:
      appliance kb list --json
    """
    rows = obj.services.kb.documents()
    if as_json:
        click.echo(dumps(rows))
        return
    for row in rows:
        added = datetime.datetime.fromtimestamp(row["added"]).strftime("%Y-%m-%d %H:%M")
        chunks = "ZIM index" if row["mode"] == "registered" else f"{row['chunks']} chunks"
        click.echo(f"{row['kind']:5} {chunks:>12}  {added}  {row['path']}")
    if not rows:
        diag("the library is empty; add files with: appliance kb add ~/manuals", obj.quiet)


@kb.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_stats(obj: Context, as_json: bool) -> None:
    """Documents, chunks, ZIM archives and size on disk.

    \b
    Example:
      appliance kb stats --json
    """
    stats = obj.services.kb.stats()
    if as_json:
        click.echo(dumps(stats))
        return
    click.echo(f"documents: {stats['documents']}\nchunks:    {stats['chunks']}\nzims:      {stats['zims']}\n"
               f"size:      {stats['size_bytes'] / 1e6:.1f} MB\ndirectory: {stats['directory']}")


@kb.command("remove")
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_remove(obj: Context, paths: tuple[str, ...], as_json: bool) -> None:
    """Remove documents (or everything under a directory) from the library.

    \b
    Example:
      appliance kb remove ~/manuals/old-radio.pdf
    """
    knowledge = obj.services.kb
    removed = {path: knowledge.remove(path) for path in paths}
    if as_json:
        click.echo(dumps({"removed": [{"path": p, "chunks": n} for p, n in removed.items()]}))
    else:
        for path, count in removed.items():
            click.echo(f"removed {path} ({count} chunks)")
