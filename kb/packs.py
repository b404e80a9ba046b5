"""Knowledge packs: a knowledge base exported as a portable, hashed folder, imported elsewhere without re-embedding.

A pack is a folder of three files:

    pack.json        {"schema": "appliance.kb-pack", "version": 1, "dim": 384, "embedder": {model, tokenizer sha256},
                      "documents": N, "chunks": M, "files": {name: {"size", "sha256"}}}
    documents.jsonl  one line per document: path, title, kind, sha256, size, notes and its passages (heading, page,
                     text), in order
    vectors.f16      every passage's embedding, fp16, little-endian, M x dim, in the order of documents.jsonl

Import checks pack.json's sizes and hashes of the other two files, and that the pack was embedded with the same
embedder, before anything is written; then each document goes into the store through the same journaled steps as
an ingest (a kill -9 leaves the library consistent) and its vectors into the library's own vector index. Nothing
on the pack's medium is opened by chromadb: a chroma directory can name code to run (chroma#6717), a pack holds
only text and numbers. Registered ZIM archives are not exported (their content is the archive, not passages).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

import numpy as np

from kb import files, recovery
from kb.chunking import Chunk
from kb.embedder import DIM, sha256_of
from kb.errors import DiskFull, KBError, KBUsageError, VectorIndexError
from kb.store import from_db

if TYPE_CHECKING:
    from kb.lock import WriterLock
    from kb.store import Store
    from kb.vectors import Vectors

SCHEMA = "appliance.kb-pack"
VERSION = 1
MANIFEST = "pack.json"
DOCUMENTS = "documents.jsonl"
VECTORS = "vectors.f16"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_LINE_BYTES = 256 * 1024 * 1024  # one document's passages

Progress = Callable[[int, int], None]


class PackDamaged(KBError):
    """The pack's files do not match its pack.json (a flipped byte, a truncated copy) or pack.json is unreadable."""


@dataclass
class PackReport:
    documents: int = 0
    chunks: int = 0
    skipped: int = 0  # documents already in the library with the same content
    replaced: int = 0
    not_exported: list[str] = field(default_factory=list)  # registered ZIM archives
    pack: str = ""

    def as_dict(self) -> dict:
        return {"pack": self.pack, "documents": self.documents, "chunks": self.chunks, "skipped": self.skipped,
                "replaced": self.replaced, "not_exported": self.not_exported}


class PackLibrary(Protocol):
    """What export and import use of a library, and nothing more (KnowledgeBase provides it)."""

    directory: Path
    store: "Store"
    lock: "WriterLock"
    embedder_model: Path
    tokenizer: Path

    @property
    def vectors(self) -> "Vectors": ...
    def recover(self) -> int: ...
    def forget_vectors(self) -> None: ...


def _digest(path: Path, progress: Progress | None = None, total: int = 0, done: int = 0) -> tuple[str, int]:
    with open(path, "rb") as handle:
        return files.sha256(handle.read, (lambda size: progress(done + size, total)) if progress else None)


def embedder_files(knowledge: PackLibrary) -> dict[str, str]:
    return {"model": sha256_of(knowledge.embedder_model), "tokenizer": sha256_of(knowledge.tokenizer)}


def _doc_chunks(store, doc_id: int) -> list[tuple]:
    with store.lock:
        return store.db.execute("SELECT heading, page, text, vector FROM chunks WHERE doc_id=? ORDER BY ord",
                                (doc_id,)).fetchall()


