"""The field guide shipped in the box: first-day answers (safe water, bleeding, CPR ...) before anything is added.

It is package data (appliance/answering/guide/field-guide.md), pinned here by sha256 and size like the model packs
(appliance/models/packs.py), and registered in a library the first time the library is opened: the shipped bytes
are read once, checked against the pin, written to <kb>/shipped/field-guide.md and ingested from there like any
document (the ingest hashes that file again through its own descriptor; a stored sha256 other than the pin is
removed again). A stable path inside the library means an upgrade with a new guide replaces the old passages
instead of adding a second copy, and deleting the library folder takes the guide's state with it.

What happened is kept in the library's own metadata (key "field_guide"): the version and sha256 registered, or
that the owner removed it. A guide that was registered and is gone was removed by the owner (`kb remove` of its
path or `kb guide --remove`, the TUI's library screen): that is recorded and the guide is never added back, by this
version or a later one, until `appliance kb guide --restore`. The owner replaces it by removing it and adding their
own file.

Problems never stop a question: a guide that does not match its pin, a library busy with another ingest, a full
disk: the guide is left out, a notice says why, and the next opening tries again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from appliance.errors import IntegrityError

VERSION = "1.0"
DATE = "2026-12-03"
RESOURCE = "guide/field-guide.md"  # inside the appliance.answering package
SHA256 = "28d244805bbfc66217b21651e19ee630d7ac2e8a6cc03727f69bf96fc3ec70ee"
SIZE = 14_137
TITLE = "Field guide for the first days"
META_KEY = "field_guide"
FOLDER = "shipped"  # inside the library's directory
FILENAME = "field-guide.md"
# What its provenance record says (kb list --json notes, kb guide): written here, facts from the named sources.
PROVENANCE = ("written for the appliance (the sentences are the appliance's own); the facts come from the public "
              "sources each section names: WHO, CDC, the American, British and IFRC Red Cross first-aid guidance, "
              "US Army FM 21-76 (public domain)")

_HEADING = re.compile(r"^(#{2,3})\s+(.*?)\s*$")
_SOURCE = re.compile(r"^Source:\s*(.+?)\s*$")


@dataclass(frozen=True)
class Section:
    chapter: str  # the ## heading ("Safe water")
    title: str  # the ### heading ("Boiling water"); "" for a chapter without subsections
    source: str  # its "Source:" line
    text: str  # its paragraphs, "Source:" line excluded


def shipped_bytes() -> bytes:
    """The guide as shipped, checked against its pin (IntegrityError, exit 3, when it is not what was pinned)."""
    try:
        data = resources.files("appliance.answering").joinpath(RESOURCE).read_bytes()
    except OSError as exc:
        raise IntegrityError(f"the field guide shipped with the appliance cannot be read ({exc}); reinstall "
                             "the appliance") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != SIZE or digest != SHA256:
        raise IntegrityError(f"the field guide shipped with the appliance does not match its pin (sha256 "
                             f"{digest[:16]}..., {len(data)} bytes; pinned {SHA256[:16]}..., {SIZE}); reinstall "
                             "the appliance")
    return data


def sections(text: str | None = None) -> list[Section]:
    """The guide's sections in order, each with the source it names (the pinned bytes unless `text` is given)."""
    text = shipped_bytes().decode("utf-8") if text is None else text
    found: list[Section] = []
    chapter, title, source = "", "", ""
    lines: list[str] = []

    def close() -> None:
        if chapter and (title or lines):
            found.append(Section(chapter, title, source, " ".join(" ".join(lines).split())))

    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            close()
            if len(heading.group(1)) == 2:
                chapter, title = heading.group(2), ""
            else:
                title = heading.group(2)
            source, lines = "", []
            continue
        named = _SOURCE.match(line)
        if named:
            source = named.group(1).rstrip(".")
        elif line.strip():
            lines.append(line.strip())
    close()
    return found


def chapters() -> list[tuple[str, list[str]]]:
    """(chapter, the sources its sections name) in order: what `kb guide`, the TUI and the README list."""
    out: dict[str, list[str]] = {}
    for section in sections():
        if section.chapter == "About this guide":
            continue
        named = out.setdefault(section.chapter, [])
        if section.source and section.source not in named:
            named.append(section.source)
    return list(out.items())


def section_text(name: str) -> str | None:
    """A section of the shipped guide as text (headings, paragraphs, source), found by its title, case folded: a
    chapter ("Severe bleeding": all its sections) or one section ("Using a tourniquet"); None when there is none."""
    wanted = " ".join(name.split()).casefold()
    every = sections()
    chosen = ([s for s in every if s.title.casefold() == wanted]
              or [s for s in every if s.chapter.casefold() == wanted])
    if not chosen:
        return None
    parts = [chosen[0].chapter.upper()]
    for section in chosen:
        parts.append("\n".join(part for part in ("", section.title, section.text, f"Source: {section.source}")
                               if part or not section.title))
    return "\n".join(parts)


