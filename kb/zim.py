"""Registered ZIM archives: searched through their own full-text index (libzim/Xapian), never embedded whole.

libzim's full-text query joins every word with AND and has no OR syntax, so a worried question ("my program
crashes, how do I catch it") rarely has all its words in one article. The candidate stage asks many small queries
instead (`rank_articles`): the question's words without stop words, each weighted by its rarity in the archive
(log of articles over the articles holding it, from libzim's own match estimate; a word in no article is dropped,
since it would empty every AND query it joins); each word alone, all of them, all but the rarest one or two, pairs
of the five rarest, then the archive's title suggestions. Every list votes for its articles by its words' weights
(rarity + COVERAGE each) over its rank + RANK_DAMPING; at most QUERIES queries are asked and ARTICLES articles
read. Their chunks are scored the same way by the words they hold, the best EMBED are embedded (the vectors kept
for later questions, in memory and on disk, both bounded: an article met in an earlier session costs no embedding)
and compete with the rest of the library by the same cosine and relevance floor.

A question in plain words that shares no word with its article never reaches that stage, so registration also
embeds every article's title and each of its section headings ("title > section", each with the first LEAD_WORDS
words of what it heads: `article_headings`, at most HEADINGS entries an archive) into the library's store
(kb.store, keyed by the archive's identity). At search the nearest HEADING_NEAREST of them (an exact scan of the
archive's matrix, loaded once per process) bring up to HEADING_ARTICLES more articles, and up to HEADING_EMBED of
the sections they name are embedded beside the EMBED above. Those sections carry a "heading" rank, no lexical
one: no boost, no lexical floor; the cosine decides.
An archive is identified by its UUID and size (hashing a 90 GB Wikipedia would take minutes): `identify`.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from kb.chunking import Chunk, chunk_document, embedding_text
from kb.document import Document, Section
from kb.errors import ReadError
from kb.files import open_regular
from kb.readers.zim import archive_title, article_sections, open_archive
from kb.search import Candidate, terms
from kb.vector_cache import VectorCache

# The work per question, whatever the archive's size (measured on scripts/eval_kb --zim, docs/knowledge-base.md).
WORDS = 8  # salient words kept from a question (the rarest)
QUERIES = 16  # libzim full-text queries per archive per question, word look-ups included
PER_QUERY = 6  # articles read from each query's result list
ARTICLES = 8  # articles read and chunked per archive per question
EMBED = 16  # chunks embedded per question across all archives (cached ones cost nothing)
EMBED_WORDS = 70  # words of each chunk embedded, heading path included (halves the cost; same recall)
PER_ARTICLE = 4  # of those, at most this many from one article while others have some
CACHE = 4096  # section vectors kept in memory between searches (384 floats each: about 6 MB)
DISK_CACHE = 50_000  # section vectors kept on disk across runs (784 bytes each: about 40 MB), when a folder is given
ARTICLE_CACHE = 64  # chunked articles kept between searches
RANK_DAMPING = 3  # a list's vote for its article at rank r: weight / (r + RANK_DAMPING)
COVERAGE = 1.0  # each word's vote and chunk score: its rarity plus this (how many words match counts too)
TITLE_WEIGHT = 0.5  # title suggestions vote as strongly as this share of the best article's votes
# Titles and section headings, embedded once at registration (kb.ingest): a second candidate source, by meaning.
HEADINGS = 200_000  # entries (titles, "title > section" paths) per archive; beyond, titles only (fp16: 150 MB)
HEADING_BYTES = 1 << 20  # of each article's HTML read for its headings at registration (the rest is not parsed)
LEAD_WORDS = 24  # of what each title or heading heads, embedded with it
HEADING_WORDS = 48  # words of an entry's text embedded at most (a heading path can be long), its lead included
HEADING_NEAREST = 16  # nearest entries looked at per archive per question
HEADING_ARTICLES = 4  # articles they bring in per archive per question, beside libzim's ARTICLES
HEADING_EMBED = 8  # chunks embedded per question for the nearest entries, beside EMBED
HEADING_CHUNKS = 2  # of them, at most this many from the start of one entry's section (nearest entries first)
HEADING_BLOCK = 16_384  # rows of a large heading matrix scanned at a time (fp16 -> float32 in blocks)
HEADING_FLOAT32 = 65_536  # up to this many entries the matrix is kept as float32 (at most 100 MB), scanned at once
USE_HEADINGS = True  # False: libzim's index alone (scripts/eval_kb --no-headings, for a before/after)


def heading_recipe() -> str:
    """How an archive's heading texts are made, kept with its set: a set made another way is made again."""
    return f"title+headings, {LEAD_WORDS} lead words, {HEADING_WORDS} words, {HEADINGS} entries, {HEADING_BYTES} bytes"


