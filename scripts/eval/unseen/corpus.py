"""The unseen set's library: real documentation from Debian packages that the project's own evals never used.

Nothing here is committed to the repository: the documents are read at run time from where Debian installs them
(`./scripts/eval_answers --set unseen` and `./scripts/eval_kb --set unseen` install the packages, listed in
packages.sh beside this file, when run as root).
The question documents come first, so they are in the library even before the distractors are; a second run skips
every unchanged file.

  question documents: the Bash Reference Manual (bash-doc), the Debian Reference (debian-reference-en), the Debian
                      FAQ, Social Contract and Constitution (doc-debian), Git's manual pages and guides (git-doc)
  distractors:        the PostgreSQL 15 manual (postgresql-doc-15), the Debian Administrator's Handbook in English
                      (debian-handbook)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

SHARE = Path("/usr/share/doc")
REFERENCE = Path("/usr/share/debian-reference")  # where debian-reference-en puts its pages


def plain_texts(cache: Path) -> list[Path]:
    """The Social Contract and the Constitution, gunzipped once into the cache (the readers take no .gz)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("social-contract.txt.gz", "constitution.txt.gz"):
        source = SHARE / "debian" / name
        if not source.is_file():
            continue
        target = cache / name.removesuffix(".gz")
        data = gzip.decompress(source.read_bytes())
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
        out.append(target)
    return out


def question_documents(cache: Path) -> list[Path]:
    files = [SHARE / "bash/bashref.html"]
    files += sorted(REFERENCE.glob("*.en.html"))
    files += sorted((SHARE / "debian/FAQ").glob("*.en.html"))
    files += plain_texts(cache / "texts")
    files += sorted((SHARE / "git-doc").rglob("*.html"))
    return [f for f in files if f.is_file()]


def distractors() -> list[Path]:
    files = sorted((SHARE / "postgresql-doc-15/html").glob("*.html"))
    files += sorted((SHARE / "debian-handbook/html/en-US").glob("*.html"))
    return files


def all_documents(cache: Path, named: list[str] = ()) -> list[Path]:
    """Every document, those the questions name (path suffixes) first: a library cut short still holds them."""
    everything = question_documents(cache) + distractors()
    first = [f for f in everything if any(f.as_posix().endswith("/" + n) for n in named)]
    absent = [n for n in named if not any(f.as_posix().endswith("/" + n) for f in first)]
    if absent:
        raise SystemExit(f"error: the questions name documents that are not installed: {', '.join(absent[:5])} "
                         "(./scripts/eval_answers --set unseen installs them as root)")
    return first + [f for f in everything if f not in first]


def default_home() -> Path:
    """The cached library (an APPLIANCE_HOME: its knowledge base is home/kb), shared by both evals."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "appliance" / "eval-unseen"


def build(home: Path, named: list[str] = ()) -> dict:
    """Ingest (or refresh) the library at home/kb with a progress line; returns its stats. Call with the appliance's
    import guards already in place (the evals import `appliance` first)."""
    import sys
    import time

    from appliance.models import packs
    from kb import KnowledgeBase

    documents = all_documents(home, named)
    knowledge = KnowledgeBase(home / "kb", packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate())
    started = time.monotonic()
    shown = [0.0]

    def progress(p) -> None:
        now = time.monotonic()
        if now - shown[0] >= 2 or p.files_done == p.files_total:
            shown[0] = now
            eta = f", about {p.eta_s / 60:.0f} min left" if p.eta_s else ""
            print(f"\r   ingest: {p.files_done}/{p.files_total} files, {p.chunks_done} chunks, "
                  f"{p.rate:.0f} chunks/s{eta}   ", end="", file=sys.stderr, flush=True)

    try:
        report = knowledge.add(documents, progress)
        stats = knowledge.stats()
    finally:
        knowledge.close()
    print(file=sys.stderr)
    print(f"   library: {stats['chunks']} chunks in {stats['documents']} files ({report.added + report.replaced} new, "
          f"{report.skipped} unchanged, {time.monotonic() - started:.0f} s)")
    return stats


def fact_problems(questions: list[dict], documents: list[Path]) -> list[str]:
    """Each answerable question's key fact must stand in one of the documents it names (as the library's reader
    extracts the text): a question whose fact is not there would score the eval, not the appliance."""
    from kb import readers

    texts: dict[str, str] = {}
    problems = []
    for question in questions:
        if not question["facts"]:
            continue
        found = False
        for name in question["docs"]:
            path = next((d for d in documents if d.as_posix().endswith("/" + name)), None)
            if path is None:
                continue
            if name not in texts:
                document = readers.read(path)
                texts[name] = " ".join(" ".join(" ".join(s.paragraphs) for s in document.sections).lower().split())
            if any(" ".join(f.lower().split()) in texts[name] for f in question["facts"]):
                found = True
                break
        if not found:
            problems.append(f"{question['id']}: none of {question['facts']} stands in {question['docs']}")
    return problems


def add_arguments(parser: argparse.ArgumentParser, own: str) -> None:
    """--set / --half / --no-ingest, the same for eval_answers and eval_kb (`own`: what the default set is)."""
    parser.add_argument("--set", choices=("own", "unseen"), default="own",
                        help=f"own: {own} (default); unseen: real manuals never used (unseen/)")
    parser.add_argument("--half", choices=("tuning", "heldback", "both"), default="both",
                        help="with --set unseen: the tuning half, the held-back half (never tuned on) or both")
    parser.add_argument("--no-ingest", action="store_true",
                        help="with --set unseen: use the cached library as it stands (no ingest, even if incomplete)")


def questions(half: str) -> list[dict]:
    """The set's questions, one half or both."""
    everything = json.loads((Path(__file__).with_name("questions.json")).read_text())
    return [q for q in everything if half == "both" or q["half"] == half]


def prepare(home: Path, chosen: list[dict], ingest: bool) -> bool:
    """Check every key fact against its installed document (False, with the problems on stderr, when one is not
    there), then build or refresh the library (unless `ingest` is False)."""
    named = sorted({d for q in chosen for d in q["docs"]})
    problems = fact_problems(chosen, all_documents(home, named))
    if problems:
        print("error: the set does not match the installed documents:\n  " + "\n  ".join(problems), file=sys.stderr)
        return False
    if ingest:
        build(home, named)
    return True