def export(knowledge: PackLibrary, target: Path, progress: Progress | None = None) -> PackReport:
    """Write the library's documents, passages and vectors to a new pack folder `target` (must not exist)."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise KBUsageError(f"{target} already exists and is not an empty folder; name a new folder for the pack")
    store = knowledge.store
    rows = store.documents()
    report = PackReport(pack=os.fspath(target))
    scratch = target.with_name(target.name + ".partial")
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    try:
        with open(scratch / DOCUMENTS, "w", encoding="utf-8") as docs, open(scratch / VECTORS, "wb") as vecs:
            for index, row in enumerate(rows):
                if row.mode == "registered":
                    report.not_exported.append(row.path)
                    continue
                chunks = _doc_chunks(store, row.id)
                if any(len(c[3]) != DIM * 2 for c in chunks):
                    raise KBError(f"{row.path}: a passage has no usable stored vector; run `appliance kb repair` "
                                  "and add the file again before exporting")
                line = {"path": row.path, "title": row.title, "kind": row.kind, "sha256": row.sha256,
                        "size": row.size, "notes": row.notes,
                        "chunks": [{"heading": c[0], "page": c[1], "text": c[2]} for c in chunks]}
                rec = store.source(row.path)
                if rec is not None:  # read by an importer that knows it; others ignore the key
                    line["provenance"] = {"sha256": rec.sha256, "hashed_by": rec.hashed_by, "origin": rec.origin,
                                          "added": rec.added, "facts": rec.facts}
                docs.write(json.dumps(line, ensure_ascii=True) + "\n")
                for c in chunks:
                    vecs.write(np.frombuffer(c[3], dtype=np.float16).astype("<f2").tobytes())
                report.documents += 1
                report.chunks += len(chunks)
                if progress:
                    progress(index + 1, len(rows))
        files = {}
        for name in (DOCUMENTS, VECTORS):
            sha, size = _digest(scratch / name)
            files[name] = {"size": size, "sha256": sha}
        manifest = {"schema": SCHEMA, "version": VERSION, "dim": DIM, "embedder": embedder_files(knowledge),
                    "documents": report.documents, "chunks": report.chunks, "files": files}
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            target.rmdir()
        scratch.rename(target)
    except OSError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise KBError(f"cannot write the pack to {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return report


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise KBUsageError(f"{folder} is not a knowledge pack (no {MANIFEST})") from None
    except OSError as exc:
        raise PackDamaged(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        manifest = json.loads(data.decode("utf-8"))
        if manifest.get("schema") != SCHEMA:
            raise ValueError("not an appliance knowledge pack")
        if manifest.get("version") != VERSION:
            raise ValueError(f"pack version {manifest.get('version')!r}; this appliance reads version {VERSION}")
        if manifest.get("dim") != DIM:
            raise ValueError(f"vectors of dimension {manifest.get('dim')!r}, expected {DIM}")
        for name in (DOCUMENTS, VECTORS):
            entry = manifest["files"][name]
            if not isinstance(entry["size"], int) or not isinstance(entry["sha256"], str):
                raise ValueError(f"bad entry for {name}")
        if not isinstance(manifest.get("chunks"), int) or not isinstance(manifest.get("embedder"), dict):
            raise ValueError("missing counts or embedder")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as exc:
        raise PackDamaged(f"{path}: unreadable pack description ({str(exc)[:200]})") from None
    return manifest


def verify(folder: Path, progress: Progress | None = None) -> dict:
    """Check every file of the pack against pack.json (size, then sha256); returns the manifest. PackDamaged names
    the file that differs."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    total = sum(e["size"] for e in manifest["files"].values())
    done = 0
    for name in (DOCUMENTS, VECTORS):
        entry, path = manifest["files"][name], folder / name
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise PackDamaged(f"{path}: missing from the pack") from None
        if size != entry["size"]:
            raise PackDamaged(f"{path}: {size} bytes, pack.json says {entry['size']} (a truncated or altered copy)")
        sha, _ = _digest(path, progress, total, done)
        if sha != entry["sha256"]:
            raise PackDamaged(f"{path}: sha256 differs from pack.json (the file was altered or damaged)")
        done += size
    if manifest["files"][VECTORS]["size"] != manifest["chunks"] * DIM * 2:
        raise PackDamaged(f"{folder / VECTORS}: size does not match {manifest['chunks']} passages of {DIM} values")
    return manifest


def _documents(folder: Path) -> Iterator[dict]:
    with open(folder / DOCUMENTS, "rb") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES), b""), 1):
            try:
                line = json.loads(raw.decode("utf-8"))
                for key in ("path", "title", "kind", "sha256"):
                    if not isinstance(line[key], str):
                        raise ValueError(key)
                if not isinstance(line["size"], int) or not isinstance(line["chunks"], list):
                    raise ValueError("size/chunks")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
                raise PackDamaged(f"{folder / DOCUMENTS}: line {number} is not a document ({str(exc)[:100]})") from None
            yield line