@dataclass
class ZimInfo:
    identity: str  # "zim:<uuid>:<size>", what the store keeps in place of a sha256
    size: int
    title: str
    articles: int
    fulltext: bool
    facts: dict = field(default_factory=dict)  # its own metadata (kb.provenance.zim_facts)


def identify(path: Path, handle: BinaryIO) -> ZimInfo:
    """Who this archive is (through the handle already opened as a regular file). Raises ReadError."""
    archive = open_archive(path, handle)
    if not archive.has_fulltext_index and not archive.has_title_index:
        raise ReadError("ZIM has neither a full-text nor a title index; add it with full ingest instead")
    from kb.provenance import zim_facts

    size = os.fstat(handle.fileno()).st_size
    return ZimInfo(identity=f"zim:{archive.uuid}:{size}", size=size, title=archive_title(archive, path),
                   articles=archive.article_count, fulltext=bool(archive.has_fulltext_index),
                   facts=zim_facts(archive))


@dataclass
class CandidateQueries:
    """The small libzim queries asked for one question in one archive, with their weights."""

    weights: dict[str, float] = field(default_factory=dict)  # salient word -> rarity (idf), question order
    every: dict[str, float] = field(default_factory=dict)  # every word found in the archive -> rarity
    found: dict[str, list[str]] = field(default_factory=dict)  # salient word -> its own top articles
    asked: int = 0

    @property
    def words(self) -> list[str]:
        return list(self.weights)


_NUMBER = re.compile(r"\d+(?:\.\d+)+")


def question_words(query: str) -> list[str]:
    """The question's words without stop words, in order; a dotted number (0.1, 3.11) stays one word, as
    Xapian indexes it."""
    numbers = _NUMBER.findall(query)
    words = terms(_NUMBER.sub(" ", query))
    return list(dict.fromkeys(numbers + words)) if numbers else words


def salient_words(searcher, words: list[str], total: int, budget: int) -> CandidateQueries:
    """Each word's rarity in the archive (a word in no article is dropped), the rarest WORDS kept."""
    from libzim.search import Query

    plan = CandidateQueries()
    for word in words[:WORDS * 2]:
        if plan.asked >= budget:
            break
        result = searcher.search(Query().set_query(word))
        plan.asked += 1
        matches = result.getEstimatedMatches()
        if matches <= 0:
            continue
        plan.weights[word] = math.log((total + 1) / (matches + 0.5))
        plan.found[word] = list(result.getResults(0, PER_QUERY))
    plan.every = dict(plan.weights)
    keep = set(sorted(plan.weights, key=lambda w: -plan.weights[w])[:WORDS])
    plan.weights = {word: weight for word, weight in plan.weights.items() if word in keep}  # question order
    plan.found = {word: plan.found[word] for word in plan.weights}
    return plan


def word_groups(words: list[str], weights: dict[str, float]) -> list[tuple[str, ...]]:
    """The AND queries to ask after each word alone, most telling first: all the words; all but the rarest one,
    then two (a rare word can be incidental: "convert OLD python 2 code"); pairs of the five rarest."""
    rarest = sorted(words, key=lambda w: -weights[w])
    groups: list[tuple[str, ...]] = []
    if len(words) > 2:
        groups.append(tuple(words))
    if len(words) > 3:
        groups += [tuple(w for w in words if w not in rarest[:n]) for n in (1, 2)]
    groups += [tuple(w for w in words if w in pair) for pair in combinations(rarest[:5], 2)]
    return list(dict.fromkeys(groups))


