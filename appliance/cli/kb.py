"""`appliance kb ...`: the knowledge base (the offline library) from the command line.

Everything a file can put on the screen (its name, title, headings, text, a parser's complaint) goes through
appliance.sanitize.clean_line; `--json` output is exact (JSON escapes control characters itself). A file name that
is not UTF-8 is shown with its undecodable bytes as `\\xNN`.
"""

from __future__ import annotations

import datetime
import sys
import threading
from pathlib import Path

import click

from appliance.cli.support import Context, count_progress, diag, dumps, interactive, pass_ctx
from appliance.errors import EXIT_FAILURE, ApplianceError, IntegrityError
from appliance.sanitize import clean, clean_line
from kb.errors import DiskFull, KBError, KBUsageError, StoreDamaged


@click.group()
def kb() -> None:
    """The offline library: add manuals, books and ZIM archives, search them.

    \b
    Examples:
      appliance kb add ~/manuals /media/usb/wikimed.zim
      appliance kb search "how do I stop heavy bleeding"
      appliance kb list
      appliance kb repair
    """


def _progress_bar(quiet: bool):
    """A rich bar (files, chunks, rate, ETA) on an interactive stderr only; nothing in pipes or with --quiet."""
    if not interactive(quiet):
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[chunks]} chunks  {task.fields[rate]}  ETA {task.fields[eta]}"),
                   TextColumn("{task.fields[current]}", markup=False), console=Console(stderr=True), transient=True)
    task = bar.add_task("files", total=None, chunks=0, rate="", eta="?", current="")

    def update(p) -> None:
        eta = "?" if p.eta_s is None else str(datetime.timedelta(seconds=int(p.eta_s)))
        name = clean_line(Path(p.current).name)[-40:]
        inside = f" ({p.stage}{f' {p.file_chunks_done}/{p.file_chunks}' if p.file_chunks else ''})" if p.stage else ""
        bar.update(task, completed=p.fraction, total=p.files_total, chunks=p.chunks_done,
                   rate=f"{p.rate:.1f}/s" if p.rate else "", eta=eta, current=name + inside)

    return update, bar


def _say(message: str, quiet: bool) -> None:
    diag(clean_line(message), quiet)


def _notices(obj: Context, knowledge) -> list[dict]:
    """The library's notices, and the sources its searches named (a damaged archive not searched, a cited file
    changed since it was added), each one line on stderr; returns those sources for --json."""
    for notice in knowledge.take_notices():
        _say(f"note: {notice}", obj.quiet)
    named = knowledge.take_problems()
    for state in named:
        _say(f"note: {state.line()}", obj.quiet)
    return [state.as_dict() for state in named]


def _vectors_sound(obj: Context, knowledge) -> None:
    """A damaged vector index is rebuilt here, with a progress bar, before the command uses it. Never blocks: if
    another program holds the library, or the disk is full, the command goes on (search scans the store instead)."""
    try:
        problem = knowledge.vector_problem()
    except DiskFull:
        return  # the command says what it could do without the index
    if problem is None:
        return
    _say(f"the vector index is damaged ({problem}); rebuilding it from the library's own store (no file is read "
         "again, nothing is embedded again)", obj.quiet)
    update, bar = count_progress("rebuilding the vector index", obj.quiet)
    try:
        with bar:
            count = knowledge.rebuild_vectors(progress=update, wait=False)
    except KBError as exc:
        _say(f"note: the vector index could not be rebuilt now ({exc})", obj.quiet)
        return
    _say(f"vector index rebuilt: {count} passages", obj.quiet)


