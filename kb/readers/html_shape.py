"""Bound the shape of an HTML text before lexbor parses it, so that parsing takes time linear in its bytes.

The HTML parsing algorithm lexbor follows costs, for each start tag, a walk of the stack of open elements ("close
a p element in button scope"), and for each run of text a re-opening of every formatting element still active
(b, i, font ... never closed). Measured with selectolax 1.0.2's lexbor on one core (AMD EPYC, Zen 5):
- `<div>` nested 50,000 deep: 6.0 s (2.7 s at 25,000: quadratic); 200,000 deep: 97 s on the issue's machine;
- `<b id=N><p>x` 5,000 times (84 KB): 20.5 s, the tree growing with the square of the input (each paragraph
  re-opens every earlier b), and the reader's walk with it;
- one tag with 5,000 attributes: 43 ms, 20,000: 0.9 s (each attribute compared with the ones before it);
- `<select>` with 20,000 `<option>`: 2.1 s (5,000: 0.13 s).

One pass over the text's tags (a linear scan: comments and raw-text elements skipped whole, except inside svg or
math, where they are elements and nest) keeps an approximate stack of open elements, with the parser's common
implied ends outside svg and math (p, li, dt, dd, option, table rows and cells, headings), and rewrites only what
exceeds a bound; a document within the bounds is returned unchanged:
- MAX_DEPTH open elements: a deeper start tag is dropped with its end tag (a block or heading becomes a <br>, so the
  paragraph break stays; an inline one just goes); a dropped element that the reader skips anyway (nav, form,
  svg ...) is dropped with everything up to its end;
- MAX_FORMATTING formatting elements left open at a time: further ones are dropped (their text stays);
- MAX_ATTRIBUTES attributes in one tag: the rest are dropped;
- MAX_OPTIONS options in one select (the reader skips selects): the rest are dropped.
The approximation is built to err towards counting more open elements than the parser has, never fewer, so a
hostile shape cannot slip under a bound (tests/kb/test_linear_work.py hunts for shapes where it does not: it found
svg's nesting and the end tags the parser ignores); an ordinary page never comes near one.
docs/knowledge-base.md states these limits.
"""

from __future__ import annotations

import re
from collections import Counter

MAX_DEPTH = 512  # the depth Blink's parser keeps too (kMaximumHTMLParserDOMTreeDepth)
MAX_FORMATTING = 8
MAX_ATTRIBUTES = 64
MAX_OPTIONS = 1024

_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"  # a comment
    r"|<[!?][^>]*+>?"  # doctype, processing instruction, bogus comment, CDATA
    r"|<(?P<end>/)?(?P<name>[a-zA-Z][^\s/>]*+)(?P<attrs>(?:\"[^\"]*+(?:\"|\Z)|'[^']*+(?:'|\Z)|[^'\">]++)*+)(?:>|\Z)",
    re.DOTALL | re.IGNORECASE)
_ATTRIBUTE = re.compile(r"[^\s\"'>/=]++(?:\s*+=\s*+(?:\"[^\"]*+\"?|'[^']*+'?|[^\s>]++))?|/")

# Raw text: what follows the start tag is text up to its end tag, except in svg or math (there these are elements
# like any other) and, for the ones a select ignores, inside a select.
RAW = {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext"}
IGNORED_IN_SELECT = {"iframe", "xmp", "noembed", "noframes"}
_RAW_END = {name: re.compile(rf"</{name}(?=[\s/>])[^>]*+>?", re.IGNORECASE) for name in RAW}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param", "source",
        "track", "wbr", "frame", "basefont", "bgsound", "image"}
UNCOUNTED = {"html", "head", "body"}  # the parser merges repeats of these into the one element
FORMATTING = {"a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u"}
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# Start tags that close an open p (the parser's "close a p element in button scope"); looked for near the top only.
CLOSES_P = {"address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div", "dl",
            "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "main", "menu", "nav", "ol", "p",
            "search", "section", "summary", "ul", "pre", "listing", "form", "table", "hr", "xmp", "li", "dd", "dt",
            "plaintext"} | HEADINGS
