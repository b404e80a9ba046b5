"""`appliance kb catalog` and `appliance kb download`: the survival starter set of Kiwix archives, fetched and
checked before the library uses them.

`kb download NAME...` is the second explicit online command (beside `models download`; appliance/system/netlock.py
ONLINE_COMMANDS). For each NAME (a Kiwix name of the shipped catalog, any other Kiwix name, or a URL), inside the
one online door (appliance/system/online.py):

1. the OPDS catalog (`<base>/catalog/v2/entries?name=NAME`, Atom XML; base from --catalog or
   APPLIANCE_KIWIX_CATALOG, default https://library.kiwix.org) says which file is current and its length;
2. the mirror's `<file>.sha256` beside it (else the sha-256 of its `.meta4` Metalink) is read: the hash the file
   must have, taken before a byte of the file is fetched; an archive with neither is not downloaded;
3. the file is appended to `<file>.partial` in the target folder (APPLIANCE_HOME/archives, or --to DIR) with HTTP
   Range, so a cut link resumes from what is on disk.

Offline again, the partial file is hashed: a mismatch deletes it and exits 3; a match is renamed into place, its
`.sha256` written beside it (so the folder can be carried to another machine and taken with --from), and the
archive is registered with its provenance (the URL, the catalog entry, where its hash came from). `--dry-run`
reads only the feed. `--from DIR` takes each archive from a folder (a USB stick) with the same checks against the
`.sha256` / `.meta4` beside it in that folder, and never touches the network (the lock stays on: netlock).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from appliance.errors import ApplianceError, IntegrityError, UsageError
from appliance.models.verify import copy_hashed
from kb import archives
from kb.archives import CatalogError, Entry, FeedEntry

DEFAULT_CATALOG = "https://library.kiwix.org"
CATALOG_ENV = "APPLIANCE_KIWIX_CATALOG"

Progress = Callable[[int, int], None]


def catalog_base(given: str | None) -> str:
    base = (given or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG).rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise UsageError(f"{base!r}: the catalog is an http(s) URL, e.g. {DEFAULT_CATALOG}")
    return base


@dataclass
class Plan:
    """One archive to fetch: what was asked, the shipped catalog's entry (if any), what the OPDS feed said."""

    asked: str
    entry: Entry | None
    feed: FeedEntry | None
    url: str
    length: int | None
    metalink: str = ""

    @property
    def file(self) -> str:
        return archives.file_name(self.url)

    def as_dict(self) -> dict:
        return {"asked": self.asked, "file": self.file, "url": self.url, "length": self.length,
                "sha256_from": [self.url + ".sha256"] + ([self.metalink] if self.metalink else []),
                "catalog_entry": self.feed.as_dict() if self.feed else None,
                "shipped_entry": self.entry.as_dict() if self.entry else None}


def plan(names: list[str], base: str) -> list[Plan]:
    """What each name stands for now. Runs inside online()."""
    from appliance.system import fetch

    shipped = archives.catalog()
    out = []
    for name in names:
        if urllib.parse.urlsplit(name).scheme in ("http", "https"):
            url, metalink = (name[: -len(".meta4")], name) if name.endswith(".meta4") else (name, "")
            try:
                archives.file_name(url)  # refused here when it names no .zim
            except CatalogError as exc:
                raise UsageError(str(exc)) from None
            out.append(Plan(name, None, None, url, None, metalink))
            continue
        entry = shipped.find(name)
        kiwix = entry.name if entry else name
        query = urllib.parse.urlencode({"name": kiwix, "count": "50"})
        feed_url = f"{base}/catalog/v2/entries?{query}"
        try:
            found = archives.parse_feed(fetch.read(feed_url, archives.MAX_FEED_BYTES), base)
        except CatalogError as exc:
            raise ApplianceError(f"{feed_url}: {exc}") from None
        chosen = archives.current(found, kiwix, entry.flavour if entry else "")
        if chosen is None:
            known = ", ".join(e.name for e in shipped.entries)
            raise UsageError(f"the catalog at {base} lists no archive named {kiwix!r} (the starter set: {known}; "
                             "`appliance kb catalog` lists them)")
        out.append(Plan(name, entry, chosen, chosen.url, chosen.length, chosen.metalink))
    return out


def published_sha256(item: Plan) -> tuple[str, str]:
    """(sha256, where it was read): the mirror's .sha256 beside the file, else its .meta4. Runs inside online()."""
    from appliance.system import fetch

    problems = []
    try:
        return archives.parse_sha256(fetch.read(item.url + ".sha256", archives.MAX_SIDECAR_BYTES), item.file), \
            item.url + ".sha256"
    except (ApplianceError, CatalogError) as exc:
        problems.append(str(exc))
    metalink = item.metalink or item.url + ".meta4"
    try:
        link = archives.parse_meta4(fetch.read(metalink, archives.MAX_SIDECAR_BYTES))
        if link.sha256:
            if item.length is None and link.size is not None:
                item.length = link.size
            return link.sha256, metalink
        problems.append(f"{metalink}: no sha-256 hash in it")
    except (ApplianceError, CatalogError) as exc:
        problems.append(str(exc))
    raise IntegrityError(f"{item.file}: the mirror publishes no sha256 to check it against ({'; '.join(problems)}); "
                         "not downloaded")


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest, done = hashlib.sha256(), 0
    total = path.stat().st_size
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


