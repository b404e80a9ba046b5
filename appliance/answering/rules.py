"""The owner's rules: checked before the model sees a question (and on the passages and the answer, if the owner
says so). The appliance ships with none; the owner writes them in APPLIANCE_HOME/rules.toml, by hand or with
`appliance rules add`:

    [[rule]]
    name = "no-weapons"
    action = "refuse"                  # refuse | warn | confirm (confirm: the question only)
    message = "Not on this appliance: ask the clinic's duty officer."
    words = ["pipe bomb", "explosive"] # words or phrases: whole words, case folded, any spacing between words
    patterns = ['make\\s+\\w+\\s+gun']   # regular expressions (the `regex` module, case-insensitive), time-limited
    similar = ["how do I build a weapon"]  # optional: close in meaning, by the knowledge base's embedder
    threshold = 0.8                    # cosine for `similar`
    places = ["question"]              # question | passages | answer

    pattern_timeout_ms = 50            # top level, optional: a pattern's time limit on one text

Actions: `refuse` stops the answer (the question is refused before retrieval and before the model is loaded; a
passage refuses the question before the model sees it; in the answer, the rest is withheld and generation stops);
`warn` lets it continue and says which rule matched; `confirm` asks the owner (TUI dialog, CLI prompt or
`--confirm`) before the question goes on. No text is ever added to an answer: the owner's message is shown apart.

A pattern that runs out of its time limit counts as a match (the owner's rule is kept, never silently skipped) and
says so. The embedder is loaded only when a rule with `similar` is checked.
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from appliance.errors import ApplianceError, UsageError
from appliance.paths import atomic_write_text

ACTIONS = ("refuse", "warn", "confirm")
PLACES = ("question", "passages", "answer")
DEFAULT_THRESHOLD = 0.8
DEFAULT_TIMEOUT_MS = 50
MAX_RULES = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SENTENCE_END = re.compile(r"[.!?\n][\"')\]]*\s")
# AnswerGate searches a new piece with this many characters before it (an end split across two pieces is still
# found). An end hidden behind more closing marks than this is merely found later; the text is checked all the
# same when it is released.
_SENTENCE_LOOKBACK = 16

Embed = Callable[[list[str]], Any]  # texts -> L2-normalised vectors (numpy array, one row per text)


@dataclass(frozen=True)
class Rule:
    name: str
    action: str
    message: str = ""
    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    similar: tuple[str, ...] = ()
    threshold: float = DEFAULT_THRESHOLD
    places: tuple[str, ...] = ("question",)

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise UsageError(f"rule name {self.name!r}: use letters, digits, '-', '_' or '.' (at most 64)")
        if self.action not in ACTIONS:
            raise UsageError(f"{where}: action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if not self.places or any(place not in PLACES for place in self.places):
            raise UsageError(f"{where}: places must be among {', '.join(PLACES)}, not {list(self.places)!r}")
        if self.action == "confirm" and set(self.places) != {"question"}:
            raise UsageError(f"{where}: confirm applies to the question only (a passage or an answer cannot wait "
                             "for a confirmation); use refuse or warn there")
        if not (self.words or self.patterns or self.similar):
            raise UsageError(f"{where}: give at least one of words, patterns or similar")
        for kind in ("words", "patterns", "similar"):
            values = getattr(self, kind)
            if any(not isinstance(v, str) or not v.strip() for v in values):
                raise UsageError(f"{where}: {kind} must be non-empty texts")
        if not isinstance(self.message, str):
            raise UsageError(f"{where}: message must be text")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0.0 < self.threshold <= 1.0:
            raise UsageError(f"{where}: threshold must be a number above 0 and at most 1, not {self.threshold!r}")
        for pattern in self.patterns:
            _compile_pattern(pattern, where)

    @classmethod
    def from_dict(cls, data: Any, where: str = "rule") -> "Rule":
        if not isinstance(data, dict):
            raise UsageError(f"{where} must be a table")
        known = {"name", "action", "message", "words", "patterns", "similar", "threshold", "places"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")

        def texts(key: str) -> tuple[str, ...]:
            value = data.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise UsageError(f"{where}: {key} must be a list of texts")
            return tuple(value)

        return cls(name=data.get("name", ""), action=data.get("action", ""), message=data.get("message", ""),
                   words=texts("words"), patterns=texts("patterns"), similar=texts("similar"),
                   threshold=data.get("threshold", DEFAULT_THRESHOLD), places=texts("places") or ("question",))

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "action": self.action}
        if self.message:
            data["message"] = self.message
        for key in ("words", "patterns", "similar"):
            if getattr(self, key):
                data[key] = list(getattr(self, key))
        if self.similar:
            data["threshold"] = self.threshold
        data["places"] = list(self.places)
        return data


@dataclass(frozen=True)
class Match:
    """One rule that matched, where, and why (the word, the pattern, the cosine)."""

    rule: str
    action: str
    place: str
    why: str
    message: str = ""
    where: str = ""  # a passage's citation, when the place is "passages"

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "action": self.action, "place": self.place, "why": self.why,
                "message": self.message or None, "where": self.where or None}

    def said(self) -> str:
        """The one line a user reads: which rule, the owner's message."""
        verb = {"refuse": "refused", "warn": "warning", "confirm": "needs a confirmation"}[self.action]
        text = f"{verb} by rule {self.rule!r}" if self.action != "warn" else f"rule {self.rule!r}"
        return f"{text}: {self.message}" if self.message else f"{text} ({self.why})"