@kb.command("add")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--full-zim", is_flag=True,
              help="Embed ZIM archives whole (small ones only) instead of registering them.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def kb_add(obj: Context, paths: tuple[str, ...], full_zim: bool, as_json: bool) -> None:
    """Add files or directories (recursive): txt, md, html, pdf, epub, zim.

    \b
    Unchanged files are skipped, changed ones replaced. With no PATH, an interrupted
    `kb add` resumes where it stopped. ZIM archives are registered and searched through
    their own full-text index. Only regular files are read (FIFOs, devices and sockets
    are skipped). A batch that will not fit on the disk is refused before anything is
    written; one stopped by a full disk is finished by running it again.
    Examples:
      appliance kb add ~/manuals
      appliance kb add /media/usb/wikipedia_en_medicine.zim
      appliance kb add          # resume an interrupted ingest
    """
    if any(not p.strip() for p in paths):
        raise click.UsageError("an empty path names nothing to add (`kb add .` adds the current directory)")
    knowledge = obj.services.kb
    if not paths and not knowledge.pending():
        raise click.UsageError("no path given and no interrupted ingest to resume; try: appliance kb add ~/manuals")
    if not paths:
        _say(f"resuming an interrupted ingest ({len(knowledge.pending())} files left)", obj.quiet)
    _vectors_sound(obj, knowledge)
    update, bar = _progress_bar(obj.quiet)
    cancel = threading.Event()
    try:
        if bar is not None:
            with bar:
                report = knowledge.add([Path(p) for p in paths], progress=update, cancel=cancel, full_zim=full_zim)
        else:
            report = knowledge.add([Path(p) for p in paths], cancel=cancel, full_zim=full_zim)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        _notices(obj, knowledge)
    if as_json:
        click.echo(dumps(report.as_dict()))
    else:
        parts = [f"{report.added} added", f"{report.replaced} replaced", f"{report.skipped} unchanged",
                 f"{report.chunks} chunks"]
        if report.registered:
            parts.append(f"{report.registered} ZIM registered")
        if report.ignored:
            parts.append(f"{report.ignored} other files ignored")
        click.echo(", ".join(parts) + f" in {report.seconds:.1f} s")
        for path, note in report.notes:
            click.echo(clean_line(f"note      {path}: {note}"))
        for path, reason in report.failed:
            click.echo(clean_line(f"FAILED    {path}: {reason}"))
        if report.stopped:
            click.echo(clean_line(f"stopped: {report.stopped}"))
            if report.not_added:
                click.echo(f"not added yet: {len(report.not_added)} more file{'s' if len(report.not_added) > 1 else ''}"
                           " (listed with --json)")
        if report.cancelled:
            click.echo("interrupted; run `appliance kb add` to resume")
    if report.failed or report.stopped:
        sys.exit(EXIT_FAILURE)


@kb.command("search")
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 100), default=5, show_default=True, help="How many passages.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_search(obj: Context, query: str, k: int, as_json: bool) -> None:
    """Search the library by meaning and by words; prints each passage's source, score and snippet.

    \b
    Nothing is printed (and the exit code is 1) when nothing is relevant enough.
    A passage from a ZIM archive names its article (`--json`: "article").
    Examples:
      appliance kb search "how to purify water with bleach"
      appliance kb search --json -k 10 "tourniquet"
    """
    if not query.strip():
        raise click.UsageError('the query is empty; try: appliance kb search "purify water"')
    knowledge = obj.services.kb
    _vectors_sound(obj, knowledge)
    named: list[dict] = []
    try:
        hits = knowledge.search(query, k=k)
    finally:
        named = _notices(obj, knowledge)
    if as_json:
        click.echo(dumps({"hits": [hit.as_dict() | {"source": _described(knowledge, hit.path)} for hit in hits],
                          "source_problems": named}))
    else:
        for number, hit in enumerate(hits, 1):
            source = hit.source(number)
            click.echo(clean_line(f"{source.cite()}  ({hit.score:.3f})"))
            if hit.title and not hit.article:
                click.echo("    " + clean_line(hit.title))
            said = _said(_described(knowledge, hit.path), hit.title)
            if said:
                click.echo("    " + clean_line(said))
            click.echo("    " + clean_line(hit.snippet))
        if not hits:
            unsearched = [state for state in named if not state["searched"]]
            if unsearched:
                diag(f"nothing found in what could be searched; {len(unsearched)} "
                     f"{'archive was' if len(unsearched) == 1 else 'archives were'} not searched (named above)",
                     obj.quiet)
            else:
                diag("the library has nothing on this", obj.quiet)
    if not hits:
        sys.exit(EXIT_FAILURE)


def _described(knowledge, path: str) -> dict:
    """What a source's record says of it for a citation: title, publisher, license (where known), sha256."""
    return knowledge.described(path)