def rank_articles(archive, query: str, limit: int | None = None,
                  budget: int | None = None) -> tuple[list[str], dict[str, float]]:
    """The archive's articles most likely to answer `query`, best first, at most `limit` (at most `budget`
    full-text queries), and the question's salient words with their weights. Without a full-text index: the
    title index alone, every word weighing the same."""
    from libzim.suggestion import SuggestionSearcher

    limit = ARTICLES if limit is None else limit
    budget = QUERIES if budget is None else budget
    votes: dict[str, float] = {}

    def vote(articles: list[str], weight: float) -> None:
        for rank, article in enumerate(articles):
            votes[article] = votes.get(article, 0.0) + weight / (rank + RANK_DAMPING)

    words = question_words(query)
    if not words:
        return [], {}
    weights = {word: 1.0 for word in words}
    if archive.has_fulltext_index:
        from libzim.search import Query, Searcher

        searcher = Searcher(archive)
        plan = salient_words(searcher, words, max(archive.article_count, 1), budget)
        for word, found in plan.found.items():
            vote(found, plan.weights[word] + COVERAGE)
        # An AND query that matches is strong evidence: it votes with the sum of its words' weights.
        for group in word_groups(plan.words, plan.weights):
            if plan.asked >= budget:
                break
            plan.asked += 1
            found = list(searcher.search(Query().set_query(" ".join(group))).getResults(0, PER_QUERY))
            vote(found, sum(plan.weights[w] + COVERAGE for w in group))
        words = plan.words or words
        weights = plan.every or weights
    if archive.has_title_index and TITLE_WEIGHT:
        title_weight = max(votes.values(), default=1.0) * RANK_DAMPING * TITLE_WEIGHT
        suggester = SuggestionSearcher(archive)
        vote(list(suggester.suggest(" ".join(words)).getResults(0, 3)), title_weight)
    ordered = sorted(votes.items(), key=lambda item: -item[1])
    return [article for article, _ in ordered[:limit]], weights


def article_headings(archive, limit: int | None = None) -> Iterator[tuple[str, list[tuple[str, str]], bool]]:
    """(article path, its entries, whether its headings were read) for every HTML article in the archive's order,
    redirects skipped, at most `limit` entries in all. The entries are (section, text to embed): first ('', its
    title), then each distinct heading path below the title ("title > section > ..."), each text followed by the
    first LEAD_WORDS words of what it heads (a manual page's title says little, its first line says what it is).
    Every title is kept before any heading (the archive's article count is held back for them); once the headings
    have used the rest, later articles give their titles alone, and past `limit` titles nothing more. Each
    article's HTML is read up to HEADING_BYTES, by the library's HTML reader (its shape bounds:
    kb/readers/html_shape.py)."""
    limit = HEADINGS if limit is None else limit
    budget = max(limit - archive.article_count, 0)
    total = 0
    for index in range(archive.entry_count):
        if total >= limit:
            return
        try:
            entry = archive._get_entry_by_id(index)
            if entry.is_redirect or not entry.get_item().mimetype.startswith("text/html"):
                continue
        except Exception:  # noqa: BLE001 - one broken entry is skipped, the rest are read
            continue
        title = " ".join((entry.title or entry.path).split())
        entries = [("", title)]
        read = budget > 0
        if read:
            try:
                sections = article_sections(entry, limit=HEADING_BYTES)
            except Exception:  # noqa: BLE001 - an article that cannot be read keeps its title
                sections, read = [], False
            leads: dict[str, str] = {}
            for section in sections:
                path = _heading_path(section.heading)
                if path not in leads:
                    leads[path] = " ".join(" ".join(section.paragraphs).split()[:LEAD_WORDS])
            first = next((lead for lead in leads.values() if lead), "")
            entries = [("", _first_words(f"{title}\n{first}" if first else title, HEADING_WORDS))]
            headings = [(path, _first_words(f"{path}\n{lead}" if lead else path, HEADING_WORDS))
                        for path, lead in leads.items() if " > " in path]
            entries += headings[:budget]
            budget -= len(entries) - 1
        total += len(entries)
        yield entry.path, entries, read


def _heading_path(heading: list[str]) -> str:
    """A heading path as a heading entry names it ("title > section"), each heading's whitespace folded: the same
    text at registration (article_headings) and at search (_section_chunks)."""
    return " > ".join(" ".join(h.split()) for h in heading)