@dataclass
class Fetched:
    path: Path
    sha256: str
    sha256_from: str
    origin: dict
    reused: bool = False  # already in the target folder with the published hash


def _write_sidecar(path: Path, digest: str) -> None:
    try:
        (path.parent / (path.name + ".sha256")).write_text(f"{digest}  {path.name}\n")
    except OSError:
        pass  # a read-only target keeps the archive; only the carry-on file is missing


def download(item: Plan, target: Path, progress: Progress | None = None,
             hash_progress: Progress | None = None) -> Fetched:
    """Fetch one planned archive into `target`, checked against the mirror's sha256 before it is renamed into
    place. The network part runs inside online(); the check after it, offline."""
    from appliance.system import fetch
    from appliance.system.online import online

    target.mkdir(parents=True, exist_ok=True)
    dest = target / item.file
    partial = dest.with_name(dest.name + ".partial")
    with online("appliance kb download"):
        expected, hash_from = published_sha256(item)
        if not dest.exists():
            fetch.fetch(item.url, partial, item.length, progress)
    origin = {"kind": "url", "url": item.url, "sha256_from": hash_from,
              "catalog": item.feed.as_dict() if item.feed else None,
              "shipped_entry": item.entry.name if item.entry else None}
    if dest.exists():
        actual = sha256_of(dest, hash_progress)
        if actual != expected:
            raise IntegrityError(f"{dest} is already there but its sha256 {actual[:16]}... is not the mirror's "
                                 f"{expected[:16]}... ({hash_from}); move it aside and download again")
        _write_sidecar(dest, expected)
        return Fetched(dest, expected, hash_from, origin, reused=True)
    actual = sha256_of(partial, hash_progress)
    if actual != expected:
        size = partial.stat().st_size
        partial.unlink()
        raise IntegrityError(f"{item.file}: sha256 {actual[:16]}... of the {size} bytes received is not the "
                             f"{expected[:16]}... published in {hash_from}; the partial file was deleted, nothing "
                             "was registered")
    partial.replace(dest)
    _write_sidecar(dest, expected)
    return Fetched(dest, expected, hash_from, origin)


def find_in_folder(folder: Path, name: str) -> Path:
    """The archive in `folder` for `name`: that exact file name, or the newest `<kiwix name>_*.zim` (a catalog
    entry's name with its flavour first)."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    exact = folder / name
    if name.endswith(".zim") and exact.is_file():
        return exact
    entry = archives.catalog().find(name)
    stems = [f"{entry.name}_{entry.flavour}_", f"{entry.name}_"] if entry and entry.flavour else \
        [f"{entry.name if entry else name}_"]
    for stem in stems:
        found = sorted(p for p in folder.glob(f"{stem}*.zim") if p.is_file())
        if found:
            return found[-1]
    raise UsageError(f"{folder} holds no archive for {name!r} (looked for {', '.join(s + '*.zim' for s in stems)})")


def folder_sha256(path: Path) -> tuple[str, str]:
    """The sha256 published beside an archive in a folder: its .sha256, else its .meta4."""
    sidecar, metalink = path.with_name(path.name + ".sha256"), path.with_name(path.name + ".meta4")
    try:
        if sidecar.is_file():
            return archives.parse_sha256(sidecar.read_bytes()[: archives.MAX_SIDECAR_BYTES + 1], path.name), \
                str(sidecar)
        if metalink.is_file():
            link = archives.parse_meta4(metalink.read_bytes()[: archives.MAX_SIDECAR_BYTES + 1])
            if link.sha256:
                return link.sha256, str(metalink)
    except CatalogError as exc:
        raise IntegrityError(f"{path}: {exc}; not taken") from None
    raise IntegrityError(f"{path}: no {sidecar.name} or {metalink.name} beside it to check it against; not taken")


def take_from_folder(source: Path, target: Path, progress: Progress | None = None) -> Fetched:
    """Copy one archive from a folder into `target`, hashed while it is copied; a mismatch deletes the copy."""
    expected, hash_from = folder_sha256(source)
    target.mkdir(parents=True, exist_ok=True)
    dest = target / source.name
    origin = {"kind": "folder", "path": str(source), "sha256_from": hash_from}
    if dest.exists() and dest.resolve() == source.resolve():
        actual = sha256_of(dest, progress)
        if actual != expected:
            raise IntegrityError(f"{dest}: sha256 {actual[:16]}... is not the {expected[:16]}... of {hash_from}")
        return Fetched(dest, expected, hash_from, origin, reused=True)
    partial = dest.with_name(dest.name + ".partial")
    digest, done, total = hashlib.sha256(), 0, source.stat().st_size
    try:
        with source.open("rb") as src, partial.open("wb") as out:
            done = copy_hashed(src.read, out, digest, done, total, progress)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ApplianceError(f"cannot copy {source} to {target}: {exc.strerror or exc}") from None
    actual = digest.hexdigest()
    if actual != expected:
        partial.unlink()
        raise IntegrityError(f"{source}: sha256 {actual[:16]}... is not the {expected[:16]}... in {hash_from}; the "
                             "copy was deleted, nothing was registered")
    partial.replace(dest)
    _write_sidecar(dest, expected)
    return Fetched(dest, expected, hash_from, origin)


def free_bytes(path: Path) -> int | None:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None
