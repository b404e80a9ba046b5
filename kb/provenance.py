"""Where every source in the library came from, and whether it is still what was added.

Each document, folder file, ZIM archive or imported pack document has a record in the store (kb.store.SourceRow):
the sha256 of its bytes and how it was taken (by the ingest, at registration, by `kb verify`, from a pack, by a
download), its size and mtime when added, its origin (a path, a URL with its catalog entry, a pack), when it was
added, and what the file itself says (a ZIM's metadata, a PDF's document information, an EPUB's package metadata),
each fact with where it was read. What is not known is absent, never guessed: `STATED` lists the facts a reader
looks for, and `kb show` says "unknown" for each one missing.

`check` is the quick look every search, `kb list` and `doctor` take: a stat of the file. Same size and mtime as
recorded: unchanged (no byte is read). Another size: changed. The same size with another mtime (or no mtime on
record): re-hashed when the file is at most REHASH_MAX bytes, else said to be unverified until `kb verify`, which
re-hashes everything (`verify`). A file that is gone is missing; one that cannot be opened, unreadable. A ZIM is
also opened by libzim before it is searched (kb.knowledge_base), so a truncated or damaged archive is named,
never searched as if it were whole and never mistaken for a library that knows nothing.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kb.document import fact
from kb.errors import ReadError
from kb.files import open_regular, os_reason, sha256, shown
from kb.store import DocRow, SourceRow

REHASH_MAX = 256 * 1024 * 1024  # a file of the same size but a new mtime is re-hashed at once up to this size

# The facts a reader looks for, by kind; `kb show` names each one the file does not state as unknown.
STATED = {
    "zim": ("Title", "Name", "Creator", "Publisher", "Date", "Language", "License", "Source", "Description"),
    "pdf": ("Title", "Creator", "Date"),
    "epub": ("Title", "Creator", "Publisher", "Date", "Language", "License"),
}
# The facts a citation shows beside its path or article, in this order.
CITED = ("Title", "Publisher", "License")
# A ZIM's metadata entries read into its record (openZIM's metadata names).
ZIM_METADATA = ("Title", "Name", "Creator", "Publisher", "Date", "Language", "License", "Source", "Description",
                "Flavour", "Tags", "Scraper")

OK, CHANGED, UNREADABLE, MISSING, UNVERIFIED, KEPT = "ok", "changed", "unreadable", "missing", "unverified", "kept"
# A registered archive is read live: in any of these states it is not searched (its passages are what is on disk
# now, not what was registered). An ingested document's passages are the stored copy of the version added.
NOT_SEARCHED = (CHANGED, UNREADABLE, MISSING)
PROBLEMS = (CHANGED, UNREADABLE, MISSING, UNVERIFIED)


@dataclass
class SourceState:
    """What a check found for one source: its state, one line of detail, and the fix."""

    path: str  # as shown
    kind: str
    mode: str  # 'ingested' or 'registered'
    state: str  # ok, changed, unreadable, missing, unverified, kept (an ingested document whose file is not here:
    # imported from a pack, or gone from its path; its passages are the library's own copy)
    detail: str = ""

    @property
    def problem(self) -> bool:
        return self.state in PROBLEMS

    @property
    def searched(self) -> bool:
        """Whether search uses it: a registered archive only while it is whole; an ingested document's stored
        passages always (they are the version that was added; the notice says the file changed)."""
        return not (self.mode == "registered" and self.state in NOT_SEARCHED)

    @property
    def fix(self) -> str:
        if self.mode == "registered":
            if self.state == MISSING:
                return f"plug in the drive it is on, or `appliance kb remove {self.path}`"
            if self.state == UNVERIFIED:
                return "`appliance kb verify` re-hashes it"
            return (f"copy or download the archive again (`appliance kb download`, or `kb add {self.path}` for a "
                    "new version), or `appliance kb remove` it")
        if self.state == UNVERIFIED:
            return "`appliance kb verify` re-hashes it"
        return f"`appliance kb add {self.path}` reads it again, or `appliance kb remove` it"

    def line(self) -> str:
        """The notice naming it (for search, ask, list, doctor)."""
        what = "archive" if self.kind == "zim" else "source"
        said = {CHANGED: "has changed since it was added", UNREADABLE: "cannot be read", MISSING: "is missing",
                UNVERIFIED: "is unverified", KEPT: "is kept from a pack", OK: "is unchanged"}[self.state]
        use = ""
        if self.problem:
            use = ("; not searched" if not self.searched else
                   "; its passages are the version added" if self.mode == "ingested" else "; searched unverified")
        return f"{what} {self.path} {said} ({self.detail}){use}; {self.fix}"

    def as_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "state": self.state, "detail": self.detail,
                "searched": self.searched, "fix": self.fix if self.problem else ""}


def zim_facts(archive) -> dict[str, dict[str, str]]:
    """A ZIM's own metadata (openZIM names), each with where it was read; broken or absent entries are left out."""
    facts: dict[str, dict[str, str]] = {}
    try:
        keys = set(archive.metadata_keys)
    except Exception:  # noqa: BLE001 - no readable metadata: no facts
        return facts
    for name in ZIM_METADATA:
        if name not in keys:
            continue
        try:
            value = bytes(archive.get_metadata(name)).decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001 - one broken entry loses that fact only
            continue
        if value:
            facts[name] = fact(value, f"the ZIM's metadata (M/{name})")
    try:
        facts["UUID"] = fact(str(archive.uuid), "the ZIM's header")
    except Exception:  # noqa: BLE001
        pass
    return facts