P_SCOPE = {"applet", "caption", "html", "table", "td", "th", "marquee", "object", "template", "button"}
# A start tag that ends an open element of the same group when that element is on top (li ends li ...).
SIBLINGS = {"li": {"li"}, "dt": {"dt", "dd"}, "dd": {"dt", "dd"}, "option": {"option"}, "optgroup": {"optgroup",
            "option"}, "tr": {"tr", "td", "th"}, "td": {"td", "th"}, "th": {"td", "th"},
            "thead": {"thead", "tbody", "tfoot"}, "tbody": {"thead", "tbody", "tfoot"},
            "tfoot": {"thead", "tbody", "tfoot"}} | {h: HEADINGS for h in HEADINGS}
BLOCKISH = CLOSES_P | {"li", "dt", "dd", "tr", "td", "th", "table", "caption", "thead", "tbody", "tfoot", "br",
                       "body"}
# Elements the reader skips with all they hold (kb.readers.html.SKIP, less the raw-text ones handled above).
SKIPPED = {"noscript", "template", "nav", "header", "footer", "aside", "form", "button", "select", "svg", "math",
           "object"}
_P_LOOKBACK = 8
# An end tag closes its element only if no element in between stops it, as in the parser: for a special element
# (div, li, table ...) a scope boundary (table, td, template ...), for any other (span, b ...) a special element.
# Looked for among the top _END_LOOKBACK elements only (each tag's look costs a constant; all pops together cost
# what the pushes did); one further down is left open, which errs towards counting more depth, never less.
_END_LOOKBACK = 32
SCOPE = {"applet", "caption", "html", "table", "td", "th", "marquee", "object", "template", "svg", "math",
         "foreignobject", "desc", "mi", "mo", "mn", "ms", "mtext", "annotation-xml"}
SPECIAL = SCOPE | HEADINGS | {
    "address", "area", "article", "aside", "base", "basefont", "bgsound", "blockquote", "body", "br", "button",
    "center", "col", "colgroup", "dd", "details", "dir", "div", "dl", "dt", "embed", "fieldset", "figcaption",
    "figure", "footer", "form", "frame", "frameset", "head", "header", "hgroup", "hr", "iframe", "img", "input",
    "keygen", "li", "link", "listing", "main", "menu", "meta", "nav", "noembed", "noframes", "noscript", "ol", "p",
    "param", "plaintext", "pre", "script", "search", "section", "select", "source", "style", "summary", "tbody",
    "textarea", "tfoot", "thead", "title", "tr", "track", "ul", "wbr", "xmp"}


def _rebuilt_tag(name: str, attrs: str) -> str:
    kept = [a for a in _ATTRIBUTE.findall(attrs) if a != "/"][:MAX_ATTRIBUTES]
    return f"<{name} {' '.join(kept)}>"