@dataclass
class Headings:
    """An archive's title and heading vectors, as the store keeps them (kb.store.Store.headings), for an exact
    scan: linear in its entries (at most HEADINGS). Up to HEADING_FLOAT32 entries the matrix is kept as float32
    and scanned in one product (fp16 -> float32 costs numpy more than the product); a larger one stays fp16 (half
    the memory) and is converted HEADING_BLOCK rows at a time."""

    articles: list[str]
    sections: list[str]  # '' for an article's title
    matrix: np.ndarray  # one row per entry (fp16 as stored; float32 up to HEADING_FLOAT32 rows)

    def __post_init__(self) -> None:
        if len(self.matrix) <= HEADING_FLOAT32:
            self.matrix = self.matrix.astype(np.float32)

    def nearest(self, vector: np.ndarray, n: int) -> list[tuple[str, str, float]]:
        """The n entries nearest to `vector`: (article, section, cosine), best first."""
        if not len(self.articles) or n <= 0:
            return []
        query = vector.astype(np.float32)
        if self.matrix.dtype == np.float32:
            scores = self.matrix @ query
        else:
            scores = np.empty(len(self.articles), dtype=np.float32)
            for start in range(0, len(self.articles), HEADING_BLOCK):
                block = self.matrix[start:start + HEADING_BLOCK].astype(np.float32)
                scores[start:start + HEADING_BLOCK] = block @ query
        n = min(n, len(scores))
        best = np.argpartition(-scores, n - 1)[:n]
        best = best[np.argsort(-scores[best])]
        return [(self.articles[i], self.sections[i], float(scores[i])) for i in best]


def chunk_score(text: str, weights: dict[str, float]) -> float:
    """How much of the question's rare vocabulary a chunk holds (a word counts once; its 5-letter stem)."""
    low = text.lower()
    return sum(weight + COVERAGE for word, weight in weights.items() if word[:5] in low)


