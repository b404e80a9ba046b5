"""Real-format fixture files made by the tests: PDFs by reportlab (outline, pages) and pypdf (encryption), EPUBs by
ebooklib, ZIMs by zimwriterfs. Nothing binary is committed."""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

from tests.conftest import require_tool

WATER = ("To purify water with household bleach, add two drops of unscented chlorine bleach per litre of clear "
         "water, stir, and wait thirty minutes before drinking. If the water is cloudy, double the dose.")
BURN = ("Cool a burn under cool running water for twenty minutes. Do not use ice, butter or toothpaste. Cover it "
        "loosely with cling film or a clean plastic bag.")
BATTERY = ("To jump start a car with a flat battery, connect the red cable to the positive terminal of the dead "
           "battery, then to the positive terminal of the good battery, then black to negative and to bare metal.")
GENERATOR = ("Never run a portable generator indoors or in a garage: carbon monoxide kills within minutes. Keep it "
             "at least six metres from windows and doors.")


TOPICS = ["water", "fire", "shelter", "radio", "battery", "engine", "wound", "fever", "bread", "solar"]


def make_corpus(root: Path, files: int = 36) -> Path:
    """`files` markdown guides of three parts each (about five passages a file), on ten topics."""
    root.mkdir(parents=True)
    for n in range(files):
        topic = TOPICS[n % len(TOPICS)]
        sections = []
        for s in range(3):
            sentences = " ".join(f"Step {k} of the {topic} procedure number {n} in part {s} needs care and a "
                                 f"second check by another person." for k in range(12))
            sections.append(f"## Part {s}\n\n{sentences}\n")
        (root / f"{n:02d}-{topic}.md").write_text(f"# {topic.title()} guide {n}\n\n" + "\n".join(sections))
    return root


def make_filler_book(path: Path, passages: int = 1500) -> Path:
    """One markdown file of `passages` short sections (one passage each), every one holding the word
    "fillerword" (tests/kb/full_disk.py gives those hashed vectors instead of embedding them)."""
    sections = "\n\n".join(f"## Section {i}\n\nfillerword passage number {i} of the long appendix, with a few "
                            f"more words so that it is a passage of its own." for i in range(passages))
    path.write_text(f"# Appendix\n\n{sections}\n")
    return path


def add_synthetic(knowledge, passages: int, per_document: int = 500, seed: int = 7) -> None:
    """`passages` filler passages with random unit vectors, written through the store's journaled steps and the
    real vector index (enough of them that chroma persists its HNSW files: it does so every 1,000 additions)."""
    import numpy as np

    from kb.chunking import Chunk

    rng = np.random.default_rng(seed)
    done = 0
    while done < passages:
        count = min(per_document, passages - done)
        chunks = [Chunk(heading=[f"Part {i}"], text=f"synthetic filler passage {done + i}") for i in range(count)]
        vectors = rng.normal(size=(count, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        doc_id, ids = knowledge.store.begin_document(f"/synthetic/{seed}-{done}.md", f"Synthetic {done}", "md",
                                                     f"synthetic-{seed}-{done}", 0, chunks, vectors)
        knowledge.vectors.add(ids, vectors)
        knowledge.store.finish_document(doc_id, None)
        done += count


def make_pdf(path: Path, pages: list[tuple[str, str]], title: str = "Field Manual") -> Path:
    """One page per (heading, text); every page is an outline entry (bookmark) with that heading."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setTitle(title)
    for number, (heading, text) in enumerate(pages, 1):
        key = f"p{number}"
        pdf.bookmarkPage(key)
        pdf.addOutlineEntry(heading, key, level=0)
        pdf.setFont("Helvetica-Bold", 14)
        pdf.drawString(72, 780, heading)
        pdf.setFont("Helvetica", 11)
        y = 750
        line = ""
        for word in text.split():
            if len(line) + len(word) > 80:
                pdf.drawString(72, y, line)
                y -= 15
                line = ""
            line += word + " "
        pdf.drawString(72, y, line)
        pdf.showPage()
    pdf.save()
    return path


def encrypt_pdf(source: Path, target: Path, password: str = "secret") -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(str(source)).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password, algorithm="AES-128")
    with open(target, "wb") as handle:
        writer.write(handle)
    return target


def make_epub(path: Path, chapters: list[tuple[str, str]], title: str = "Home Repair") -> Path:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("test-" + path.stem)
    book.set_title(title)
    book.set_language("en")
    items = []
    for number, (chapter, text) in enumerate(chapters, 1):
        item = epub.EpubHtml(title=chapter, file_name=f"chap{number}.xhtml", lang="en")
        item.content = f"<html><body><h1>{chapter}</h1><p>{text}</p></body></html>"
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav"] + items
    epub.write_epub(str(path), book)
    return path


def make_zip_bomb(path: Path, megabytes: int = 400) -> Path:
    """An .epub that is a zip of one huge run of zeros (inflates ~1000x)."""
    block = b"\0" * (1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        with archive.open("OEBPS/bomb.xhtml", "w", force_zip64=True) as handle:
            for _ in range(megabytes):
                handle.write(block)
    return path


def _png(width: int = 48, height: int = 48) -> bytes:
    raw = b"".join(b"\x00" + b"\x20\x60\xa0" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# Three first-aid articles a ZIM test puts beside the ones it asks about (file name -> (title, [(heading, text)])).
FIRST_AID_ARTICLES = {
    "A/Water_purification.html": ("Water purification", [("Chemical disinfection", WATER)]),
    "A/Burn.html": ("Burn", [("First aid", BURN)]),
    "A/Generator.html": ("Portable generator", [("Safety", GENERATOR)]),
}


def make_zim(path: Path, articles: dict[str, tuple[str, list[tuple[str, str]]]], title: str = "Test Wiki",
             extra: tuple[str, ...] = ()) -> Path:
    """articles: file name -> (title, [(section heading, text)]). Built by zimwriterfs with a full-text index;
    `extra`: more zimwriterfs options (e.g. "-n", "name", "-e", "source URL")."""
    zimwriterfs = require_tool("zimwriterfs")
    source = path.parent / (path.stem + "-html")
    source.mkdir(parents=True, exist_ok=True)
    (source / "icon.png").write_bytes(_png())
    links = "".join(f'<li><a href="{name}">{t}</a></li>' for name, (t, _) in articles.items())
    (source / "index.html").write_text(f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
                                       f"<ul>{links}</ul></body></html>")
    for name, (article_title, sections) in articles.items():
        body = "".join(f"<h2>{h}</h2><p>{t}</p>" for h, t in sections)
        (source / name).parent.mkdir(parents=True, exist_ok=True)  # a name may hold folders: "A/sect.x.html"
        (source / name).write_text(f"<html><head><title>{article_title}</title></head><body>"
                                   f"<h1>{article_title}</h1>{body}</body></html>")
    subprocess.run([zimwriterfs, "-w", "index.html", "-I", "icon.png", "-l", "eng", "-t", title, "-d", "test wiki",
                    "-c", "tests", "-p", "tests", "-J", "1", *extra, str(source), str(path)], check=True,
                   capture_output=True)
    return path


def ready_documents(db_path: Path) -> int:
    """Documents an ingest has finished (state 'ready'), read from another process while it runs; 0 if unreadable."""
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT count(*) FROM documents WHERE state='ready'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0