def bound_shape(html: str) -> tuple[str, str | None]:
    """The text with its shape bounded, and a note saying what was changed (None when nothing was).

    One loop with its state in locals (about 2 microseconds a tag on this CPU, most of it the scan): `stack` the
    approximate open elements, `open_` how many of each name are on it, `dropped` start tags dropped whose end
    tag is still to come, `formatting` formatting elements left open (explicit starts less explicit ends)."""
    if html.count("<") <= min(MAX_DEPTH, MAX_FORMATTING, MAX_OPTIONS) and len(html) < 4096:
        return html, None  # too few tags to exceed any bound, too short for a tag with too many attributes
    stack: list[str] = []
    open_: dict[str, int] = {}
    dropped: dict[str, int] = {}
    formatting: dict[str, int] = {}
    formatting_open = options = 0
    changes: Counter = Counter()
    out: list[str] = []
    kept_until = 0  # html[kept_until:start of the current tag] is still to copy
    skipping: str | None = None  # an element the reader skips, dropped whole: its name and nesting
    skip_depth = 0

    def pop_to(target: str) -> None:  # each element is popped once: all pops together cost what the pushes did
        while True:
            popped = stack.pop()
            open_[popped] -= 1
            if popped == target:
                return

    position = 0
    while (match := _TOKEN.search(html, position)) is not None:
        position = match.end()
        end, name, attrs = match.group("end", "name", "attrs")
        if name is None:
            continue  # a comment, a doctype: the parser's cost there is linear
        name = name.lower()
        if skipping is not None:
            if name == skipping:
                skip_depth += -1 if end else 1
                if not skip_depth:
                    skipping, kept_until = None, match.end()
            continue
        replacement = None
        if end:
            if dropped.get(name):
                dropped[name] -= 1
                replacement = "<br>" if name in BLOCKISH else ""
            else:
                if formatting.get(name):
                    formatting[name] -= 1
                    formatting_open -= 1
                if name == "select":
                    options = 0
                if open_.get(name):
                    blockers = SCOPE if name in SPECIAL else SPECIAL
                    for at in range(len(stack) - 1, max(-1, len(stack) - 1 - _END_LOOKBACK), -1):
                        if stack[at] == name:
                            pop_to(name)
                            break
                        if stack[at] in blockers:
                            break  # the parser ignores this end tag (its element is out of scope)
                continue
        else:
            if len(attrs) > 4 * MAX_ATTRIBUTES and len(_ATTRIBUTE.findall(attrs)) > MAX_ATTRIBUTES:
                changes["attributes"] += 1
                replacement = _rebuilt_tag(name, attrs)
            foreign = open_.get("svg") or open_.get("math")  # no raw text, no implied ends: everything nests
            if name in RAW and not foreign and not (name in IGNORED_IN_SELECT and open_.get("select")):
                closing = _RAW_END[name].search(html, position)  # its text is skipped, tags and all
                position = closing.end() if closing else len(html)
            elif name not in VOID and name not in UNCOUNTED:
                drop = None
                if foreign:
                    pass
                elif name in CLOSES_P and open_.get("p"):
                    for at in range(len(stack) - 1, max(-1, len(stack) - 1 - _P_LOOKBACK), -1):
                        if stack[at] == "p":
                            pop_to("p")
                            break
                        if stack[at] in P_SCOPE:
                            break
                if not foreign and stack and stack[-1] in SIBLINGS.get(name, ()):
                    open_[stack.pop()] -= 1
                if (name == "option" or name == "optgroup") and open_.get("select"):
                    options += 1
                    if options > MAX_OPTIONS:
                        drop = "options"
                if drop is None and name in FORMATTING and formatting_open >= MAX_FORMATTING:
                    drop = "formatting"
                if drop is None and len(stack) >= MAX_DEPTH:
                    drop = "depth"
                if drop is not None:
                    changes[drop] += 1
                    if drop == "depth" and name in SKIPPED:
                        out.append(html[kept_until:match.start()])
                        kept_until, skipping, skip_depth = match.end(), name, 1
                        continue
                    dropped[name] = dropped.get(name, 0) + 1
                    replacement = "<br>" if name in BLOCKISH else ""
                else:
                    if name in FORMATTING:
                        formatting[name] = formatting.get(name, 0) + 1
                        formatting_open += 1
                    elif name == "select":
                        options = 0
                    stack.append(name)
                    open_[name] = open_.get(name, 0) + 1
        if replacement is not None:
            out.append(html[kept_until:match.start()])
            out.append(replacement)
            kept_until = match.end()
    if not changes:
        return html, None
    if skipping is None:
        out.append(html[kept_until:])
    return "".join(out), _note(changes)


def _note(changes: Counter) -> str:
    said = {"depth": f"nesting deeper than {MAX_DEPTH} elements flattened",
            "formatting": f"more than {MAX_FORMATTING} formatting elements left open: the rest dropped",
            "attributes": f"tags with more than {MAX_ATTRIBUTES} attributes cut to {MAX_ATTRIBUTES}",
            "options": f"more than {MAX_OPTIONS} options in a select dropped"}
    return "; ".join(f"{said[key]} ({count:,} tags)" for key, count in sorted(changes.items()))
