"""HTML (also the chapters of an EPUB and the articles of a ZIM): h1-h6 make the heading path; navigation,
scripts, sidebars and footers are dropped; each block element is a paragraph. The text's shape is bounded first
(kb.readers.html_shape: nesting depth, formatting elements left open, attributes), so lexbor's parse and the walk
below take time linear in the bytes."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from selectolax.lexbor import LexborHTMLParser

from kb.document import Document, Section
from kb.readers._text import clean, decode, read_all
from kb.readers.html_shape import bound_shape

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
SKIP = {"script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "button", "select",
        "svg", "math", "iframe", "object", "head", "title", "meta", "link"}
BLOCK = {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "pre", "blockquote", "table", "tr", "td", "th", "thead",
         "tbody", "section", "article", "main", "figure", "figcaption", "caption", "br", "hr", "details", "summary",
         "address", "center", "body"}
# Chrome that documentation generators (Sphinx, Doxygen, MediaWiki/Kiwix, texinfo ...) put around the content.
CHROME = ("[role=navigation]", "[role=banner]", "[role=contentinfo]", ".sphinxsidebar", ".related", ".headerlink",
          ".mw-editsection", ".navbox", ".toc", "#toc", ".navigation", ".breadcrumb", ".breadcrumbs", ".skip-link",
          "sup.reference", ".noprint")
MAX_DEPTH = 400


class _Builder:
    def __init__(self):
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.current = Section(heading=[], paragraphs=[])
        self.buffer: list[str] = []
        self.first_h1: str | None = None

    def flush(self):
        if self.buffer:
            text = clean(" ".join(self.buffer))
            if text:
                self.current.paragraphs.append(text)
            self.buffer = []

    def heading(self, level: int, text: str):
        self.flush()
        text = clean(text)
        if not text:
            return
        if self.stack and self.stack[-1][1] == text:  # an h1 repeating its chapter title
            return
        if self.current.paragraphs:
            self.sections.append(self.current)
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        if level == 1 and self.first_h1 is None:
            self.first_h1 = text
        self.current = Section(heading=[t for _, t in self.stack], paragraphs=[])

    def walk(self, node, depth: int = 0):
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                text = child.text(deep=False)
                if text and text.strip():
                    self.buffer.append(text.strip() if not text[0].isspace() and self.buffer else text.strip())
                continue
            if tag in SKIP or tag.startswith("#") or tag == "-comment":
                continue
            if tag in HEADINGS:
                self.heading(HEADINGS[tag], child.text(deep=True, separator=" "))
                continue
            if depth > MAX_DEPTH:
                self.buffer.append(child.text(deep=True, separator=" "))
                continue
            if tag in BLOCK:
                self.flush()
                self.walk(child, depth + 1)
                self.flush()
            else:
                self.walk(child, depth + 1)

    def finish(self) -> list[Section]:
        self.flush()
        if self.current.paragraphs:
            self.sections.append(self.current)
        return self.sections


def parse_html(html: str, path: str, fallback_title: str, kind: str = "html",
               base_heading: list[str] | None = None) -> Document:
    html, shaped = bound_shape(html)
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = clean(title_node.text()) if title_node else ""
    for selector in CHROME:
        for node in tree.css(selector):
            if node.tag not in ("html", "body", "-document"):  # chrome is inside a page, never the page itself
                node.decompose()
    root = tree.css_first("[role=main]") or tree.css_first("main") or tree.body or tree.root
    builder = _Builder()
    if base_heading:
        builder.stack = [(0, h) for h in base_heading]
        builder.current = Section(heading=list(base_heading), paragraphs=[])
    if root is not None:
        builder.walk(root)
    sections = builder.finish()
    # A "Title — Project documentation" <title> is noisier than the page's own h1.
    if builder.first_h1 and (not title or builder.first_h1 in title):
        title = builder.first_h1
    document = Document(path=path, title=title or builder.first_h1 or fallback_title, kind=kind, sections=sections)
    if shaped:
        document.notes.append(shaped)
    return document


def read_html(handle: BinaryIO, path: Path) -> Document:
    text, note = decode(read_all(handle))
    document = parse_html(text, str(path), path.stem)
    if note and "charset" not in text[:2048].lower():
        document.notes.append(note)
    return document
