"""The library's own words: the sentences that best answer a question, and which claims of an answer they support.

Both work at sentence level over the passages retrieval found, with the knowledge base's embedder (cosine of
normalised MiniLM vectors) and a lexical signal (the share of the question's content words a sentence holds):
  - `Evidence.quotes(question, passages)`: the few sentences that best answer it (a sentence, or two adjacent
    ones), verbatim (each a substring of its stored chunk) and with its source, shown before the model's words;
  - `Evidence.claims(answer, passages)`: each sentence of the model's text, marked supported when a passage
    sentence says the same (by meaning or by words), with the passages that support it; the rest is marked
    "not found in your library".
Sentence vectors go through a `kb.vector_cache.VectorCache`, in memory and on disk (SQLite, bounded), so a passage's
sentences cost their embedding once: the claims reuse what the quotes embedded, and a passage seen before costs a
lookup (cost per answer: scripts/eval_answers prints the medians).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # vectors arrive as numpy arrays; this module only multiplies them, so it need not import numpy
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]

_SPLIT = re.compile(r"(?<=[.!?])[\"')\]*]*\s+(?=[\"'(\[*]?[A-Z0-9])|\n+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_CITE = re.compile(r"\s*\[\d{1,3}\]")
CITATION = re.compile(r"\[(\d{1,3})\]")  # a passage's number as the model types it, "[2]"
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he her
here hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or other
our out over own same she should so some such than that the their them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your yours yourself
get got make made use used one also may might must shall much many way ways thing things""".split())

MIN_WORDS, MAX_WORDS = 5, 70
QUOTE_FLOOR = 0.35  # combined score a unit needs to be quoted
# Weights measured with scripts/eval_answers --quote-only (pairs of sentences: 63% -> 77% on the project's own set).
# Quoting from 8 passages (conversation.QUOTE_PASSAGES), the unseen set's tuning half showed the key fact in 12 of 25
# quotes with 0.5 and no penalty for a passage's rank, 9 with these; kept, since without the penalty a setting in a
# lower passage outranks the one that answers (tests/answering/test_evidence.py, the sentence that says what to do).
LEXICAL_WEIGHT = 0.3
RANK_PENALTY = 0.05
PAIR_WORDS = 40
# A unit that names nothing to act on is quoted on to the next sentence of its passage that does (a command, option,
# setting, file name) within this many words, and takes the place of a quote it holds: the unseen set's tuning half
# showed the key fact in 9 of 25 quotes instead of 8 (--quote-only), the own set in 58 of 70 instead of 54.
# Measured and not taken: at most one quote per passage (11/25, but own set 42/70), or a passage already quoted
# counting 0.05-0.15 less (9-11/25, own 44-53/70).
CONTEXT_WORDS = 90
WRAP_WORDS = 6  # a line this long that stops mid-sentence was wrapped (see _wrapped)
# A sentence a person can act on (it names the setting, the command, the number) is worth more than one that only
# restates the topic: among units about as close to the question, it is quoted first.
ACTION_BONUS = 0.1  # a command, option, setting or file name (`code`, --flag, snake_case, name.ext)
NUMBER_BONUS = 0.05  # a number (a dose, a time, a size)
SUPPORT_COSINE = 0.72  # a claim this close in meaning to a passage sentence is supported
SUPPORT_OVERLAP = 0.7  # ... or one sharing this share of its content words


def _stem(word: str) -> str:
    word = word.lower().strip("'-")
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def content_terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text) if w.lower() not in STOPWORDS and len(w) > 1}


