"""Build a ZIM archive with zimwriterfs (Debian zim-tools) from folders of real HTML pages.

Used by scripts/eval/eval_kb.py (the evaluation corpus as a ZIM) and scripts/benchmarks/zim.py (a large ZIM). The
pages are copied into a staging folder under their own relative paths (so an article's path in the ZIM is the
page's path, e.g. `tutorial/errors.html`), with a welcome page and the 48x48 illustration zimwriterfs requires.
A built archive is kept beside a stamp of what it was built from and reused while that is unchanged.
"""

from __future__ import annotations

import hashlib
import html
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path


def _png(width: int = 48, height: int = 48) -> bytes:
    raw = b"".join(b"\x00" + b"\x20\x60\xa0" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def html_pages(folders: list[tuple[Path, str]], limit: int | None = None) -> list[tuple[Path, str]]:
    """(file, path inside the ZIM) for every .html page under each (folder, prefix), sorted, at most `limit`."""
    pages = []
    for folder, prefix in folders:
        for file in sorted(folder.rglob("*.html")):
            if file.is_file() and not file.is_symlink():
                inside = str(file.relative_to(folder))
                pages.append((file, f"{prefix}/{inside}" if prefix else inside))
    return pages[:limit] if limit else pages


def document_page(document) -> str:
    """A kb Document (a plain-text, Markdown or PDF file as kb's readers read it) as one HTML page: its title, each
    section under its headings, every paragraph escaped. The ZIM side of an evaluation then holds the same text, in
    the same sections, as the embedded library."""
    parts = [f"<html><head><title>{html.escape(document.title)}</title></head><body>",
             f"<h1>{html.escape(document.title)}</h1>"]
    shown: list[str] = []
    for section in document.sections:
        common = 0
        while common < min(len(shown), len(section.heading)) and shown[common] == section.heading[common]:
            common += 1
        for level, heading in enumerate(section.heading[common:], common + 2):
            parts.append(f"<h{min(level, 6)}>{html.escape(heading)}</h{min(level, 6)}>")
        shown = list(section.heading)
        parts.extend(f"<p>{html.escape(paragraph)}</p>" for paragraph in section.paragraphs)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_if_changed(path: Path, text: str) -> Path:
    """`text` at `path`, left untouched (its mtime too, so a built ZIM's stamp holds) when it already says that."""
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def _stamp(pages: list[tuple[Path, str]], title: str) -> str:
    digest = hashlib.sha256(title.encode())
    for file, name in pages:
        st = file.stat()
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def build_zim(pages: list[tuple[Path, str]], out: Path, title: str, threads: int = 2) -> tuple[Path, bool]:
    """The ZIM at `out` holding `pages`, built unless an archive of the same pages is there. -> (path, built)."""
    stamp_file = out.with_suffix(".stamp")
    stamp = _stamp(pages, title)
    if out.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return out, False
    zimwriterfs = shutil.which("zimwriterfs")
    if not zimwriterfs:
        raise RuntimeError("zimwriterfs is not installed (Debian: apt-get install zim-tools)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zim-stage-", dir=out.parent) as stage_dir:
        stage = Path(stage_dir)
        for file, name in pages:
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
        (stage / "icon.png").write_bytes(_png())
        links = "".join(f'<li><a href="{name}">{name}</a></li>' for _, name in pages[:200])
        (stage / "index.html").write_text(f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
                                          f"<ul>{links}</ul></body></html>")
        partial = out.with_suffix(".partial.zim")
        partial.unlink(missing_ok=True)
        subprocess.run([zimwriterfs, "-w", "index.html", "-I", "icon.png", "-l", "eng", "-t", title,
                        "-d", f"{title} (appliance evaluation)", "-c", "appliance", "-p", "appliance",
                        "-J", str(threads), str(stage), str(partial)], check=True, capture_output=True)
        partial.replace(out)
    stamp_file.write_text(stamp)
    return out, True
