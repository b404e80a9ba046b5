"""No degenerate output reaches the user: text that may be a repeat is held back, and a loop stops the answer.

Small models loop ("The answer is: The answer is: ..." until the token limit) or drift into another script (a run of
Cyrillic for an English question). `RepetitionGuard.feed(piece)` returns the text that is safe to show now:
  - from the moment three words in a row repeat words said before, the text is held back; if the repeat reaches a
    third occurrence of a word 8-gram or of a whole sentence it is a loop: the held text is dropped and `stopped`
    says why. If the text moves on instead, what was held is released (a phrase may come back once);
  - a short unit repeated back to back (no spaces needed: "-----", "的的的的") is held, and stopped as a loop;
  - letters in another script than the question's are held; 40 of them in a row stop the answer.
`finish()` releases what is still held (nothing, after a stop). `answer` is exactly the text that was shown.
"""

from __future__ import annotations

import re
import unicodedata

NGRAM = 8
HOLD_GRAM = 3
REPEATS = 3  # the third occurrence of an 8-gram or a sentence is a loop
DRIFT_LETTERS = 40
_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?。！？]+[\"')\]]*\s+|\n+")
_TAIL_REPEAT = re.compile(r"(.{1,40}?)\1{2,}$", re.S)
TAIL_LOOP_UNITS = 8


def tail_repeat(text: str, floor: int = 0, longest: int = 40) -> tuple[int, int, int] | None:
    """`_TAIL_REPEAT.search(text, floor)` as (start, unit length, end) or None, in time proportional to the repeat
    rather than ~400 x 40 regex trials (the guard runs it on every token). Three or more copies of one unit of
    1..`longest` characters ending the text (or just before a final newline, as `$` allows): the earliest start,
    there the shortest unit, and the longest such run."""
    ends = [len(text)] + ([len(text) - 1] if text.endswith("\n") else [])
    best: tuple[int, int, int] | None = None
    for unit in range(1, longest + 1):
        for end in ends:
            if (end - floor) // unit < 3:
                continue
            i = end - unit - 1
            while i >= floor and text[i] == text[i + unit]:
                i -= 1
            copies = (end - (i + 1)) // unit  # the periodic run before `end`, in whole units
            if copies < 3:
                continue
            start = end - copies * unit
            if best is None or start < best[0] or (start == best[0] and unit == best[1] and end > best[2]):
                best = (start, unit, end)
    return best
TAIL_LOOP_CHARS = 24


def script_of(text: str) -> str:
    """The dominant script of the letters in `text` ("LATIN", "CYRILLIC", "CJK", ...), or "" when none."""
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            name = unicodedata.name(char, "")
            script = "CJK" if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")) else name.split(" ")[0]
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=lambda script: counts[script]) if counts else ""


class RepetitionGuard:
    def __init__(self, question: str = ""):
        self.text = ""
        self.released = 0
        self.stopped = ""  # why the answer was stopped: "" while it runs
        self._holds: dict[str, int] = {}  # reason -> offset from which text is held back
        self._words: list[tuple[int, str]] = []  # (start offset, normalised word)
        self._scanned = 0
        self._grams: dict[tuple[str, ...], list[int]] = {}
        self._trigrams: set[tuple[str, ...]] = set()
        self._sentences: dict[str, list[int]] = {}
        self._sentence_start = 0
        self._script = script_of(question)
        self._foreign = 0

    # -- public --------------------------------------------------------------------------------------------
    def feed(self, piece: str) -> str:
        """Add a piece of the model's output; return the text that may be shown now."""
        if self.stopped or not piece:
            return ""
        self.text += piece
        for check in (self._scan_script, self._scan_words, self._scan_sentences, self._scan_tail):
            check(len(self.text) - len(piece))
            if self.stopped:
                return ""
        end = min(self._holds.values(), default=len(self.text))
        if self._words:  # the last words could be the start of a repeat: not yet (at most 60 characters)
            window = self._words[-(HOLD_GRAM - 1)][0] if len(self._words) >= HOLD_GRAM - 1 else self._words[0][0]
            end = min(end, max(window, len(self.text) - 60))
        out = self.text[self.released:end] if end > self.released else ""
        self.released = max(self.released, end)
        return out

    def finish(self) -> str:
        """The rest, once the model has stopped on its own (nothing after a loop)."""
        if self.stopped:
            return ""
        out = self.text[self.released:]
        self.released = len(self.text)
        return out

    @property
    def answer(self) -> str:
        """The answer as shown."""
        return self.text[: self.released]

    # -- checks --------------------------------------------------------------------------------------------
    def _hold(self, reason: str, offset: int) -> None:
        if reason not in self._holds:
            self._holds[reason] = max(offset, self.released)

    def _stop(self, why: str) -> None:
        self.stopped = why  # nothing held is shown: the answer ends at what was released

    def _scan_words(self, _start: int) -> None:
        if self.text[-1:].isspace():
            complete = len(self.text)
        else:  # the last word may still grow: only words followed by whitespace are scanned
            complete = max(self.text.rfind(c) for c in " \n\t")
        if complete <= self._scanned:
            return
        for match in _WORD.finditer(self.text, self._scanned, complete):
            self._words.append((match.start(), re.sub(r"\W+", "", match.group().lower()) or match.group()))
            self._scanned = match.end()
            if len(self._words) >= HOLD_GRAM:
                tri = tuple(word for _, word in self._words[-HOLD_GRAM:])
                if tri in self._trigrams:
                    self._hold("words", self._words[-HOLD_GRAM][0])
                else:
                    self._trigrams.add(tri)
                    self._holds.pop("words", None)  # it moved on: a phrase said twice, not a loop
            if len(self._words) >= NGRAM:
                gram = tuple(word for _, word in self._words[-NGRAM:])
                seen = self._grams.setdefault(gram, [])
                seen.append(self._words[-NGRAM][0])
                if len(seen) >= REPEATS:
                    self._stop("the model began repeating itself")
                    return

    def _scan_sentences(self, _start: int) -> None:
        for match in _SENTENCE_END.finditer(self.text, self._sentence_start):
            sentence = self.text[self._sentence_start:match.start()]
            key = " ".join(re.sub(r"\W+", " ", sentence.lower()).split())
            self._sentence_start = match.end()
            if len(key) < 3:
                continue
            seen = self._sentences.setdefault(key, [])
            seen.append(match.start())
            if len(seen) >= REPEATS:
                self._stop("the model began repeating itself")
                return

    def _scan_tail(self, _start: int) -> None:
        found = tail_repeat(self.text, max(0, len(self.text) - 400))
        if found is None:
            self._holds.pop("tail", None)
            return
        start, unit, end = found
        run = end - start
        if run < 6 or self.text[start:start + unit].isspace():
            return
        self._hold("tail", start + unit)
        if run >= TAIL_LOOP_CHARS and run // unit >= TAIL_LOOP_UNITS:
            self._stop("the model began repeating itself")

    def _scan_script(self, start: int) -> None:
        if not self._script:
            return
        for index in range(start, len(self.text)):
            char = self.text[index]
            if not char.isalpha():
                continue
            if script_of(char) != self._script:
                if self._foreign == 0:
                    self._hold("script", index)
                self._foreign += 1
                if self._foreign >= DRIFT_LETTERS:
                    self._stop("the model drifted into another language")
                    return
            elif self._foreign:
                self._foreign = 0
                self._holds.pop("script", None)