@dataclass
class GuideState:
    """What the library holds of the guide: registered (version, sha256), removed by the owner, or neither yet."""

    status: str  # "registered", "removed", "not registered"
    version: str = ""
    sha256: str = ""
    path: str = ""
    when: float | None = None
    problem: str = ""

    def as_dict(self) -> dict:
        return {"status": self.status, "version": self.version or None, "sha256": self.sha256 or None,
                "path": self.path or None, "when": self.when, "problem": self.problem or None,
                "shipped_version": VERSION, "shipped_date": DATE, "provenance": PROVENANCE}


class FieldGuide:
    """The shipped guide in one library (a kb.KnowledgeBase): registered on first use, removal kept."""

    def __init__(self, knowledge):
        self.kb = knowledge

    @property
    def path(self) -> Path:
        return Path(self.kb.directory) / FOLDER / FILENAME

    def _recorded(self) -> dict:
        try:
            value = json.loads(self.kb.meta(META_KEY) or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _record(self, **values) -> None:
        self.kb.set_meta(META_KEY, json.dumps(values | {"when": round(time.time(), 3)}))

    def _document(self) -> dict | None:
        return self.kb.document(str(self.path))

    def state(self) -> GuideState:
        recorded = self._recorded()
        if recorded.get("removed"):
            return GuideState("removed", str(recorded.get("version", "")), "", str(self.path), recorded.get("when"))
        document = self._document()
        if document is None:
            return GuideState("not registered", path=str(self.path))
        return GuideState("registered", str(recorded.get("version", "")), document["sha256"], str(self.path),
                          recorded.get("when"))

    def ensure(self) -> GuideState:
        """Register the shipped guide unless this library has it (this version) or its owner removed it. Never
        raises for what the owner cannot fix now: the state's `problem` says why the guide was left out."""
        from kb import KBError

        recorded = self._recorded()
        if recorded.get("removed"):
            return self.state()
        document = self._document()
        if document is not None and document["sha256"] == SHA256:
            if recorded.get("sha256") != SHA256:
                self._record(version=VERSION, sha256=SHA256)  # registered, but the record was not written
            return self.state()
        if document is None and recorded.get("sha256"):
            # It was registered here and is gone: the owner removed it (by its path). That sticks.
            self._record(removed=True, version=str(recorded.get("version", "")))
            return self.state()
        try:
            data = shipped_bytes()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            scratch = self.path.with_name(self.path.name + ".partial")
            scratch.write_bytes(data)
            scratch.replace(self.path)
            self.kb.add([self.path])
            stored = self._document()
            if stored is None or stored["sha256"] != SHA256:
                if stored is not None:
                    self.kb.remove(self.path)
                raise IntegrityError(f"the field guide's copy at {self.path} changed while it was added; left out")
            self._record(version=VERSION, sha256=SHA256)
        except (IntegrityError, KBError, OSError) as exc:
            problem = f"the field guide was not added to the library: {exc}"
            self.kb.add_notice(problem)
            state = self.state()
            state.problem = problem
            return state
        return self.state()

    def listing(self) -> dict:
        """What `kb list`, `kb guide` and the TUI show: state, version, provenance, chapters and their sources."""
        state = self.state()
        return state.as_dict() | {"path": str(self.path), "version": state.version or VERSION, "date": DATE,
                                  "sections": [{"title": title, "sources": named} for title, named in chapters()]}

    def remove(self) -> int:
        """The owner removes the guide: its passages go and the removal is recorded (it stays removed across
        upgrades). Returns how many passages went."""
        removed = self.kb.remove(self.path) if self._document() is not None else 0
        self._record(removed=True, version=str(self._recorded().get("version", VERSION)))
        return removed

    def restore(self) -> GuideState:
        """Undo a removal: the shipped guide (this version) is registered again."""
        self.kb.set_meta(META_KEY, "{}")
        return self.ensure()


def documents(knowledge) -> list[dict]:
    """The library's documents (kb.KnowledgeBase.documents), each with its `state` now (kb.provenance: ok,
    changed, unreadable, missing ...), the field guide's row with its `field_guide` listing (version, provenance,
    sections and sources): what `kb list` and the TUI's library screen show."""
    rows = knowledge.documents()
    guide = FieldGuide(knowledge)
    check = getattr(knowledge, "check_sources", None)  # each source's state now (kb.provenance): a stat each
    states = {state.path: state.as_dict() for state in check()} if check is not None else {}
    for row in rows:
        row["state"] = states.get(row["path"])
        if row["path"] == str(guide.path):
            row["field_guide"] = guide.listing()
    return rows