@dataclass
class Decision:
    matches: list[Match] = field(default_factory=list)

    @property
    def refusal(self) -> Match | None:
        return next((m for m in self.matches if m.action == "refuse"), None)

    @property
    def confirmations(self) -> list[Match]:
        return [m for m in self.matches if m.action == "confirm"]

    @property
    def warnings(self) -> list[Match]:
        return [m for m in self.matches if m.action == "warn"]

    def extend(self, other: "Decision") -> None:
        self.matches.extend(other.matches)

    def as_list(self) -> list[dict[str, Any]]:
        return [m.as_dict() for m in self.matches]


def _compile_pattern(pattern: str, where: str):
    import regex

    try:
        return regex.compile(pattern, regex.IGNORECASE | regex.V0)
    except (regex.error, ValueError, OverflowError, RecursionError) as exc:
        raise UsageError(f"{where}: pattern {pattern!r} is not a valid regular expression ({exc})") from None


def _word_pattern(words: Iterable[str]) -> re.Pattern:
    """Whole words or phrases, case folded, any run of spaces between a phrase's words. Escaped literals only:
    nothing here can backtrack badly."""
    parts = sorted({r"\s+".join(re.escape(w) for w in word.casefold().split()) for word in words}, key=len,
                   reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)")


class _Compiled:
    def __init__(self, rule: Rule):
        self.rule = rule
        self.words = _word_pattern(rule.words) if rule.words else None
        self.patterns = [(p, _compile_pattern(p, f"rule {rule.name!r}")) for p in rule.patterns]
        self.vectors = None  # the `similar` phrases, embedded on first need


def _shorten(text: str, size: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 3] + "..."