def import_pack(knowledge: PackLibrary, folder: Path, progress: Progress | None = None) -> PackReport:
    """Add a pack's documents to the library (same path and content: skipped; same path, other content: replaced)."""
    folder = Path(folder)
    manifest = verify(folder)
    wanted = embedder_files(knowledge)
    if manifest["embedder"] != wanted:
        raise KBUsageError(f"{folder} was embedded with another embedder (model sha256 "
                           f"{str(manifest['embedder'].get('model', '?'))[:16]}...); this library uses "
                           f"{wanted['model'][:16]}...; export it again with this appliance's embedder")
    store = knowledge.store
    recorded = store.meta("embedder")
    if recorded is None:
        store.set_meta("embedder", json.dumps(wanted))
    elif json.loads(recorded) != wanted and store.counts()["chunks"]:
        raise KBUsageError("this knowledge base was built with another embedder; a pack cannot be added to it")
    report = PackReport(pack=os.fspath(folder))
    total = manifest["chunks"]
    with knowledge.lock.hold(wait=False, busy=f"another program is changing the library at {knowledge.directory}; "
                                                "wait for it to finish"):
        knowledge.recover()
        with open(folder / VECTORS, "rb") as vecs:
            done = 0
            for line in _documents(folder):
                count = len(line["chunks"])
                raw = vecs.read(count * DIM * 2)
                if len(raw) != count * DIM * 2 or done + count > total:
                    raise PackDamaged(f"{folder / VECTORS}: fewer vectors than {folder / DOCUMENTS} has passages")
                vectors = np.frombuffer(raw, dtype="<f2").reshape(count, DIM).astype(np.float32)
                done += count
                path = from_db(line["path"])
                existing = store.ready_document(path)
                if existing and existing.sha256 == line["sha256"] and existing.mode == "ingested":
                    report.skipped += 1
                    continue
                if not count:
                    continue
                chunks = [Chunk(heading=[c["heading"]] if c.get("heading") else [], text=str(c["text"]),
                                page=c.get("page") if isinstance(c.get("page"), int) else None)
                          for c in line["chunks"]]
                doc_id, ids = store.begin_document(path, line["title"], line["kind"], line["sha256"], line["size"],
                                                   chunks, vectors, notes=str(line.get("notes") or ""))
                knowledge.vectors.add(ids, vectors)
                ranges = store.finish_document(doc_id, existing, _pack_record(path, line, folder, manifest))
                if ranges:
                    try:
                        recovery.drop_vectors(store, knowledge.vectors, ranges)
                    except (DiskFull, VectorIndexError):
                        knowledge.forget_vectors()  # the journal keeps the ids; dropped at the next replay
                report.replaced += bool(existing)
                report.documents += 1
                report.chunks += count
                if progress:
                    progress(done, total)
            if done != total:
                raise PackDamaged(f"{folder / DOCUMENTS}: {done} passages, pack.json says {total}")
    return report


def _pack_record(path: str, line: dict, folder: Path, manifest: dict):
    """The provenance record of a document imported from a pack: the sha256 the exporting library recorded for
    the file (checked against pack.json's hashes of the pack's own files, not against the file, which is not
    here), the pack as its origin, and what the exporting library knew of where it came from."""
    from kb import provenance

    earlier: dict = line["provenance"] if isinstance(line.get("provenance"), dict) else {}
    facts: dict = earlier["facts"] if isinstance(earlier.get("facts"), dict) else {}
    facts = {str(k): v for k, v in facts.items()
             if isinstance(v, dict) and isinstance(v.get("value"), str) and isinstance(v.get("from"), str)}
    origin = {"kind": "pack", "pack": os.fspath(folder),
              "documents_sha256": manifest["files"][DOCUMENTS]["sha256"],
              "before": earlier.get("origin") if isinstance(earlier.get("origin"), dict) else None}
    return provenance.record(path, line["sha256"], line["size"], None, "the pack (as the exporting library "
                             "recorded it)", origin, facts)
