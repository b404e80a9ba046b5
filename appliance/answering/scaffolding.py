"""The prompt's scaffolding kept out of the answer, wherever the model copies it.

The passages reach the model headed "Passage N (where)" (conversation._block). A small model copies those headers:
at the start of its answer, in the middle ("... [Passage 2 (Water > Boiling)] ..."), or as a fragment cut off by
max_tokens; it also opens an answer with a stray "]". None of that may reach a person, in the CLI, the TUI or --json,
so the answer's tokens pass through `ScaffoldFilter` as they stream:
  - a header copied at the start of a line ("Passage 1 (Water > Boiling):", "[Passage 3]") is removed;
  - one inside a sentence becomes what it means, a citation: "[Passage 2 (Water)]" -> "[2]", "as Passage 2 says"
    -> "as source [2] says" (the citations are checked against the passages like any other [n]);
  - a header cut off at the end of the answer, and a stray "]" opening it, are dropped.
Text that could still become a header is held back until it is clear (at most HOLD characters), so the stream never
shows a header and then takes it back.
"""

from __future__ import annotations

from typing import Iterator

import regex

HOLD = 400  # characters held back at most while they could still turn into a header

# "(where)" may hold one level of parentheses itself: a man page's section, "git-gc(1) Manual Page > CONFIGURATION"
_HEADER = regex.compile(
    r"(?P<open>\[[ \t]*)?(?i:passages?)[ \t]+(?P<n>\d{1,3})"
    r"(?:[ \t]*\((?P<where>(?:[^()\n]|\([^()\n]{0,60}\)){0,300})\))?"
    r"(?P<close>[ \t]*\])?(?P<colon>[ \t]*[:\u2013\u2014-])?"
)
_STRAY_OPEN = regex.compile(r"\A\s*\]+\s*")


class ScaffoldFilter:
    """feed() each streamed piece, then finish(): the text to show, in order, with the scaffolding taken out."""

    def __init__(self) -> None:
        self.buffer = ""
        self.shown = ""  # everything released so far (whether a header starts a line, whether "]" opens the answer)

    def feed(self, piece: str) -> str:
        self.buffer += piece
        return self._release(final=False)

    def finish(self) -> str:
        return self._release(final=True)

    def stream(self, pieces: Iterator[str]) -> Iterator[str]:
        """The pieces as they may be shown, and at the end what was held back."""
        for piece in pieces:
            if shown := self.feed(piece):
                yield shown
        if rest := self.finish():
            yield rest

    def _release(self, final: bool) -> str:
        out: list[str] = []
        while self.buffer:
            if not (self.shown + "".join(out)).strip():
                opened = _STRAY_OPEN.match(self.buffer)
                if opened and (final or opened.end() < len(self.buffer)):
                    self.buffer = self.buffer[opened.end():]
                    continue
                if opened:
                    break  # only "]" and spaces so far: wait for the first word
            match = _HEADER.search(self.buffer, partial=True)
            if match is None:
                out.append(self.buffer)
                self.buffer = ""
                break
            start = match.start()
            longer = _HEADER.fullmatch(self.buffer, pos=start, partial=True)
            if not final and len(self.buffer) - start <= HOLD and (match.partial or longer is not None):
                out.append(self.buffer[:start])  # it could still grow: "Passage 2" -> "Passage 2 (Water)"
                self.buffer = self.buffer[start:]
                break
            before, rest = self.buffer[:start], self.buffer[match.end():]
            if final and (match.partial or longer is not None and longer.partial):
                # the answer ended inside a header: the fragment goes
                out.append(before.rstrip())
                self.buffer = ""
                break
            line = (self.shown + "".join(out) + before).rsplit("\n", 1)[-1]
            number = match.group("n")
            if not line.strip() and (match.group("colon") or match.group("where") is not None or match.group("open")
                                     or rest[:1] in ("\n", "")):
                out.append(before)  # a copied header: gone, with the space (or, opening the answer, the line break)
                rest = rest.lstrip(" \t")
                if not (self.shown + "".join(out)).strip():
                    rest = rest.lstrip("\n")
            elif match.group("open"):
                out.append(f"{before}[{number}]")
            else:
                sentence_start = not line.strip() or line.rstrip().endswith((".", "!", "?", ":"))
                out.append(f"{before}{'Source' if sentence_start else 'source'} [{number}]"
                           + (match.group("colon") or ""))
            self.buffer = rest
        text = "".join(out)
        self.shown += text
        return text