def _said(described: dict, shown_title: str = "") -> str:
    """`from "Title", published by X, license Y`: the facts a citation shows, those known only (a title the hit
    shows already is not repeated)."""
    parts = []
    if described.get("title") and described["title"] != shown_title:
        parts.append(f"from \"{described['title']}\"")
    if described.get("publisher"):
        parts.append(f"published by {described['publisher']}")
    if described.get("license"):
        parts.append(f"license {described['license']}")
    return ", ".join(parts)


@kb.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_list(obj: Context, as_json: bool) -> None:
    """List the documents and ZIM archives in the library.

    \b
    Example:
      appliance kb list --json
    """
    from appliance.answering import field_guide

    knowledge = obj.services.kb
    rows = field_guide.documents(knowledge)  # each with its state now
    if as_json:
        click.echo(dumps(rows))
        return
    for row in rows:
        added = datetime.datetime.fromtimestamp(row["added"]).strftime("%Y-%m-%d %H:%M")
        chunks = "ZIM index" if row["mode"] == "registered" else f"{row['chunks']} chunks"
        click.echo(clean_line(f"{row['kind']:5} {chunks:>12}  {added}  {row['path']}"))
        if "field_guide" in row:
            guide = row["field_guide"]
            click.echo(clean_line(f"{'':19}the field guide {guide['version']} ({guide['date']}): "
                                  f"{guide['provenance']}; `appliance kb guide` lists its sections"))
        state = row["state"]
        if state is not None and state["fix"]:
            click.echo(clean_line(f"{'':19}{state['state'].upper()}: {state['detail']}"
                                  f"{'; not searched' if not state['searched'] else ''}; {state['fix']}"))
    _notices(obj, knowledge)
    if not rows:
        diag("the library is empty; add files with: appliance kb add ~/manuals", obj.quiet)
    elif all(row["state"] is not None and not row["state"]["searched"] for row in rows):
        diag("nothing in the library can be searched now (named above)", obj.quiet)


@kb.command("guide")
@click.argument("section", required=False)
@click.option("--remove", "remove_", is_flag=True, help="Remove the field guide from the library (it stays removed, "
              "upgrades included, until --restore).")
@click.option("--restore", is_flag=True, help="Put the shipped field guide back after a removal.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_guide(obj: Context, section: str | None, remove_: bool, restore: bool, as_json: bool) -> None:
    """The field guide shipped with the appliance: its sections and sources, or one section's text.

    
    Registered in the library on first use, checked against its pinned sha256. Replace it with your own
    by removing it and adding your file.
    Examples:
      appliance kb guide                      # version, state, sections and their sources
      appliance kb guide "Severe bleeding"    # that section's text (no model is loaded)
      appliance kb guide --remove
    """
    from appliance.answering import field_guide

    if remove_ and restore:
        raise click.UsageError("--remove and --restore go one at a time")
    if section is not None:
        found = field_guide.section_text(section)
        if found is None:
            known = ", ".join(title for title, _ in field_guide.chapters())
            raise click.UsageError(f"the field guide has no section {section!r}; its sections: {known}")
        click.echo(dumps({"section": section, "text": found}) if as_json else clean(found))
        return
    knowledge = obj.services.kb
    guide = field_guide.FieldGuide(knowledge)
    if remove_:
        count = guide.remove()
        _say(f"removed the field guide ({count} chunks); it stays out until `appliance kb guide --restore`",
             obj.quiet)
    elif restore:
        state = guide.restore()
        if state.problem:
            _notices(obj, knowledge)
            raise ApplianceError(state.problem)
    listing = guide.listing()
    if as_json:
        click.echo(dumps(listing))
        return
    click.echo(clean_line(f"{field_guide.TITLE}, version {listing['version']} ({listing['date']}): "
                          f"{listing['status']}"))
    click.echo(clean_line(f"  {listing['provenance']}"))
    if listing["status"] == "registered":
        click.echo(clean_line(f"  in the library as {listing['path']}"))
    for chapter in listing["sections"]:
        click.echo(clean_line(f"  {chapter['title']}: {'; '.join(chapter['sources'])}"))
    _notices(obj, knowledge)


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
               f"size:      {stats['size_bytes'] / 1e6:.1f} MB")
    click.echo(clean_line(f"directory: {stats['directory']}"))