class RuleBook:
    """The owner's rules, compiled once; `check(place, texts)` says which match, and why."""

    def __init__(self, rules: Sequence[Rule] = (), embed: Embed | None = None,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, path: Path | None = None):
        self.rules = list(rules)
        self.embed = embed
        self.timeout_ms = timeout_ms
        self.path = path
        self._compiled = [_Compiled(rule) for rule in self.rules]
        names = [rule.name for rule in self.rules]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise UsageError(f"two rules are named {duplicate!r}; names must be unique")

    @classmethod
    def load(cls, path: Path, embed: Embed | None = None) -> "RuleBook":
        """The rules in `path` (none when it does not exist). A broken file is one clear error: no question is
        answered while the owner's rules cannot be read."""
        data = read_file(path)
        timeout = data.get("pattern_timeout_ms", DEFAULT_TIMEOUT_MS)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 10_000:
            raise ApplianceError(f"{path}: pattern_timeout_ms must be a whole number from 1 to 10000")
        entries = data.get("rule", [])
        if not isinstance(entries, list) or len(entries) > MAX_RULES:
            raise ApplianceError(f"{path}: `rule` must be a list of [[rule]] tables (at most {MAX_RULES})")
        rules = []
        for number, entry in enumerate(entries, start=1):
            try:
                rules.append(Rule.from_dict(entry, f"rule {number}"
                                            + (f" ({entry.get('name')!r})" if isinstance(entry, dict) else "")))
            except UsageError as exc:
                raise ApplianceError(f"{path}: {exc}") from None
        try:
            return cls(rules, embed, timeout, path)
        except UsageError as exc:
            raise ApplianceError(f"{path}: {exc}") from None

    def __len__(self) -> int:
        return len(self.rules)

    def applies(self, place: str) -> bool:
        return any(place in rule.places for rule in self.rules)

    def check(self, place: str, texts: str | Sequence[str], where: Sequence[str] = ()) -> Decision:
        """Every rule for `place` that matches one of `texts` (its first reason; `where[i]` names text i)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        decision = Decision()
        compiled = [c for c in self._compiled if place in c.rule.places]
        if not compiled or not texts:
            return decision
        folded = [text.casefold() for text in texts]
        text_vectors = None
        for item in compiled:
            rule = item.rule
            for index, text in enumerate(texts):
                why = self._lexical(item, text, folded[index])
                if why is None and rule.similar:
                    if text_vectors is None:
                        text_vectors = self._embed(texts)
                    why = self._similar(item, text_vectors[index])
                if why is not None:
                    decision.matches.append(Match(rule.name, rule.action, place, why, rule.message,
                                                  where[index] if index < len(where) else ""))
                    break
        return decision

    def _lexical(self, item: _Compiled, text: str, folded: str) -> str | None:
        if item.words is not None:
            found = item.words.search(folded)
            if found:
                return f"word {_shorten(found.group(0))!r}"
        for source, pattern in item.patterns:
            started = time.perf_counter()
            try:
                found = pattern.search(text, timeout=self.timeout_ms / 1000)
            except TimeoutError:
                spent = (time.perf_counter() - started) * 1000
                return (f"pattern {_shorten(source)!r} ran out of its {self.timeout_ms} ms limit ({spent:.0f} ms; "
                        "counted as a match - simplify the pattern)")
            if found:
                return f"pattern {_shorten(source)!r} matched {_shorten(found.group(0))!r}"
        return None

    def _embed(self, texts: list[str]):
        if self.embed is None:
            raise ApplianceError("a rule with `similar` needs the knowledge base's embedder, which is not available")
        return self.embed(texts)

    def _similar(self, item: _Compiled, vector) -> str | None:
        if item.vectors is None:
            item.vectors = self._embed(list(item.rule.similar))
        scores = item.vectors @ vector
        best = int(scores.argmax())
        score = float(scores[best])
        if score >= item.rule.threshold:
            return f"similar to {_shorten(item.rule.similar[best])!r} (cosine {score:.2f} >= {item.rule.threshold:.2f})"
        return None

    def scores(self, text: str) -> list[tuple[str, str, float]]:
        """(rule, phrase, cosine) of every `similar` phrase against `text`: what `rules test` shows for the near
        misses too."""
        rows = []
        vector = None
        for item in self._compiled:
            if not item.rule.similar:
                continue
            if vector is None:
                vector = self._embed([text])[0]
            if item.vectors is None:
                item.vectors = self._embed(list(item.rule.similar))
            scores = zip(item.rule.similar, item.vectors @ vector, strict=True)
            rows += [(item.rule.name, phrase, float(score)) for phrase, score in scores]
        return rows


class RuleFile:
    """rules.toml as a callable for Conversation: the RuleBook, read again only when the file changed (the owner
    edits it while the TUI runs), so the `similar` phrases are embedded once per version of the file."""

    def __init__(self, path: Path, embed: Embed | None = None):
        self.path = path
        self.embed = embed
        self._cached: tuple[Any, RuleBook] | None = None

    def __call__(self) -> RuleBook:
        try:
            stat = self.path.stat()
            key: Any = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            key = None
        except OSError as exc:
            raise ApplianceError(f"rules file {self.path} cannot be read ({exc.strerror or exc})") from None
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, RuleBook.load(self.path, self.embed) if key is not None
                            else RuleBook([], self.embed, path=self.path))
        return self._cached[1]


def enforce(decision: Decision, confirmed: bool = False) -> None:
    """Raise for a refusal (RuleRefusal, exit 4), or for a confirmation not yet given (ConfirmationNeeded)."""
    from appliance.errors import ConfirmationNeeded, RuleRefusal

    if decision.refusal is not None:
        raise RuleRefusal(decision.refusal.said(), rule=decision.refusal.rule, decision=decision)
    if decision.confirmations and not confirmed:
        first = decision.confirmations[0]
        raise ConfirmationNeeded(first.said(), rule=first.rule, decision=decision)


class AnswerGate:
    """The answer released a sentence at a time, each sentence checked against the rules for the answer before it
    is shown; a refusal withholds the rest. Used only when a rule applies to the answer."""

    def __init__(self, book: RuleBook):
        self.book = book
        self.parts: list[str] = []  # the held text (not yet a whole sentence), in pieces: joined only at an end
        self.tail = ""  # its last _SENTENCE_LOOKBACK characters, where an end split across pieces begins
        self.released = ""
        self.decision = Decision()
        self.refusal: Match | None = None

    @property
    def held(self) -> str:
        return "".join(self.parts)

    def feed(self, piece: str) -> str:
        """Each piece is searched once, with the few characters before it: no piece's text is searched or copied
        again until a sentence ends (searching all the held text at every piece took 6.4 s for a run-on answer of
        32,000 pieces, growing with the square)."""
        if self.refusal is not None:
            return ""
        self.parts.append(piece)
        window = self.tail + piece
        if _SENTENCE_END.search(window) is None:
            self.tail = window[-_SENTENCE_LOOKBACK:]
            return ""
        held, out = self.held, ""
        while True:
            end = _SENTENCE_END.search(held)
            if end is None:
                break
            sentence, held = held[: end.end()], held[end.end():]
            if not self._allow(sentence):
                return out
            out += sentence
        self.parts, self.tail = [held], held[-_SENTENCE_LOOKBACK:]
        return out

    def finish(self) -> str:
        rest, self.parts, self.tail = self.held, [], ""
        if self.refusal is not None or not rest or not self._allow(rest):
            return ""
        return rest

    def _allow(self, sentence: str) -> bool:
        decision = self.book.check("answer", sentence) if sentence.strip() else Decision()
        known = {(m.rule, m.place) for m in self.decision.matches}
        self.decision.matches += [m for m in decision.matches if (m.rule, m.place) not in known]
        if decision.refusal is not None:
            self.refusal = decision.refusal
            self.parts, self.tail = [], ""
            return False
        self.released += sentence
        return True


# -- rules.toml ---------------------------------------------------------------------------------------------------
def read_file(path: Path) -> dict[str, Any]:
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ApplianceError(f"rules file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ApplianceError(f"rules file {path} cannot be read ({exc.strerror or exc})") from None


def add_rule(path: Path, rule: Rule) -> None:
    """Append a rule to rules.toml, keeping the rest of the file (the owner's comments) as it was."""
    import tomlkit

    book = RuleBook.load(path)  # the file as it is must be valid, and the name new
    if any(existing.name == rule.name for existing in book.rules):
        raise UsageError(f"there is already a rule named {rule.name!r}; remove it first or choose another name")
    text = path.read_text(encoding="utf-8") if path.exists() else (
        "# The owner's rules, checked before the model sees a question. See `appliance rules --help`.\n")
    document = tomlkit.parse(text)
    if "rule" not in document:
        document["rule"] = tomlkit.aot()
    table = tomlkit.table()
    for key, value in rule.as_dict().items():
        table[key] = value
    document["rule"].append(table)
    atomic_write_text(path, tomlkit.dumps(document))


def remove_rule(path: Path, name: str) -> None:
    import tomlkit

    book = RuleBook.load(path)
    if not any(rule.name == name for rule in book.rules):
        raise UsageError(f"no rule named {name!r}; see `appliance rules list`")
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    kept = [table for table in document["rule"] if table.get("name") != name]
    document["rule"].clear()
    for table in kept:
        document["rule"].append(table)
    if not kept:
        del document["rule"]
    atomic_write_text(path, tomlkit.dumps(document))