def _wrapped(text: str, previous: tuple[int, int], start: int) -> bool:
    """Whether the line break before `start` only wraps a sentence (a manual's prose cut at its line width, "...
    removing files that are not\\nunder version control ..."): the line before is prose of WRAP_WORDS words or
    more that does not end a sentence, the gap is one line break, and the next line goes on in lower case. A
    table's cells, a definition's term and a command line stay units of their own."""
    line = text[max(previous[0], text.rfind("\n", previous[0], previous[1]) + 1): previous[1]]
    return (text.count("\n", previous[1], start) == 1 and line[-1:] not in ".!?:;" and len(line.split()) >= WRAP_WORDS
            and (text[start].islower() or text[start] == "("))


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of `text`, whitespace trimmed; list items count as sentences, and a
    sentence wrapped over several lines is one."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in list(_SPLIT.finditer(text)) + [None]:
        end = match.start() if match else len(text)
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece.rstrip())
        if trail > lead:
            span = (start + lead, start + trail)
            if spans and _wrapped(text, spans[-1], span[0]):
                span = (spans.pop()[0], span[1])
            spans.append(span)
        if match:
            start = match.end()
    return spans


def folded(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Quote:
    source: Any  # kb.source.Source, numbered as in the prompt
    text: str  # verbatim from the passage
    score: float

    @property
    def line(self) -> str:
        """The quote as a person reads it: on one line, its whitespace folded (a sentence a manual wrapped over
        several lines, a table's command and its description)."""
        return folded(self.text)

    def as_dict(self) -> dict:
        return {"text": self.text, "number": self.source.number, "source": self.source.cite(),
                "score": round(self.score, 3)}


@dataclass
class Claim:
    text: str
    supported: bool
    sources: list[int]  # numbers of the passages that support it
    score: float
    missing: list[str] = field(default_factory=list)  # numbers, settings, commands no passage contains
    marked: list[int] = field(default_factory=list)  # the [n] the model typed after it

    @property
    def wrong_marks(self) -> list[int]:
        """The passages the model marked a supported sentence with that do not say it (another one does)."""
        return [n for n in self.marked if n not in self.sources] if self.supported else []

    @property
    def mark_note(self) -> str:
        """The sentence with its wrong marks and the passages that do say it, as the shells list it ("" when its
        marks are right)."""
        return mark_note(self.text, self.wrong_marks, self.sources)

    def as_dict(self) -> dict:
        return {"sentence": self.text, "supported": self.supported, "sources": self.sources,
                "score": round(self.score, 3), "missing": self.missing, "marked": self.marked,
                "wrong_marks": self.wrong_marks}


UNSUPPORTED_HEADING = "Not found in your library (check before acting on it):"
MARKS_HEADING = "Marked with a passage that does not say it:"


def mark_note(sentence: str, wrong: list[int], right: list[int]) -> str:
    if not wrong:
        return ""
    return (f"{sentence} (marked {', '.join(f'[{n}]' for n in wrong)}; "
            f"{', '.join(f'[{n}]' for n in right)} says it)")


# What a sentence can get exactly wrong while still reading like its passage: a number (with its unit or not), a
# setting, a command, an option, a file name. A claim naming one that no passage contains is not supported, however
# close its meaning: "boil it for 20 minutes" against "boil it for one minute" is the dangerous case.
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60",
                                                       "hundred": "100", "thousand": "1000", "half": "0.5",
                                                       "once": "1", "twice": "2"}
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
_CODE = re.compile(r"`([^`\n]{1,80})`|(?<![\w-])(--?[A-Za-z][\w-]*|[A-Za-z_][\w-]*(?:[._/=:][\w-]+)+|[a-z]+_[a-z_\d]+)")


def _value(number: str) -> str:
    """A number as compared: "2,000" = "2000", "1.50" = "1.5"."""
    number = number.replace(",", "")
    return number.rstrip("0").rstrip(".") if "." in number else number


_LIST_MARK = re.compile(r"^\s*(?:(?:step|item)\s+)?\d{1,2}[.):]\s+", re.I)  # "1. Boil ...", "Step 2: ..."


def _code_like(token: str) -> bool:
    """A dotted or slashed token is a name (postgresql.conf, os.path, /etc/hosts), not an abbreviation (e.g, U.S)."""
    parts = re.split(r"[._/=:]", token.strip("-"))
    return "_" in token or token.startswith("-") or all(len(part) >= 2 for part in parts if part)