@kb.command("show")
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_show(obj: Context, source: str, as_json: bool) -> None:
    """Where one source came from: its sha256, size, origin, when it was added, what the file says of itself.

    
    Each fact says where it was read (a ZIM's metadata, a PDF's document information,
    an EPUB's package metadata); what the file does not say is shown as unknown. The
    state now is checked too (a stat; a hash only if its size or date changed).
    SOURCE is its path, or a file name only one source in the library has.
    Examples:
      appliance kb show /media/usb/wikipedia_en_medicine.zim
      appliance kb show first-aid.pdf --json
    """
    knowledge = obj.services.kb
    try:
        row, state = knowledge.source_record(source)
    except KBUsageError as exc:
        raise click.UsageError(str(exc)) from None
    row["state"] = state.as_dict()
    if as_json:
        click.echo(dumps(row))
        return
    rec = row["record"]
    held = ("registered, searched through its own index" if row["mode"] == "registered"
            else f"{row['chunks']} passages in the library")
    lines = [f"{row['path']}", f"  kind:      {row['kind']} ({held})", f"  title:     {row['title']}",
             f"  added:     {_when(row['added'])}"]
    if not rec["recorded"]:
        lines.append("  record:    none (added before the library kept provenance); `appliance kb verify` starts one")
    else:
        lines.append(f"  size:      {rec['size']:,} bytes" if rec.get("size") is not None else "  size:      unknown")
        if rec["sha256"]:
            lines.append(f"  sha256:    {rec['sha256']}")
            lines.append(f"             taken by {rec['hashed_by'] or '?'} on {_when(rec['hashed'])}")
        else:
            lines.append("  sha256:    unknown (never hashed: `appliance kb verify` takes it)")
        lines.append(f"  origin:    {_origin(rec['origin'])}")
        for name, entry in rec["facts"].items():
            lines.append(f"  {name + ':':<10} {entry['value']}   (from {entry['from']})")
        for name in rec["unknown"]:
            lines.append(f"  {name + ':':<10} unknown (the file does not say)")
        if rec.get("verified"):
            lines.append(f"  verified:  {_when(rec['verified'])}: {rec['verdict']}"
                         f"{' (' + rec['detail'] + ')' if rec.get('detail') else ''}")
    lines.append(f"  now:       {state.state}{' (' + state.detail + ')' if state.detail else ''}")
    for line in lines:
        click.echo(clean_line(line))
    if state.problem:
        click.echo(clean_line(f"  fix:       {state.fix}"))


def _when(stamp) -> str:
    if not stamp:
        return "unknown"
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def _origin(origin: dict) -> str:
    kind = origin.get("kind", "unknown")
    if kind == "url":
        entry = origin.get("catalog") or {}
        name = f" (catalog entry {entry.get('name')})" if entry.get("name") else ""
        return f"downloaded from {origin.get('url', '?')}{name}"
    if kind == "pack":
        return f"imported from the knowledge pack {origin.get('pack', '?')}"
    if kind == "folder":
        return f"copied from {origin.get('path', '?')} (`kb download --from`)"
    if kind == "path":
        adopted = f"; {origin['recorded']}" if origin.get("recorded") else ""
        return f"added from its path{adopted}"
    return "unknown"


@kb.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_verify(obj: Context, as_json: bool) -> None:
    """Re-hash every source in the library and compare it with its record.

    
    Names each file that changed since it was added, cannot be read, or is missing;
    a ZIM archive is also opened. Exit 3 (integrity) when any did. Searches only
    look at sizes and dates; this reads every byte (a progress bar for big files).
    Example:
      appliance kb verify
    """
    from appliance.cli.support import hash_progress

    knowledge = obj.services.kb
    update, bar = hash_progress("verifying the library's sources", obj.quiet)
    with bar:
        states = knowledge.verify_sources((lambda done, total, _name: update(done, total)) if update else None)
    if as_json:
        click.echo(dumps({"sources": [state.as_dict() for state in states],
                          "ok": not any(state.problem for state in states)}))
    else:
        for state in states:
            mark = "ok     " if not state.problem else state.state.upper().ljust(7)
            click.echo(clean_line(f"{mark} {state.path}{': ' + state.detail if state.detail else ''}"))
            if state.problem:
                click.echo(clean_line(f"        {state.fix}"))
        bad = [state for state in states if state.problem]
        click.echo(f"{len(states) - len(bad)} of {len(states)} sources verified" if states
                   else "the library has no sources")
    if any(state.problem for state in states):
        raise IntegrityError(f"{sum(state.problem for state in states)} source(s) do not match their record")


