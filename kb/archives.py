"""Kiwix ZIM archives to fetch: the shipped catalog of a survival starter set (kb/catalog.json), and the offline
readers of what a Kiwix mirror publishes about an archive (its OPDS catalog feed, its .sha256 file, its .meta4
Metalink). Nothing here touches the network: appliance/cli/archives.py fetches the bytes, through the appliance's
one online door, and hands them here.

Words: an *archive* is a ZIM file (Kiwix's); the *catalog* is this list of archives worth having (and Kiwix's OPDS
catalog, which says which file is current); a *knowledge pack* is what `kb export` writes (kb.packs).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass
from importlib import resources
from urllib.parse import urlsplit

from kb.errors import KBError

MAX_FEED_BYTES = 4 * 1024 * 1024  # an OPDS answer for a few names; more is not a catalog
MAX_SIDECAR_BYTES = 1024 * 1024  # a .sha256 or .meta4
ATOM = "{http://www.w3.org/2005/Atom}"
METALINK = "{urn:ietf:params:xml:ns:metalink}"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.zim$")


class CatalogError(KBError):
    """What a mirror published cannot be read (a feed, a .sha256, a .meta4), or names no usable file."""


@dataclass(frozen=True)
class Entry:
    """One archive of the shipped catalog."""

    name: str  # the Kiwix name: the file name before its date ("wikipedia_en_medicine")
    flavour: str  # "maxi", "nopic", "mini" or "" (one flavour only)
    title: str
    topic: str
    good_for: str
    publisher: str
    creator: str
    language: str
    license: dict  # {"text", "basis"}: as published, and where that comes from
    approx_bytes: int | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Catalog:
    entries: tuple[Entry, ...]
    method: str
    size_basis: str
    hash_source: str

    def find(self, name: str) -> Entry | None:
        wanted = name.strip().lower()
        for entry in self.entries:
            if wanted in (entry.name.lower(), f"{entry.name}_{entry.flavour}".lower()):
                return entry
        return None


def catalog() -> Catalog:
    """The catalog shipped in the package (kb/catalog.json)."""
    data = json.loads(resources.files("kb").joinpath("catalog.json").read_text(encoding="utf-8"))
    entries = tuple(Entry(name=e["name"], flavour=e.get("flavour") or "", title=e["title"], topic=e["topic"],
                          good_for=e["good_for"], publisher=e["publisher"], creator=e["creator"],
                          language=e["language"], license=dict(e["license"]), approx_bytes=e.get("approx_bytes"))
                    for e in data["entries"])
    return Catalog(entries, data["method"], data["size_basis"], data["hash_source"])


@dataclass(frozen=True)
class FeedEntry:
    """One archive as Kiwix's OPDS catalog lists it: the current file of a name."""

    name: str
    flavour: str
    title: str
    publisher: str
    language: str
    updated: str
    url: str  # the archive itself (the acquisition link without .meta4)
    metalink: str  # its .meta4 ("" when the link is the file itself)
    length: int | None  # bytes, as the catalog announces them

    @property
    def file_name(self) -> str:
        return file_name(self.url)

    def as_dict(self) -> dict:
        return asdict(self) | {"file": self.file_name}


def file_name(url: str) -> str:
    """The archive's file name in a URL; refused unless it is a plain `*.zim` name (no path, no dots first)."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if not _SAFE_NAME.match(name):
        raise CatalogError(f"{url!r} does not name a .zim file this appliance will write")
    return name


def _text(element, tag: str) -> str:
    found = element.find(tag)
    return (found.text or "").strip() if found is not None and found.text else ""


def parse_feed(data: bytes, base: str = "") -> list[FeedEntry]:
    """The entries of an OPDS (Atom) answer from `/catalog/v2/entries`. Raises CatalogError."""
    if len(data) > MAX_FEED_BYTES:
        raise CatalogError(f"the catalog's answer is larger than {MAX_FEED_BYTES} bytes; not read")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise CatalogError(f"the catalog's answer is not an OPDS feed ({exc})") from None
    if root.tag != f"{ATOM}feed":
        raise CatalogError("the catalog's answer is not an Atom feed")
    out = []
    for entry in root.findall(f"{ATOM}entry"):
        href, length = "", None
        for link in entry.findall(f"{ATOM}link"):
            if link.get("rel", "").startswith("http://opds-spec.org/acquisition"):
                href = link.get("href", "")
                try:
                    length = int(link.get("length", ""))
                except ValueError:
                    length = None
                break
        if not href:
            continue
        if base and href.startswith("/"):
            parts = urlsplit(base)
            href = f"{parts.scheme}://{parts.netloc}{href}"
        url, metalink = (href[: -len(".meta4")], href) if href.endswith(".meta4") else (href, "")
        publisher = entry.find(f"{ATOM}publisher")
        out.append(FeedEntry(
            name=_text(entry, f"{ATOM}name"), flavour=_text(entry, f"{ATOM}flavour"),
            title=_text(entry, f"{ATOM}title"),
            publisher=_text(publisher, f"{ATOM}name") if publisher is not None else "",
            language=_text(entry, f"{ATOM}language"), updated=_text(entry, f"{ATOM}updated"), url=url,
            metalink=metalink, length=length))
    return out


def current(entries: list[FeedEntry], name: str, flavour: str = "") -> FeedEntry | None:
    """The newest entry of `name` (and `flavour`, when one is wanted and listed)."""
    named = [e for e in entries if e.name == name]
    if flavour and any(e.flavour == flavour for e in named):
        named = [e for e in named if e.flavour == flavour]
    return max(named, key=lambda e: e.updated) if named else None


def parse_sha256(data: bytes, name: str) -> str:
    """The hash of `name` in a .sha256 file (`<hex>  <name>` lines, or a bare hex). Raises CatalogError."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise CatalogError("the .sha256 file is too large to be one")
    lines = [line.split() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    for parts in lines:
        listed = parts[1].lstrip("*").rsplit("/", 1)[-1] if len(parts) > 1 else ""
        if _HEX64.match(parts[0]) and (listed in ("", name) or len(lines) == 1):
            return parts[0].lower()
    raise CatalogError(f"the .sha256 file holds no sha256 for {name}")


@dataclass(frozen=True)
class Metalink:
    name: str
    size: int | None
    sha256: str | None
    urls: tuple[str, ...]


def parse_meta4(data: bytes) -> Metalink:
    """The first file of a Metalink 4 (.meta4): its name, size, sha-256 hash, mirror URLs. Raises CatalogError."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise CatalogError("the .meta4 file is too large to be one")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise CatalogError(f"the .meta4 file is not a Metalink ({exc})") from None
    found = root.find(f"{METALINK}file")
    if found is None:
        raise CatalogError("the .meta4 file names no file")
    size_text = _text(found, f"{METALINK}size")
    sha = None
    for hashed in found.findall(f"{METALINK}hash"):
        if hashed.get("type", "").lower() == "sha-256" and _HEX64.match((hashed.text or "").strip()):
            sha = (hashed.text or "").strip().lower()
    urls = tuple((u.text or "").strip() for u in found.findall(f"{METALINK}url") if (u.text or "").strip())
    return Metalink(found.get("name", ""), int(size_text) if size_text.isdigit() else None, sha, urls)