class ZimShelf:
    """Open archives, kept open between searches (opening a large ZIM reads its directory), with the chunks of
    recently read articles and their vectors (bounded LRU caches: a follow-up question often reaches the same
    articles)."""

    def __init__(self, cache_dir: Path | None = None, store=None):
        # path -> (archive, the open handle its /proc/self/fd path names: libzim opens the title index through
        # that path later, on first use, so the descriptor must live as long as the archive)
        self._open: dict[str, tuple[object, ExitStack]] = {}
        self._lock = threading.Lock()
        self._cache_dir = cache_dir  # where section vectors are kept across runs (None: in memory only)
        self._vectors: VectorCache | None = None  # made at the first search, for that search's embedder
        self._articles: OrderedDict[tuple, tuple[str, list[Chunk]]] = OrderedDict()
        self._store = store  # kb.store.Store, which keeps each registered archive's heading vectors (None: none)
        self._headings: dict[str, tuple[tuple, Headings]] = {}  # path -> ((identity, entries), its headings)

    def headings(self, path: str) -> Headings | None:
        """The archive's title and heading vectors, loaded once and kept while its set is the same (two small
        look-ups a search); None when it has none (registered before they were made, or no store)."""
        if self._store is None:
            return None
        document = self._store.ready_document(path)
        found = self._store.heading_set(document.sha256) if document is not None else None
        if found is None or not found.entries:
            with self._lock:
                self._headings.pop(path, None)
            return None
        key = (found.identity, found.entries)
        with self._lock:
            cached = self._headings.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        loaded = Headings(*self._store.headings(found.identity))
        with self._lock:
            self._headings[path] = (key, loaded)
        return loaded

    def _section_vectors(self, embedder) -> VectorCache:
        """The section-vector cache for `embedder` (its file is named by the embedder model's hash)."""
        with self._lock:
            if self._vectors is None or self._vectors.embed != embedder.embed:
                path = None
                if self._cache_dir is not None:
                    try:
                        path = self._cache_dir / f"zim-sections-{embedder.files()['model'][:12]}.sqlite"
                    except OSError:  # the embedder's file cannot be read again: a cache in memory only
                        pass
                if self._vectors is not None:
                    self._vectors.close()
                self._vectors = VectorCache(embedder.embed, path, memory=CACHE, disk=DISK_CACHE)
            return self._vectors

    def archive(self, path: str):
        with self._lock:
            opened = self._open.get(path)
            if opened is None:
                stack = ExitStack()
                try:
                    handle = stack.enter_context(open_regular(Path(path)))
                    opened = (open_archive(Path(path), handle), stack)
                except BaseException:
                    stack.close()
                    raise
                self._open[path] = opened
            return opened[0]

    def forget(self, path: str) -> None:
        """A removed archive: closed, its articles dropped, and the section vectors too (they are keyed by text,
        not by archive, so all of them go; they cost one embedding each to make again)."""
        with self._lock:
            opened = self._open.pop(path, None)
            if opened is not None:
                opened[1].close()
            for key in [key for key in self._articles if key[0] == path]:
                del self._articles[key]
            self._headings.pop(path, None)
            vectors = self._vectors
        if vectors is not None:
            vectors.clear(disk=True)

    def close(self) -> None:
        """Close every archive's handle and the vector cache's file, and drop the caches in memory."""
        with self._lock:
            opened, self._open = list(self._open.values()), {}
            vectors, self._vectors = self._vectors, None
            self._articles.clear()
            self._headings.clear()
        if vectors is not None:
            vectors.close()
        for _, stack in opened:
            stack.close()

    def drop_caches(self, disk: bool = False) -> None:
        """Forget the chunked articles and the section vectors in memory, and with `disk` those kept on disk too
        (the archives stay open): what a new process, or with `disk` a first search, would find."""
        with self._lock:
            self._articles.clear()
            vectors = self._vectors
        if vectors is not None:
            vectors.clear(disk=disk)

    def cached(self) -> dict[str, int]:
        with self._lock:
            vectors = self._vectors
            articles = len(self._articles)
        return {"vectors": len(vectors) if vectors is not None else 0, "articles": articles}

    def article_paths(self, path: str, query: str, limit: int | None = None) -> list[str]:
        return rank_articles(self.archive(path), query, limit)[0]

    def article_chunks(self, zim: str, article: str) -> tuple[str, list[Chunk]]:
        """(title, chunks) of one article, read once and kept (bounded)."""
        key = (zim, article)
        with self._lock:
            cached = self._articles.get(key)
            if cached is not None:
                self._articles.move_to_end(key)
                return cached
        entry = self.archive(zim).get_entry_by_path(article)
        if entry.is_redirect:
            entry = entry.get_redirect_entry()
        title = entry.title or article
        chunks = chunk_document(Document(path=zim, title=title, kind="zim", sections=article_sections(entry)))
        with self._lock:
            self._articles[key] = (title, chunks)
            while len(self._articles) > ARTICLE_CACHE:
                self._articles.popitem(last=False)
        return title, chunks

    def article_text(self, zim: str, article: str) -> tuple[str, list[Section]]:
        """(title, sections) of one article as text (its HTML read by the library's reader: no script, no style,
        no markup), for a person to read the whole article a passage came from."""
        entry = self.archive(zim).get_entry_by_path(article)
        if entry.is_redirect:
            entry = entry.get_redirect_entry()
        return entry.title or article, article_sections(entry)

    def candidates(self, zims: list[str], query: str, query_vector: np.ndarray, embedder) -> list[Candidate]:
        """Sections of the articles libzim's index ranks best for `query`, and of those whose title or section
        heading is nearest to `query_vector` (the archive's heading vectors), each with its cosine to
        `query_vector`. A section found through its heading only has a "heading" rank, no lexical one: no boost,
        no lexical floor."""
        pool: list[tuple[float, int, Candidate, str]] = []
        nearest: list[tuple[float, int]] = []  # (cosine of the entry, index in pool) of the sections they name
        for zim in zims:
            try:
                archive = self.archive(zim)
                paths, weights = rank_articles(archive, query)
            except Exception:  # noqa: BLE001 - an archive that vanished (an unplugged drive) must not break the search
                continue  # an archive that vanished (an unplugged drive) must not break the search
            near = self._nearest_headings(zim, query_vector)
            extra: list[str] = []
            for article, _, _ in near:
                if article not in paths and article not in extra and len(extra) < HEADING_ARTICLES:
                    extra.append(article)
            named: dict[str, list[tuple[float, str]]] = {}
            for article, section, cosine in near:
                if article in paths or article in extra:
                    named.setdefault(article, []).append((cosine, section))
            for rank, article in enumerate(paths + extra):
                try:
                    title, chunks = self.article_chunks(zim, article)
                except Exception:  # noqa: BLE001 - one unreadable article must not break the search
                    continue
                first = len(pool)
                by_words = rank < len(paths)
                for n, chunk in enumerate(chunks):
                    score = chunk_score(title + " " + chunk.heading_text + " " + chunk.text, weights)
                    ranks = {"zim": rank} if by_words else {"heading": rank - len(paths)}
                    cand = Candidate((zim, article, n), zim, title, chunk.heading_text, None, chunk.text, "zim", 0.0,
                                     ranks)
                    embedded = _first_words(embedding_text(title, chunk), EMBED_WORDS)
                    pool.append((score if by_words else 0.0, rank, cand, embedded))
                for cosine, section in named.get(article, []):
                    for order, at in enumerate(_section_chunks(chunks, section)[:HEADING_CHUNKS]):
                        nearest.append((cosine - order, first + at))  # an entry's first chunks, then the next
        if not pool:
            return []
        chosen = _choose([item for item in pool if "zim" in item[2].ranks])
        taken = {id(item[2]) for item in chosen}
        added = 0
        for _, index in sorted(nearest, key=lambda item: -item[0]):  # the nearest entries' sections, HEADING_EMBED
            item = pool[index]
            if added >= HEADING_EMBED:
                break
            if id(item[2]) not in taken:
                chosen.append(item)
                taken.add(id(item[2]))
                added += 1
        vectors = self._section_vectors(embedder)([text for *_, text in chosen])
        out = []
        for (_, _, cand, _), vector in zip(chosen, vectors, strict=True):
            cand.cosine = float(vector @ query_vector)
            out.append(cand)
        # The lexical rank of a ZIM section: its article's rank, then its cosine within the article; a section
        # found through its heading alone: by its cosine.
        lexical = sorted((c for c in out if "zim" in c.ranks), key=lambda c: (c.ranks["zim"], -c.cosine))
        for rank, cand in enumerate(lexical):
            cand.ranks["zim"] = rank
        by_heading = sorted((c for c in out if "heading" in c.ranks), key=lambda c: -c.cosine)
        for rank, cand in enumerate(by_heading):
            cand.ranks["heading"] = rank
        return lexical + by_heading

    def _nearest_headings(self, zim: str, query_vector: np.ndarray) -> list[tuple[str, str, float]]:
        if not USE_HEADINGS or HEADING_NEAREST <= 0:
            return []
        try:
            found = self.headings(zim)
        except Exception:  # noqa: BLE001 - the store cannot be read now: libzim's index alone
            return []
        return found.nearest(query_vector, HEADING_NEAREST) if found is not None else []