@kb.command("remove")
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_remove(obj: Context, paths: tuple[str, ...], as_json: bool) -> None:
    """Remove documents (or everything under a directory) from the library.

    \b
    The files themselves are not touched. An empty path, the root directory and your
    home directory are refused.
    Example:
      appliance kb remove ~/manuals/old-radio.pdf
    """
    from kb.knowledge_base import removal_target

    try:
        for path in paths:
            removal_target(path)  # validated at the edge, before anything is opened
    except KBUsageError as exc:
        raise click.UsageError(str(exc)) from None
    knowledge = obj.services.kb
    _vectors_sound(obj, knowledge)
    try:
        removed = {path: knowledge.remove(path) for path in paths}
    finally:
        _notices(obj, knowledge)
    if as_json:
        click.echo(dumps({"removed": [{"path": p, "chunks": n} for p, n in removed.items()]}))
    else:
        for path, count in removed.items():
            click.echo(clean_line(f"removed {path} ({count} chunks)"))


@kb.command("repair")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def kb_repair(obj: Context, as_json: bool) -> None:
    """Check the library and rebuild its vector index from its own store.

    \b
    No file is read again and nothing is embedded again: every passage's vector is
    kept next to its text. Use it after a full disk or a crash left the vector index
    damaged (kb commands also notice that and rebuild it themselves). Exit 3 when the
    library's own store (text.sqlite) is damaged.
    Example:
      appliance kb repair
    """
    knowledge = obj.services.kb
    update, bar = count_progress("rebuilding the vector index", obj.quiet)
    try:
        with bar:
            report = knowledge.repair(progress=update)
    except StoreDamaged as exc:
        raise IntegrityError(str(exc)) from None
    finally:
        _notices(obj, knowledge)
    if as_json:
        click.echo(dumps(report.as_dict()))
    else:
        was = f"it was damaged: {report.problem}" if report.problem else "nothing was wrong with it"
        click.echo(clean_line(f"vector index rebuilt: {report.vectors} passages in {report.seconds:.1f} s ({was})"))
        if report.replayed:
            click.echo(f"interrupted changes finished: {report.replayed}")
        if report.unrebuildable:
            click.echo(f"passages without a usable stored vector: {report.unrebuildable} (add their files again)")
        click.echo("check: ok" if report.ok else clean_line(f"check: FAILED {report.verify}"))
    if not report.ok:
        sys.exit(EXIT_FAILURE)


@kb.command("export")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def kb_export(obj: Context, folder: Path, as_json: bool) -> None:
    """Export the library as a knowledge pack: passages, their vectors and sources, hashed.

    \b
    FOLDER must not exist yet (or be empty). Another appliance imports the pack
    without reading or embedding the files again. Registered ZIM archives are not
    exported (copy the .zim file and `kb add` it there).
    Example:
      appliance kb export /media/usb/kb/manuals.kbpack
    """
    from kb.packs import export

    update, bar = count_progress("exporting documents", obj.quiet)
    try:
        with bar:
            report = export(obj.services.kb, folder, progress=update)
    except KBUsageError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(dumps(report.as_dict()))
        return
    click.echo(clean_line(f"exported {report.documents} documents, {report.chunks} passages to {folder}"))
    for path in report.not_exported:
        click.echo(clean_line(f"not exported (registered ZIM archive): {path}"))


@kb.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def kb_import(obj: Context, folder: Path, as_json: bool) -> None:
    """Import a knowledge pack made by `kb export` (nothing is embedded again).

    \b
    Every file of the pack is checked against its pack.json first; a damaged or
    truncated pack is refused (exit 3) before anything is written. Documents already
    in the library with the same content are skipped.
    Example:
      appliance kb import /media/usb/kb/manuals.kbpack
    """
    from kb.packs import PackDamaged, import_pack

    knowledge = obj.services.kb
    update, bar = count_progress("importing passages", obj.quiet)
    try:
        with bar:
            report = import_pack(knowledge, folder, progress=update)
    except PackDamaged as exc:
        raise IntegrityError(str(exc)) from None
    except KBUsageError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        _notices(obj, knowledge)
    if as_json:
        click.echo(dumps(report.as_dict()))
        return
    click.echo(clean_line(f"imported {report.documents} documents ({report.chunks} passages), "
                          f"{report.skipped} already there, {report.replaced} replaced, from {folder}"))


