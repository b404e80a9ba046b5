"""Property-based fuzzing of the readers (hypothesis): whatever bytes a file holds, a reader returns a Document or
raises ReadError (one line), never anything else, and never hangs (each test has a hard timeout; each example a
deadline). Inputs are built from the formats' own pieces and from mutations of real files, so they reach deep into
the parsers rather than failing at the first byte. Bounded to a few seconds per reader."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kb import readers
from kb.document import Document
from kb.errors import ReadError
from tests.kb import fixtures

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=120, deadline=timedelta(seconds=5), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def document_or_read_error(data: bytes, name: str, own_parser: bool = False) -> None:
    """own_parser: the text formats are parsed by this project's code, so an exception inside it (which read_from
    turns into "cannot be parsed as ...") is a bug here, not a broken file."""
    try:
        document = readers.read_from(io.BytesIO(data), Path(name))
    except ReadError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert not (own_parser and str(exc).startswith("cannot be parsed as")), str(exc)
        return
    assert isinstance(document, Document)
    assert isinstance(document.title, str)
    for section in document.sections:
        assert all(isinstance(h, str) for h in section.heading)
        assert all(isinstance(p, str) for p in section.paragraphs)
    assert any(p.strip() for s in document.sections for p in s.paragraphs)


# --- pieces -------------------------------------------------------------------------------------------------------
words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
TAGS = ["h1", "h2", "h3", "h6", "p", "div", "nav", "script", "style", "li", "ul", "table", "td", "pre", "main",
        "article", "footer", "br", "svg", "template", "body", "html", "head", "title", "section", "a", "b"]
ATTRIBUTES = ['', ' role="main"', ' class="toc"', ' id="toc"', ' role="navigation"', ' href="#x"', ' style="a"']


@st.composite
def html_text(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.integers(0, 5))
        tag = draw(st.sampled_from(TAGS))
        if kind == 0:
            parts.append(f"<{tag}{draw(st.sampled_from(ATTRIBUTES))}>")
        elif kind == 1:
            parts.append(f"</{tag}>")
        elif kind == 2:
            parts.append(draw(st.sampled_from(["&amp;", "&#0;", "&#x1F600;", "&nbsp;", "<!--", "-->", "<![CDATA[",
                                               "<!DOCTYPE html>", "\x00", "\x1b[2J", "<meta charset=latin1>"])))
        else:
            parts.append(draw(words))
    nesting = draw(st.integers(0, 3)) * 300  # deep nesting, past the reader's depth limit
    return "<div>" * nesting + "".join(parts) + "</div>" * draw(st.integers(0, nesting))


LINES = ["# ", "## ", "###### ", "```", "~~~", "---", "...", "===", "- ", "* ", "1. ", "> ", "    ", "<div>",
         "[link](", "![img](x)", "**", "`", "\t", "", "\r", "#"]


@st.composite
def markdown_text(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 80))):
        lines.append(draw(st.sampled_from(LINES)) + draw(words))
    return "\n".join(lines)


def encoded(text_strategy):
    return st.tuples(text_strategy, st.sampled_from(["utf-8", "utf-16", "cp1252", "latin-1"])).map(
        lambda pair: pair[0].encode(pair[1], "replace"))


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """A real file with bytes flipped, a slice cut out or repeated, or cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 12))):
        if not data:
            break
        action = draw(st.integers(0, 3))
        at = draw(st.integers(0, len(data) - 1))
        if action == 0:
            data[at] = draw(st.integers(0, 255))
        elif action == 1:
            del data[at:at + draw(st.integers(1, 400))]
        elif action == 2:
            data[at:at] = data[at:at + draw(st.integers(1, 400))]
        else:
            del data[at:]
    return bytes(data)


@pytest.fixture(scope="module")
def real_pdf(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "real.pdf"
    fixtures.make_pdf(path, [("Generators", fixtures.GENERATOR), ("Batteries", "Keep them charged.")])
    return path.read_bytes()


@pytest.fixture(scope="module")
def real_epub(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "real.epub"
    fixtures.make_epub(path, [("Knots", "The bowline makes a fixed loop."), ("Tarps", "Pitch an A-frame.")])
    return path.read_bytes()


@st.composite
def epub_archive(draw) -> bytes:
    """A zip shaped like an EPUB, with every part drawn: container, package document, chapters."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if draw(st.booleans()):
            archive.writestr("mimetype", "application/epub+zip")
        opf = draw(st.sampled_from(["OEBPS/content.opf", "content.opf", "../x.opf", ""]))
        if draw(st.booleans()):
            archive.writestr("META-INF/container.xml",
                             '<?xml version="1.0"?><container xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                             f'<rootfiles><rootfile full-path="{opf}"/></rootfiles></container>'
                             + draw(st.sampled_from(["", "<", "&bad;"])))
        chapters = draw(st.integers(0, 4))
        items = "".join(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>'
                        for i in range(chapters))
        spine = "".join(f'<itemref idref="c{draw(st.integers(0, 5))}"/>' for _ in range(chapters))
        if opf and draw(st.integers(0, 4)):
            archive.writestr(opf, '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
                                  f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{draw(words)}'
                                  f'</dc:title></metadata><manifest>{items}</manifest><spine>{spine}</spine>'
                                  "</package>" + draw(st.sampled_from(["", "<unclosed", "\x00"])))
        base = opf.rsplit("/", 1)[0] + "/" if "/" in opf else ""
        for i in range(chapters):
            archive.writestr(f"{base}c{i}.xhtml", draw(html_text()).encode("utf-8", "replace"))
    return buffer.getvalue()


# --- properties ---------------------------------------------------------------------------------------------------
@FUZZ
@given(st.one_of(encoded(html_text()), st.binary(max_size=4000)))
@example(b'<html role="navigation"><body><p>A page marked as navigation as a whole.</p></body></html>')
@example(b'<body class="toc"><h1>Index</h1><p>A body marked as a table of contents.</p></body>')
def test_html_reader(data):
    document_or_read_error(data, "fuzz.html", own_parser=True)


@FUZZ
@given(st.one_of(encoded(markdown_text()), st.binary(max_size=4000)))
def test_markdown_reader(data):
    document_or_read_error(data, "fuzz.md", own_parser=True)


@FUZZ
@given(st.one_of(encoded(markdown_text()), st.binary(max_size=4000)))
def test_text_reader(data):
    document_or_read_error(data, "fuzz.txt", own_parser=True)


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_epub_reader(real_epub, data):
    blob = data.draw(st.one_of(epub_archive(), mutated(real_epub), st.binary(max_size=2000)))
    document_or_read_error(blob, "fuzz.epub")


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_pdf_reader(real_pdf, data):
    blob = data.draw(st.one_of(mutated(real_pdf), st.binary(max_size=2000).map(lambda b: b"%PDF-1.7\n" + b)))
    document_or_read_error(blob, "fuzz.pdf")