def _section_chunks(chunks: list[Chunk], section: str) -> list[int]:
    """The chunks of the section a heading entry names, in order ('' names the article: from its first chunk)."""
    if not section:
        return list(range(len(chunks)))
    out = []
    for n, chunk in enumerate(chunks):
        text = _heading_path(chunk.heading)
        if text == section or text.startswith(section + " > "):
            out.append(n)
        elif out:
            break
    return out


def _first_words(text: str, limit: int) -> str:
    """The first `limit` words of `text` (split at spaces, as embedded): a ZIM section's heading path and opening
    (EMBED_WORDS: the embedder's cost grows with the length; a section's opening says what it is about), a heading
    entry's text (HEADING_WORDS)."""
    words = text.split(" ")
    return text if len(words) <= limit else " ".join(words[:limit])


def _choose(pool: list[tuple[float, int, Candidate, str]]) -> list[tuple[float, int, Candidate, str]]:
    """The EMBED chunks to embed: by rare words held, then article rank; at most PER_ARTICLE from one article
    while others still have some."""
    ordered = sorted(pool, key=lambda item: (-item[0], item[1]))
    chosen, overflow = [], []
    per: dict[str, int] = {}
    for item in ordered:
        key = item[2].key
        assert isinstance(key, tuple)  # a ZIM section's: (zim path, article path, n)
        article = key[1]
        if per.get(article, 0) >= PER_ARTICLE:
            overflow.append(item)
            continue
        per[article] = per.get(article, 0) + 1
        chosen.append(item)
        if len(chosen) >= EMBED:
            return chosen
    return chosen + overflow[:EMBED - len(chosen)]