def _gb(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


@kb.command("catalog")
@click.option("--to", "target", type=click.Path(path_type=Path), help="Where the archives would go (for the free "
              "space; default: the data folder's archives/).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_catalog(obj: Context, target: Path | None, as_json: bool) -> None:
    """The survival starter set: Kiwix ZIM archives worth having, with sizes and what fits.

    \b
    First aid and medicine, water, food, post-disaster, repair, travel and maps. Each
    with its Kiwix name, publisher, language, license as published (and where that
    comes from), approximate size and what it is good for. Sizes are approximate (see
    the note); `kb download --dry-run NAME` shows the catalog's real length.
    Fetch them with `appliance kb download NAME...` (online), or from a folder
    (a USB stick) with `appliance kb download --from DIR NAME...`.
    Example:
      appliance kb catalog
    """
    from appliance.cli import archives as fetching
    from kb import archives

    shipped = archives.catalog()
    folder = target or obj.services.paths.archives
    free = fetching.free_bytes(folder)
    held = {Path(d["path"]).name for d in obj.services.kb.documents() if d["kind"] == "zim"}
    rows, left = [], free
    for entry in shipped.entries:
        here = next((name for name in sorted(held) if name.startswith(entry.name + "_")), None)
        fits = None if free is None or entry.approx_bytes is None else entry.approx_bytes <= free
        if here is None and left is not None and entry.approx_bytes is not None:
            left -= entry.approx_bytes
        rows.append(entry.as_dict() | {"fits_free_disk": fits, "in_library": here})
    total = sum(entry.approx_bytes or 0 for entry in shipped.entries)
    if as_json:
        click.echo(dumps({"entries": rows, "size_basis": shipped.size_basis, "hash_source": shipped.hash_source,
                          "method": shipped.method, "folder": str(folder), "free_bytes": free,
                          "approx_total_bytes": total, "all_fit": None if left is None else left >= 0}))
        return
    for row in rows:
        name = row["name"] + (f" ({row['flavour']})" if row["flavour"] else "")
        room = ("in the library" if row["in_library"] else "fits" if row["fits_free_disk"]
                else "unknown" if row["fits_free_disk"] is None else "does NOT fit")
        click.echo(clean_line(f"{row['topic']:<26} {name:<34} ~{_gb(row['approx_bytes']):>8}  {room}"))
        click.echo(clean_line(f"{'':27}{row['title']}: {row['good_for']}"))
        click.echo(clean_line(f"{'':27}published by {row['publisher']} ({row['creator']}), {row['language']}; "
                              f"license {row['license']['text']} ({row['license']['basis']})"))
    where = "free disk unknown" if free is None else f"{_gb(free)} free"
    click.echo(clean_line(f"the whole set: ~{_gb(total)}; {where} at {folder}"
                          + ("" if left is None else " (all fit)" if left >= 0 else " (not all fit)")))
    click.echo(clean_line(f"sizes: {shipped.size_basis}"))
    click.echo(clean_line(f"hashes: {shipped.hash_source}"))


@kb.command("download")
@click.argument("names", nargs=-1, required=True)
@click.option("--from", "source", type=click.Path(path_type=Path), help="Take the archives from this folder (a USB "
              "stick) instead of the network, with the same checks (the .sha256 or .meta4 beside each file).")
@click.option("--to", "target", type=click.Path(path_type=Path), help="Where to keep the archives (default: the data "
              "folder's archives/).")
@click.option("--dry-run", is_flag=True, help="Show what would be fetched and its size; fetch nothing but the feed.")
@click.option("--catalog", "catalog_url", help="The Kiwix OPDS catalog's base URL (default "
              "https://library.kiwix.org, or APPLIANCE_KIWIX_CATALOG).")
@click.option("--no-register", is_flag=True, help="Only fetch and check (e.g. onto a USB stick for another machine).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def kb_download(obj: Context, names: tuple[str, ...], source: Path | None, target: Path | None, dry_run: bool,
                catalog_url: str | None, no_register: bool, as_json: bool) -> None:
    """Fetch Kiwix ZIM archives, check their sha256, register them: online (the only other one).

    \b
    NAME is a Kiwix name (`appliance kb catalog` lists the starter set) or an archive's
    URL. The OPDS catalog says which file is current; the mirror's .sha256 (or .meta4)
    beside it is read before the file is fetched, and the file is checked against it
    before it is renamed into place: a mismatch deletes the partial file (exit 3).
    Resumable: run it again after a cut link. With --from DIR nothing goes online:
    each archive is taken from that folder, checked against the .sha256 / .meta4
    beside it there.
    Examples:
      appliance kb download zimgit-water_en wikipedia_en_medicine
      appliance kb download --dry-run ifixit_en_all
      appliance kb download --to /media/usb/archives --no-register zimgit-water_en
      appliance kb download --from /media/usb/archives zimgit-water_en
    """
    from appliance.cli import archives as fetching
    from appliance.cli.support import hash_progress

    folder = target or obj.services.paths.archives
    fetched: list[fetching.Fetched] = []
    if source is not None:
        if dry_run:
            found = [fetching.find_in_folder(source, name) for name in names]
            rows = [{"asked": n, "file": str(p), "length": p.stat().st_size} for n, p in zip(names, found, strict=True)]
            _dry_run(rows, folder, as_json)
            return
        for name in names:
            path = fetching.find_in_folder(source, name)
            update, bar = hash_progress(f"checking and copying {path.name}", obj.quiet)
            with bar:
                fetched.append(fetching.take_from_folder(path, folder, update))
    else:
        from appliance.system.online import online

        base = fetching.catalog_base(catalog_url)
        with online("appliance kb download: the catalog"):
            plans = fetching.plan(list(names), base)
        if dry_run:
            _dry_run([item.as_dict() for item in plans], folder, as_json)
            return
        free = fetching.free_bytes(folder)
        needed = sum(item.length or 0 for item in plans)
        if free is not None and needed > free:
            raise ApplianceError(f"the archives need {_gb(needed)}, {_gb(free)} free at {folder}; free some space "
                                 "or choose another folder with --to")
        for item in plans:
            update, bar = hash_progress(f"downloading {item.file}", obj.quiet)
            with bar:
                fetched.append(fetching.download(item, folder, update))
    report = None
    if not no_register:
        knowledge = obj.services.kb
        report = knowledge.add([f.path for f in fetched], origins={str(f.path): f.origin | {"sha256_checked": f.sha256}
                                                                   for f in fetched})
        _notices(obj, knowledge)
    if as_json:
        click.echo(dumps({"archives": [{"path": str(f.path), "sha256": f.sha256, "sha256_from": f.sha256_from,
                                        "already_there": f.reused, "origin": f.origin} for f in fetched],
                          "registered": report.as_dict() if report is not None else None}))
    else:
        for f in fetched:
            verb = "already there" if f.reused else "fetched"
            click.echo(clean_line(f"{verb} {f.path} ({_gb(f.path.stat().st_size)}): sha256 matches {f.sha256_from}"))
        if report is not None:
            click.echo(f"registered: {report.added} new, {report.replaced} replaced, {report.skipped} unchanged")
            for path, reason in report.failed:
                click.echo(clean_line(f"FAILED    {path}: {reason}"))
    if report is not None and report.failed:
        sys.exit(EXIT_FAILURE)


def _dry_run(rows: list[dict], folder: Path, as_json: bool) -> None:
    from appliance.cli import archives as fetching

    free = fetching.free_bytes(folder)
    total = sum(row.get("length") or 0 for row in rows)
    if as_json:
        click.echo(dumps({"would_fetch": rows, "total_bytes": total, "folder": str(folder), "free_bytes": free}))
        return
    for row in rows:
        click.echo(clean_line(f"would fetch {row['asked']}: {row['file']} ({_gb(row.get('length'))})"
                              + (f" from {row['url']}" if row.get("url") else "")))
    click.echo(clean_line(f"in all {_gb(total)} into {folder}"
                          + ("" if free is None else f" ({_gb(free)} free)")))