def record(path: str, digest: str | None, size: int, mtime_ns: int | None, hashed_by: str,
           origin: dict | None, facts: dict, added: float | None = None) -> SourceRow:
    """A new provenance record; `origin` None: the path it was added from."""
    now = time.time()
    return SourceRow(path=path, sha256=digest, size=size, mtime_ns=mtime_ns, hashed=now if digest else None,
                     hashed_by=hashed_by if digest else "", origin=origin or {"kind": "path", "path": shown(path)},
                     added=added or now, facts=facts)


def _size(n: int | None) -> str:
    if n is None:
        return "an unknown size"
    return f"{n:,} bytes"


def _opens(row: DocRow) -> str:
    """For an archive whose bytes changed: whether libzim still opens it (said beside the change)."""
    if row.kind != "zim":
        return ""
    from kb.readers.zim import open_archive

    try:
        open_archive(Path(row.path))
    except ReadError as exc:
        return f"; {exc}"
    return ""


def check(row: DocRow, rec: SourceRow | None, rehash_max: int = REHASH_MAX,
          progress: Callable[[int], None] | None = None, full: bool = False) -> tuple[SourceState, SourceRow | None]:
    """The state of one source now, and the record to write back when it changed what is known (a new mtime for
    unchanged bytes, a first hash). `full`: re-hash whatever the size and mtime (`kb verify`)."""
    state = SourceState(shown(row.path), row.kind, row.mode, OK)
    origin = (rec.origin if rec else {}) or {}
    try:
        info = os.stat(row.path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            if origin.get("kind") == "pack":
                state.state, state.detail = KEPT, (f"imported from the knowledge pack {origin.get('pack', '?')}; "
                                                   "its passages are in the library, the file is not on this machine")
                return state, None
            if row.mode == "ingested":  # its passages, read and hashed when it was added, are the library's own
                state.state, state.detail = KEPT, ("the file is no longer at its path (an unplugged drive?); its "
                                                   "passages, hashed when it was added, are in the library")
                return state, None
            state.state, state.detail = MISSING, "no file at its path any more"
        else:
            state.state, state.detail = UNREADABLE, os_reason(exc)
        return state, None
    except ValueError:
        state.state, state.detail = UNREADABLE, "the name holds a NUL character"
        return state, None
    if not stat.S_ISREG(info.st_mode):
        state.state, state.detail = UNREADABLE, "not a regular file any more"
        return state, None
    size = rec.size if rec and rec.size is not None else row.size
    known = rec.sha256 if rec else (None if row.sha256.startswith("zim:") else row.sha256)
    if size is not None and info.st_size != size:
        state.state = CHANGED
        state.detail = f"{_size(info.st_size)} now, {_size(size)} when it was added{_opens(row)}"
        return state, None
    same_time = rec is not None and rec.mtime_ns is not None and rec.mtime_ns == info.st_mtime_ns
    if same_time and not full:
        return state, None
    if not full and info.st_size > rehash_max:
        state.state = UNVERIFIED
        state.detail = ("no sha256 on record (registered before the library kept one)" if known is None else
                        "modified since it was added (the same size, a new date); not re-hashed now")
        return state, None
    try:
        with open_regular(row.path) as handle:
            digest, _ = sha256(handle.read, progress)
            now = os.fstat(handle.fileno())
    except ReadError as exc:
        state.state, state.detail = UNREADABLE, str(exc)
        return state, None
    except OSError as exc:
        state.state, state.detail = UNREADABLE, os_reason(exc)
        return state, None
    if known is not None and digest != known:
        state.state = CHANGED
        state.detail = f"its sha256 is {digest[:16]}... now, {known[:16]}... when it was added{_opens(row)}"
        return state, None
    base = rec or record(row.path, None, row.size, None, "", None, {}, added=row.added)
    updated = SourceRow(**{**base.__dict__, "mtime_ns": now.st_mtime_ns, "size": now.st_size})
    if known is None:
        updated.sha256, updated.hashed = digest, time.time()
        updated.hashed_by = "kb verify" if full else "a check"
        state.detail = "sha256 taken now (none was on record)"
    if row.kind == "zim":
        opened = _opens(row)
        if opened:
            state.state, state.detail = UNREADABLE, opened.lstrip("; ")
            return state, None
        if not updated.facts:  # registered before its metadata was kept: read it now
            updated.facts = _archive_facts(row)
    return state, updated


def _archive_facts(row: DocRow) -> dict:
    from kb.readers.zim import open_archive

    try:
        return zim_facts(open_archive(Path(row.path)))
    except ReadError:
        return {}
