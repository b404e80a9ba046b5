"""Registered ZIM archives: searched through their own full-text index (libzim/Xapian), never embedded whole.

A query asks each archive's index for its top articles, splits them into sections and chunks, keeps the chunks
that share the most words with the query, and embeds only those to rerank them with the rest of the library.
An archive is identified by its UUID and size (hashing a 90 GB Wikipedia would take minutes): `identify`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from kb.chunking import chunk_document, embedding_text
from kb.document import Document
from kb.errors import ReadError
from kb.readers.zim import archive_title, article_sections, open_archive
from kb.search import Candidate, terms

ARTICLES = 5  # top articles asked from each archive's own index
EMBED = 12  # chunks embedded per query across all archives (each costs ~30 ms on 2 cores)
CACHE = 4096  # section vectors kept between searches


@dataclass
class ZimInfo:
    identity: str  # "zim:<uuid>:<size>", what the store keeps in place of a sha256
    size: int
    title: str
    articles: int
    fulltext: bool


def identify(path: Path, handle: BinaryIO) -> ZimInfo:
    """Who this archive is (through the handle already opened as a regular file). Raises ReadError."""
    archive = open_archive(path, handle)
    if not archive.has_fulltext_index and not archive.has_title_index:
        raise ReadError("ZIM has neither a full-text nor a title index; add it with full ingest instead")
    size = os.fstat(handle.fileno()).st_size
    return ZimInfo(identity=f"zim:{archive.uuid}:{size}", size=size, title=archive_title(archive, path),
                   articles=archive.article_count, fulltext=bool(archive.has_fulltext_index))


class ZimShelf:
    """Open archives, kept open between searches (opening a large ZIM reads its directory)."""

    def __init__(self):
        self._open: dict[str, object] = {}
        self._lock = threading.Lock()
        # Section vectors already computed (a follow-up question often reaches the same articles).
        self._vectors: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def archive(self, path: str):
        with self._lock:
            archive = self._open.get(path)
            if archive is None:
                archive = open_archive(Path(path))
                self._open[path] = archive
            return archive

    def forget(self, path: str) -> None:
        with self._lock:
            self._open.pop(path, None)
            for key in [key for key in self._vectors if key[0] == path]:
                del self._vectors[key]

    def article_paths(self, path: str, query: str, limit: int = ARTICLES) -> list[str]:
        archive = self.archive(path)
        words = terms(query)
        if not words:
            return []
        if archive.has_fulltext_index:
            from libzim.search import Query, Searcher

            # libzim's parser joins words with AND: a stressed question ("how much bleach per liter of water")
            # rarely has every word in one article. Ask with all the words, then one fewer, then each alone,
            # until enough articles are found; stricter matches rank first.
            searcher = Searcher(archive)
            words = words[:8]
            queries = [words] + [[w for w in words if w != left] for left in words if len(words) > 2]
            queries += [[w] for w in words] if len(words) > 1 else []
            found: list[str] = []
            for query_words in queries:
                for article in searcher.search(Query().set_query(" ".join(query_words))).getResults(0, limit):
                    if article not in found:
                        found.append(article)
                if len(found) >= limit:
                    break
            return found[:limit]
        from libzim.suggestion import SuggestionSearcher

        results = SuggestionSearcher(archive).suggest(" ".join(words))
        return list(results.getResults(0, limit))

    def candidates(self, zims: list[str], query: str, query_vector: np.ndarray, embed) -> list[Candidate]:
        words = terms(query)
        pool: list[tuple[float, int, Candidate, str]] = []
        for zim in zims:
            try:
                paths = self.article_paths(zim, query)
                archive = self.archive(zim)
            except Exception:
                continue  # an archive that vanished (an unplugged drive) must not break the search
            for rank, article in enumerate(paths):
                try:
                    entry = archive.get_entry_by_path(article)
                    if entry.is_redirect:
                        entry = entry.get_redirect_entry()
                    sections = article_sections(entry)
                except Exception:
                    continue
                title = entry.title or article
                document = Document(path=zim, title=title, kind="zim", sections=sections)
                for n, chunk in enumerate(chunk_document(document)):
                    low = (chunk.heading_text + " " + chunk.text).lower()
                    overlap = sum(1 for w in words if w[:5] in low)
                    cand = Candidate((zim, article, n), zim, title, chunk.heading_text, None, chunk.text, "zim", 0.0,
                                     {"zim": rank})
                    pool.append((overlap, -rank, cand, embedding_text(title, chunk)))
        if not pool:
            return []
        pool.sort(key=lambda item: (item[0], item[1]), reverse=True)
        chosen = pool[:EMBED]
        missing = [item for item in chosen if item[2].key not in self._vectors]
        if missing:
            for item, vector in zip(missing, embed([text for *_, text in missing])):
                self._vectors[item[2].key] = vector
        with self._lock:
            vectors = [self._vectors[item[2].key] for item in chosen]
            for item in chosen:
                self._vectors.move_to_end(item[2].key)
            while len(self._vectors) > CACHE:
                self._vectors.popitem(last=False)
        out = []
        for (overlap, _, cand, _), vector in zip(chosen, vectors):
            cand.cosine = float(vector @ query_vector)
            out.append(cand)
        # The lexical rank of a ZIM section: its article's rank, then its word overlap within the article.
        out.sort(key=lambda c: (c.ranks["zim"], -c.cosine))
        for rank, cand in enumerate(out):
            cand.ranks["zim"] = rank
        return out
