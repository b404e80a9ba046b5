"""Every reader on a real file of its format: title, heading path, page numbers, and the bad inputs."""

from __future__ import annotations

import pytest

from kb import readers
from kb.chunking import MAX_WORDS, chunk_document
from kb.errors import ReadError
from kb.readers.zim import read_zim
from tests.kb import fixtures


def _texts(document) -> str:
    return " ".join(p for s in document.sections for p in s.paragraphs)


def test_markdown_heading_path(library):
    document = readers.read(library / "manuals" / "water.md")
    assert document.kind == "md" and document.title == "Water"
    headings = [s.heading for s in document.sections]
    assert ["Water", "Purifying with bleach"] in headings and ["Water", "Boiling"] in headings
    bleach = next(s for s in document.sections if s.heading[-1] == "Purifying with bleach")
    assert "two drops" in bleach.paragraphs[0]


def test_markdown_code_fence_is_not_a_heading(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Top\n\n```sh\n# not a heading\nls -la\n```\n\nAfter the fence.\n")
    document = readers.read(path)
    assert [s.heading for s in document.sections] == [["Top"]]
    assert "# not a heading" in _texts(document)


def test_text_headings_and_title(library):
    document = readers.read(library / "manuals" / "car.txt")
    assert document.kind == "txt" and document.title == "CAR REPAIR"
    assert any(s.heading == ["JUMP STARTING"] and "red cable" in s.paragraphs[0] for s in document.sections)


def test_html_drops_navigation_and_keeps_sections(library):
    document = readers.read(library / "first-aid.html")
    assert document.title == "First aid"
    text = _texts(document)
    assert "cling film" in text and "Home | Index" not in text and "copyright" not in text
    assert document.sections[0].heading == ["First aid", "Burns"]


def test_pdf_pages_and_outline(library):
    document = readers.read(library / "power.pdf")
    assert document.kind == "pdf" and document.title == "Field Manual"
    assert [(s.heading, s.page) for s in document.sections] == [(["Generators"], 1), (["Batteries"], 2)]
    assert "carbon monoxide" in " ".join(document.sections[0].paragraphs)


def test_epub_chapter_titles(library):
    document = readers.read(library / "shelter.epub")
    assert document.kind == "epub" and document.title == "Home Repair"
    by_heading = {tuple(s.heading): " ".join(s.paragraphs) for s in document.sections}
    assert "bowline" in by_heading[("Knots",)] and "A-frame" in by_heading[("Tarps",)]


def test_zim_articles_by_section(tmp_path):
    path = fixtures.make_zim(tmp_path / "wiki.zim", {
        "Water.html": ("Water purification", [("Bleach", fixtures.WATER), ("Boiling", "Boil for one minute.")]),
    })
    document = read_zim(path)
    assert document.kind == "zim" and document.title == "Test Wiki"
    headings = [s.heading for s in document.sections]
    assert ["Water purification", "Bleach"] in headings and ["Water purification", "Boiling"] in headings


def test_non_utf8_text_is_decoded_with_a_note(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes("Caf\xe9 cr\xe8me: keep the r\xe9chaud away from the tent.".encode("cp1252"))
    document = readers.read(path)
    assert "réchaud" in _texts(document)
    assert any("not UTF-8" in note for note in document.notes)


@pytest.mark.parametrize("name,data,reason", [
    ("junk.txt", bytes(range(256)) * 64, "binary data"),
    ("empty.md", b"\n\n   \n", "no text"),
    ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage garbage\n", "PDF"),
    ("broken.epub", b"PK\x03\x04 this is not really a zip", "EPUB"),
    ("notes.docx", b"whatever", "unsupported format"),
])
def test_bad_files_raise_one_clear_reason(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ReadError) as info:
        readers.read(path)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_encrypted_pdf_is_refused(library, tmp_path):
    locked = fixtures.encrypt_pdf(library / "power.pdf", tmp_path / "locked.pdf")
    with pytest.raises(ReadError, match="encrypted PDF"):
        readers.read(locked)


def test_pdf_encrypted_with_an_empty_password_opens(library, tmp_path):
    locked = fixtures.encrypt_pdf(library / "power.pdf", tmp_path / "open.pdf", password="")
    assert "carbon monoxide" in _texts(readers.read(locked))


def test_epub_zip_bomb_is_refused_before_inflating(tmp_path):
    bomb = fixtures.make_zip_bomb(tmp_path / "bomb.epub", megabytes=320)
    assert bomb.stat().st_size < 5 * 1024 * 1024
    with pytest.raises(ReadError, match="zip bomb"):
        readers.read(bomb)


def test_chunks_stay_in_sections_and_near_150_words(tmp_path):
    long_section = " ".join(f"Sentence number {i} explains one more step of the repair." for i in range(120))
    path = tmp_path / "guide.md"
    path.write_text(f"# Guide\n\n## Long part\n\n{long_section}\n\n## Short part\n\nOnly a few words here.\n")
    chunks = chunk_document(readers.read(path))
    assert all(len(c.text.split()) <= MAX_WORDS for c in chunks)
    long_chunks = [c for c in chunks if c.heading == ["Guide", "Long part"]]
    assert len(long_chunks) >= 5
    assert all(100 <= len(c.text.split()) <= MAX_WORDS for c in long_chunks[:-1])
    short = [c for c in chunks if c.heading == ["Guide", "Short part"]]
    assert len(short) == 1 and short[0].text == "Only a few words here."
    assert not any("Only a few words" in c.text for c in long_chunks)