def specifics(text: str) -> list[str]:
    """The exact things a sentence names: numbers and code-like tokens (`backticked`, --options, dotted.names,
    snake_case settings, paths), as written; a list item's own number is not one of them."""
    text = _LIST_MARK.sub("", text)
    out = [n for n in _NUMBER.findall(text)]
    for quoted, bare in _CODE.findall(text):
        if quoted or _code_like(bare):
            out.append(quoted or bare)
    return list(dict.fromkeys(item.strip() for item in out if item.strip()))


def action_bonus(text: str) -> float:
    """What a unit gains for naming something to act on (ACTION_BONUS, NUMBER_BONUS; the larger one)."""
    found = specifics(text)
    if any(not _NUMBER.fullmatch(item) for item in found):
        return ACTION_BONUS
    return NUMBER_BONUS if found else 0.0


class Known:
    """What the passages of one answer contain, read once: their text (case folded) and their numbers by value,
    number words included ("one" = "1")."""

    def __init__(self, passages_text: str):
        self.text = passages_text.lower()
        self.numbers = {_value(n) for n in _NUMBER.findall(passages_text)}
        self.numbers |= {_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", self.text) if w in _NUMBER_WORDS}

    def missing(self, claim: str) -> list[str]:
        """The specifics of `claim` that no passage contains."""
        return [item for item in specifics(claim)
                if (_value(item) not in self.numbers if _NUMBER.fullmatch(item) else item.lower() not in self.text)]


def missing_specifics(claim: str, passages_text: str) -> list[str]:
    """The specifics of `claim` that no passage contains (numbers compared by value, "one" = "1")."""
    return Known(passages_text).missing(claim)


@dataclass
class _Candidate:
    number: int
    source: Any
    text: str
    lexical: float
    rank: int
    sentences: int  # 1, or 2 for a sentence with the one after it
    passage: str = ""  # the whole text of the passage it is from (with_context reads on in it)


_ATTRIBUTION = re.compile(r"Sources?:\s", re.I)  # "Source: CDC, ..." says where a section is from, not what to do


def units(text: str, pair_words: int = PAIR_WORDS) -> list[tuple[str, int]]:
    """The quotable units of a passage: each sentence, and each sentence with the one after it when the two are
    short (a fact is often in the sentence after the one that names the topic). Verbatim substrings of `text`."""
    spans = [(start, end) for start, end in sentences(text) if not _ATTRIBUTION.match(text, start)]
    out = []
    for index, (start, end) in enumerate(spans):
        piece = text[start:end]
        if MIN_WORDS <= len(piece.split()) <= MAX_WORDS:
            out.append((piece, 1))
        if index + 1 < len(spans):
            pair = text[start:spans[index + 1][1]]
            if len(pair.split()) <= pair_words:
                out.append((pair, 2))
    return out


def with_context(passage: str, quote: str, limit: int | None = None) -> str:
    """`quote` and, when it names nothing to act on, the sentences after it in its passage up to the first that does
    (a command, option, setting or file name), within `limit` words: "... with following steps. Move the hard
    disk ..." goes on to the step that names the command. Still a verbatim substring of the passage; unchanged
    when no such sentence is near."""
    limit = CONTEXT_WORDS if limit is None else limit
    start = passage.find(quote)
    if start < 0 or action_bonus(quote) >= ACTION_BONUS:
        return quote
    end, words = start + len(quote), len(quote.split())
    for span_start, span_end in sentences(passage):
        if span_start < end:
            continue
        piece = passage[span_start:span_end]
        words += len(piece.split())
        if words > limit:
            break
        if action_bonus(piece) >= ACTION_BONUS:
            return passage[start:span_end]
    return quote


_LEADING_MARKS = re.compile(r"^(?:\s*\[\d{1,3}\])+")


def _marks(answer: str) -> dict[str, list[int]]:
    """Each sentence of `answer` (its [n] marks taken out) with the marks typed after it, in order. A mark that
    opens a span ("... one minute. [1] Then ...") closes the sentence before it."""
    out: dict[str, list[int]] = {}
    previous = None
    for start, end in sentences(answer):
        piece = answer[start:end]
        leading = _LEADING_MARKS.match(piece)
        if leading and previous is not None:
            out[previous] += [int(n) for n in CITATION.findall(leading.group())]
            piece = piece[leading.end():]
        text = _CITE.sub("", piece).strip()
        if not text:
            continue
        numbers = [int(n) for n in CITATION.findall(piece)]
        out[text] = out.get(text, []) + [n for n in numbers if n not in out.get(text, [])]
        previous = text
    return out


class Evidence:
    def __init__(self, embed: Embed):
        self.embed = embed  # texts -> normalised vectors (the knowledge base's embedder, with its cache)

    def _candidates(self, passages: Sequence[Any], sources: Sequence[Any], limit: int) -> list[_Candidate]:
        out = []
        for rank, (passage, source) in enumerate(zip(passages, sources, strict=False)):
            number = source.number if source.number is not None else rank + 1
            out += [_Candidate(number, source, text, 0.0, rank, count, passage.text)
                    for text, count in units(passage.text)]
        return out[:limit]

    def quotes(self, question: str, passages: Sequence[Any], sources: Sequence[Any], k: int = 3,
               limit: int = 200) -> list[Quote]:
        """The `k` non-overlapping units from the passages that best answer `question`, best first."""
        terms = content_terms(question)
        candidates = self._candidates(passages, sources, limit)
        if not candidates or not terms:
            return []
        vectors = self.embed([question] + [c.text for c in candidates])
        cosines = vectors[1:] @ vectors[0]
        scored = []
        for cos, candidate in zip(cosines, candidates, strict=True):
            candidate.lexical = len(terms & content_terms(candidate.text)) / len(terms)
            scored.append((float(cos) + LEXICAL_WEIGHT * candidate.lexical - RANK_PENALTY * candidate.rank
                           + action_bonus(candidate.text), candidate))
        scored.sort(key=lambda pair: pair[0], reverse=True)
        chosen: list[Quote] = []
        for score, candidate in scored:
            if score < QUOTE_FLOOR or len(chosen) >= k:
                break
            text = with_context(candidate.passage, candidate.text)
            if any(text in quote.text for quote in chosen):
                continue
            within = [n for n, quote in enumerate(chosen) if quote.text in text]
            if within:  # this one holds quotes already taken, with their context: it takes their place
                chosen[within[0]] = Quote(candidate.source, text, chosen[within[0]].score)
                chosen = [quote for n, quote in enumerate(chosen) if n not in within[1:]]
                continue
            chosen.append(Quote(candidate.source, text, score))
        return chosen

    def claims(self, answer: str, passages: Sequence[Any], sources: Sequence[Any]) -> list[Claim]:
        """Each sentence of `answer` with whether the passages support it."""
        marks = _marks(answer)
        texts = [text for text in marks if len(content_terms(text)) >= 2]
        candidates = [c for c in self._candidates(passages, sources, 200) if c.sentences == 1]
        if not texts:
            return []
        if not candidates:
            return [Claim(text, False, [], 0.0, marked=marks[text]) for text in texts]
        vectors = self.embed(texts + [c.text for c in candidates])
        claim_vectors, passage_vectors = vectors[: len(texts)], vectors[len(texts):]
        similarity = claim_vectors @ passage_vectors.T
        candidate_terms = [content_terms(c.text) for c in candidates]
        known = Known("\n".join(passage.text for passage in passages))
        result = []
        for index, text in enumerate(texts):
            terms = content_terms(text)
            overlaps = [len(terms & other) / len(terms) if terms else 0.0 for other in candidate_terms]
            rows = zip(candidates, similarity[index], overlaps, strict=True)
            supporting = sorted({c.number for c, cos, overlap in rows
                                 if cos >= SUPPORT_COSINE or overlap >= SUPPORT_OVERLAP})
            best = float(similarity[index].max())
            missing = known.missing(text)
            result.append(Claim(text, bool(supporting) and not missing, supporting if not missing else [], best,
                                missing, marks[text]))
        return result
