"""A real full disk during `kb add`, run inside a mount namespace on a small tmpfs (tests/kb/test_full_disk.py starts
it with `unshare -rm`, mounts the tmpfs at MOUNT and runs `python -m tests.kb.full_disk SCENARIO MOUNT ...`).

Each scenario fills the tmpfs at one moment of an ingest (as another program writing a big file would), records
what the appliance did, frees the space, records what it does then, and prints one JSON summary on stdout for the
test to judge. Everything runs in child processes of this one, so they all see the tmpfs.

Scenarios:
  refused MOUNT CORPUS            the batch does not fit: refused before anything is written
  cli MOUNT CORPUS N QUERY        `appliance kb add` running; the disk fills once N documents are in
  point MOUNT CORPUS WHERE QUERY  the disk fills right before one step of the journaled write (in-process patch):
                                  begin (SQLite step 1), vectors (the vector index), finish (SQLite step 3),
                                  persist (leaves room for chroma's log but not for its HNSW files)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.kb.fixtures import ready_documents

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MB = 1_000_000


def free_bytes(mount: Path) -> int:
    info = os.statvfs(mount)
    return info.f_bavail * info.f_frsize


def fill(mount: Path, leave: int = 0) -> None:
    """Write a filler file until only about `leave` bytes are free."""
    block = b"\xa5" * (1 << 20)
    with open(mount / "filler", "ab") as handle:
        while True:
            room = free_bytes(mount) - leave
            if room <= 0:
                break
            try:
                handle.write(block[:min(len(block), max(4096, room))])
                handle.flush()
            except OSError:
                break


def unfill(mount: Path) -> None:
    try:
        (mount / "filler").unlink()
    except FileNotFoundError:
        pass


def appliance(mount: Path, *args: str, timeout: float = 600) -> dict:
    env = dict(os.environ, APPLIANCE_HOME=str(mount / "home"), NO_COLOR="1")
    script = BIN / "appliance"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "appliance"]
    done = subprocess.run(command + list(args), capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return _result(done)


def python(mount: Path, *args: str, timeout: float = 600) -> dict:
    env = dict(os.environ, APPLIANCE_HOME=str(mount / "home"), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "tests.kb.full_disk"] + list(args), capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    return _result(done)


def _result(done: subprocess.CompletedProcess) -> dict:
    try:
        data = json.loads(done.stdout)
    except ValueError:
        data = None
    return {"rc": done.returncode, "json": data, "stdout": done.stdout[-4000:], "stderr": done.stderr[-4000:]}


def damage(mount: Path) -> str | None:
    """What kb.vectors.problem sees in the current vector index directory (read from the files alone)."""
    from kb.vectors import problem

    kb_dir = mount / "home" / "kb"
    db = sqlite3.connect(f"file:{kb_dir / 'text.sqlite'}?mode=ro", uri=True)
    row = db.execute("SELECT value FROM meta WHERE key='vectors_dir'").fetchone()
    db.close()
    return problem(kb_dir / (row[0] if row else "chroma"))


def after_the_disk_filled(mount: Path, query: str, out: dict) -> None:
    """What works while the disk is still full, then after space is freed."""
    out["full_list"] = appliance(mount, "kb", "list", "--json")
    out["full_search"] = appliance(mount, "kb", "search", "--json", query)
    unfill(mount)
    out["free_after"] = free_bytes(mount)


def judge(mount: Path, query: str, out: dict) -> None:
    out["list"] = appliance(mount, "kb", "list", "--json")
    out["search"] = appliance(mount, "kb", "search", "--json", query)
    out["verify"] = python(mount, "inspect", str(mount), query, "verify")


# --- scenarios ----------------------------------------------------------------------------------------------------
def refused(mount: Path, corpus: Path) -> dict:
    out: dict = {}
    appliance(mount, "kb", "list")  # creates the empty library
    from kb.diskspace import RESERVE_MIN

    fill(mount, leave=RESERVE_MIN + 200_000)
    out["free_before"] = free_bytes(mount)
    out["add"] = appliance(mount, "kb", "add", "--json", str(corpus))
    out["list"] = appliance(mount, "kb", "list", "--json")
    db = sqlite3.connect(mount / "home" / "kb" / "text.sqlite")
    out["batch_rows"] = db.execute("SELECT count(*) FROM batch").fetchone()[0]
    out["chunk_rows"] = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    db.close()
    unfill(mount)
    out["rerun"] = appliance(mount, "kb", "add", "--json", str(corpus))
    return out


def cli(mount: Path, corpus: Path, when: int, query: str) -> dict:
    out: dict = {}
    env = dict(os.environ, APPLIANCE_HOME=str(mount / "home"), NO_COLOR="1")
    script = BIN / "appliance"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "appliance"]
    proc = subprocess.Popen(command + ["kb", "add", "--json", str(corpus)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    text_db = mount / 'home' / 'kb' / 'text.sqlite'
    while ready_documents(text_db) < when and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    out["filled_while_running"] = proc.poll() is None
    out["ready_at_fill"] = ready_documents(mount / 'home' / 'kb' / 'text.sqlite')
    fill(mount)
    stdout, stderr = proc.communicate(timeout=600)
    out["add"] = _result(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    out["ready_after"] = ready_documents(mount / 'home' / 'kb' / 'text.sqlite')
    after_the_disk_filled(mount, query, out)
    out["rerun"] = appliance(mount, "kb", "add", "--json", str(corpus))
    judge(mount, query, out)
    out["ask"] = appliance(mount, "ask", "--json", "--no-history", "--max-tokens", "4", query)
    return out


def point(mount: Path, corpus: Path, where: str, query: str) -> dict:
    """In-process checks (one child each) instead of one `appliance` command per check: the CLI is judged by the
    `cli` scenario, this one by what the library holds."""
    out: dict = {}
    out["add"] = python(mount, "ingest", str(mount), str(corpus), where)
    out["ready_after"] = ready_documents(mount / 'home' / 'kb' / 'text.sqlite')
    out["damage"] = damage(mount)
    out["full"] = python(mount, "inspect", str(mount), query, "no-verify")
    unfill(mount)
    out["rerun"] = python(mount, "ingest", str(mount), str(corpus), "none")
    out["after"] = python(mount, "inspect", str(mount), query, "verify")
    return out


# --- child processes ----------------------------------------------------------------------------------------------
def _open(mount: Path):
    from appliance.models import packs
    from kb import KnowledgeBase

    return KnowledgeBase(mount / "home" / "kb", packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate())


def _fast_embedder_for_filler() -> None:
    """Passages of the big synthetic file get hashed unit vectors (embedding 1,500 of them would take a minute
    and is not what is tested here); every other passage is embedded for real."""
    import numpy as np

    from kb.embedder import DIM, Embedder

    real = Embedder.embed

    def embed(self, texts, batch_size=8):
        if texts and all("fillerword" in t for t in texts):
            rng = np.random.default_rng(len(texts))
            vectors = rng.normal(size=(len(texts), DIM)).astype(np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return real(self, texts, batch_size=batch_size)

    Embedder.embed = embed


def ingest(mount: Path, corpus: Path, where: str) -> None:
    """`kb add CORPUS/seed` with room, then `kb add CORPUS` in this process, where the disk fills right before the
    step named `where` of the second write (of the first write with 1,000+ vectors for `persist`)."""
    from kb.store import Store
    from kb.vectors import Vectors

    _fast_embedder_for_filler()
    seeded = None
    if where != "none":
        knowledge = _open(mount)
        try:
            seeded = knowledge.add([corpus / "seed"]).as_dict()
        finally:
            knowledge.close()
    targets = {"begin": (Store, "begin_document"), "vectors": (Vectors, "add"), "finish": (Store, "finish_document"),
               "persist": (Vectors, "add")}
    if where in targets:
        owner, name = targets[where]
        real = getattr(owner, name)
        calls = []

        def patched(self, *args, **kwargs):
            calls.append(1)
            if where == "persist":
                if len(args[0]) >= 1000 and not (mount / "filler").exists():
                    fill(mount, leave=int(float(os.environ.get("FULL_DISK_LEAVE_MB", "4")) * MB))
            elif len(calls) == 2:
                fill(mount)
            return real(self, *args, **kwargs)

        setattr(owner, name, patched)
    knowledge = _open(mount)
    try:
        report = knowledge.add([corpus])
        print(json.dumps({"seed": seeded, "report": report.as_dict(), "notices": knowledge.take_notices()}))
    finally:
        knowledge.close()


def inspect(mount: Path, query: str, check: bool) -> None:
    """What the library holds and finds (and, with `check`, whether it is consistent), as one JSON object."""
    knowledge = _open(mount)
    try:
        out = {"documents": len(knowledge.documents()), "hits": [h.as_dict() for h in knowledge.search(query)],
               "pending": knowledge.pending()}
        if check:
            out["verify"] = knowledge.verify()
        out["notices"] = knowledge.take_notices()
        print(json.dumps(out))
    finally:
        knowledge.close()


def main(argv: list[str]) -> int:
    scenario, mount = argv[0], Path(argv[1])
    if scenario == "ingest":
        ingest(mount, Path(argv[2]), argv[3])
        return 0
    if scenario == "inspect":
        inspect(mount, argv[2], argv[3] == "verify")
        return 0
    if scenario == "refused":
        result = refused(mount, Path(argv[2]))
    elif scenario == "cli":
        result = cli(mount, Path(argv[2]), int(argv[3]), argv[4])
    elif scenario == "point":
        result = point(mount, Path(argv[2]), argv[3], argv[4])
    else:
        print(f"unknown scenario {scenario}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
