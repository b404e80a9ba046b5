"""Hostile input at the edges: things in a folder that are not files, names that are not UTF-8, requests that
would remove whole trees, and a knowledge base directory that is read-only, garbage or a symlink loop. Each ends
in one clear line; nothing hangs (a hang fails these tests by timeout); nothing else in the batch is lost."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from kb import KBError, KBUsageError
from kb.files import shown
from tests.conftest import appliance_cmd, run_appliance

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def mixed(tmp_path, library) -> Path:
    """A folder holding one real document and everything else a folder can hold."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(library / "manuals" / "water.md", folder / "good.md")
    os.mkfifo(folder / "x.txt")
    (folder / "zero.txt").symlink_to("/dev/zero")
    (folder / "null.md").symlink_to("/dev/null")
    (folder / "loop.md").symlink_to("loop.md")
    (folder / "ping.md").symlink_to("pong.md")
    (folder / "pong.md").symlink_to("ping.md")
    (folder / "gone.md").symlink_to(tmp_path / "nowhere.md")
    (folder / "again").symlink_to(folder)  # a directory loop: never followed
    return folder


@pytest.fixture
def unix_socket(mixed):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(mixed / "sock.txt"))
    yield mixed / "sock.txt"
    server.close()


def test_only_regular_files_are_read(make_kb, mixed, unix_socket):
    knowledge = make_kb()
    report = knowledge.add([mixed])
    failed = dict(report.failed)
    expected = {"x.txt": "FIFO", "zero.txt": "character device", "null.md": "character device",
                "loop.md": "symlink loop", "ping.md": "symlink loop", "pong.md": "symlink loop",
                "gone.md": "broken symbolic link", "sock.txt": "socket"}
    assert set(failed) == {str(mixed / name) for name in expected}
    for name, words in expected.items():
        assert words in failed[str(mixed / name)], (name, failed[str(mixed / name)])
    assert report.added == 1 and report.stopped is None
    assert [d["path"] for d in knowledge.documents()] == [str(mixed / "good.md")]
    assert knowledge.verify()["ok"]


def test_non_files_named_directly_are_refused(make_kb, mixed, unix_socket):
    names = ["x.txt", "zero.txt", "loop.md", "gone.md", "sock.txt"]
    report = make_kb().add([mixed / name for name in names] + [mixed / "good.md"])
    failed = dict(report.failed)
    assert "FIFO" in failed[str(mixed / "x.txt")]
    assert "character device" in failed[str(mixed / "zero.txt")]
    assert "symlink loop" in failed[str(mixed / "loop.md")]
    assert "broken symbolic link" in failed[str(mixed / "gone.md")]
    assert "socket" in failed[str(mixed / "sock.txt")]
    assert report.added == 1


@pytest.mark.slow
def test_kb_add_of_such_a_folder_ends_with_one_line_per_file(mixed):
    result = run_appliance("kb", "add", str(mixed), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("1 added")
    assert f"FAILED    {mixed / 'x.txt'}: not a regular file: a FIFO (named pipe); skipped" in lines
    assert f"FAILED    {mixed / 'loop.md'}: a symlink loop (too many levels of symbolic links); not followed" in lines
    assert sum(line.startswith("FAILED") for line in lines) == 7


def test_names_that_are_not_utf8(make_kb, tmp_path, library):
    folder = tmp_path / os.fsdecode(b"caf\xe9s")
    folder.mkdir()
    odd = folder / os.fsdecode(b"r\xe9chaud-\xff.md")
    odd.write_text("# Stove\n\nNever run a camping stove inside the tent: carbon monoxide builds up fast.\n")
    shutil.copy(library / "first-aid.html", folder / "aid.html")
    knowledge = make_kb()
    report = knowledge.add([folder])
    assert report.failed == [] and report.added == 2
    shown_path = str(tmp_path) + "/caf\\xe9s/r\\xe9chaud-\\xff.md"
    assert shown(odd) == shown_path
    assert shown_path in {d["path"] for d in knowledge.documents()}
    hit = knowledge.search("can I use the stove in the tent", k=1)[0]
    assert hit.path == shown_path and hit.source(1).cite() == f"[1] {shown_path}, Stove"
    json.dumps([h.as_dict() for h in knowledge.search("stove tent")])  # printable and JSON-safe
    # An interrupted batch with such names resumes (its list is kept in SQLite).
    knowledge.remove(folder)
    cancel = threading.Event()
    partial = knowledge.add([folder], progress=lambda p: cancel.set(), cancel=cancel)
    assert partial.cancelled and len(knowledge.pending()) == 2 and shown_path in knowledge.pending()
    resumed = knowledge.add([])
    assert resumed.added == 2 and knowledge.pending() == []
    # Removed by its real name, or by the name as shown.
    assert knowledge.remove(odd) > 0
    knowledge.add([folder])
    assert knowledge.remove(shown_path) > 0
    assert knowledge.verify()["ok"]


@pytest.mark.slow
def test_non_utf8_names_through_the_command_line(tmp_path):
    name = os.fsencode(str(tmp_path)) + b"/p\xe9\x1b[2J.md"
    with open(name, "wb") as handle:
        handle.write(b"# Pump\n\nPrime the hand pump with a cup of water before pumping.\n")
    added = run_appliance("kb", "add", str(tmp_path))
    assert added.returncode == 0, added.stderr
    listing = run_appliance("kb", "list")
    assert listing.returncode == 0
    assert "p\\xe9\\x1b[2J.md" in listing.stdout and "\x1b" not in listing.stdout
    found = run_appliance("kb", "search", "how do I prime a hand pump")
    assert found.returncode == 0 and "\x1b" not in found.stdout and "\\xe9" in found.stdout
    as_json = json.loads(run_appliance("kb", "list", "--json").stdout)
    assert as_json[0]["path"] == str(tmp_path) + "/p\\xe9\x1b[2J.md"  # exact, control character and all


def test_removing_nothing_root_or_home_is_refused(make_kb, library, tmp_path):
    knowledge = make_kb()
    knowledge.add([library / "first-aid.html"])
    for bad in ("", "   ", "/", os.path.expanduser("~"), os.path.dirname(os.path.expanduser("~"))):
        with pytest.raises(KBUsageError):
            knowledge.remove(bad)
    assert len(knowledge.documents()) == 1


@pytest.mark.slow
def test_kb_remove_refusals_exit_2_and_touch_nothing(library, tmp_path):
    home = tmp_path / "user"
    home.mkdir()
    assert run_appliance("kb", "add", str(library / "first-aid.html")).returncode == 0
    env = {"HOME": str(home)}
    for bad, words in (("", "empty path"), ("/", "root directory"), (str(home), "home directory"),
                       (str(tmp_path), "home directory")):
        result = run_appliance("kb", "remove", bad, env=env)
        assert result.returncode == 2, (bad, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr
    cwd_empty = subprocess.run(appliance_cmd() + ["kb", "remove", ""], cwd=library, capture_output=True, text=True)
    assert cwd_empty.returncode == 2
    assert len(json.loads(run_appliance("kb", "list", "--json").stdout)) == 1


def one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


def test_a_garbage_database_is_one_line(appliance_home):
    kb_dir = appliance_home / "kb"
    kb_dir.mkdir(parents=True)
    (kb_dir / "text.sqlite").write_bytes(os.urandom(8192))
    for command in (["kb", "list"], ["kb", "search", "water"], ["kb", "add", "/nonexistent"], ["kb", "repair"]):
        one_line_error(run_appliance(*command), "is damaged or is not a knowledge base")


def test_a_fifo_instead_of_the_database_does_not_hang(appliance_home):
    kb_dir = appliance_home / "kb"
    kb_dir.mkdir(parents=True)
    os.mkfifo(kb_dir / "text.sqlite")
    one_line_error(run_appliance("kb", "list", timeout=60), "is not a regular file")


def test_a_symlink_loop_as_the_knowledge_base_directory(appliance_home):
    appliance_home.mkdir(parents=True)
    (appliance_home / "kb").symlink_to("kb")
    one_line_error(run_appliance("kb", "stats"), "symlink loop")


@pytest.mark.slow
def test_a_read_only_knowledge_base_directory(namespaces, library, appliance_home):
    assert run_appliance("kb", "add", str(library / "first-aid.html")).returncode == 0
    kb_dir = appliance_home / "kb"
    script = (f'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && '
              f'for command in "list" "search water" "add {library / "car.txt"}" "repair"; do '
              f'"$@" kb $command; echo "rc=$?" >&2; done')
    env = dict(os.environ, NO_COLOR="1")
    done = subprocess.run([namespaces, "-rm", "sh", "-c", script, "sh", str(kb_dir)] + appliance_cmd(),
                          capture_output=True, text=True, env=env, timeout=300)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    codes = [line for line in done.stderr.splitlines() if line.startswith("rc=")]
    assert codes == ["rc=1"] * 4, done.stderr
    assert len(errors) == 4 and all("read-only" in line for line in errors), done.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a directory whatever its mode says")
def test_a_directory_without_write_permission(library, appliance_home):
    assert run_appliance("kb", "add", str(library / "first-aid.html")).returncode == 0
    kb_dir = appliance_home / "kb"
    kb_dir.chmod(0o555)
    try:
        one_line_error(run_appliance("kb", "list"), "read-only")
    finally:
        kb_dir.chmod(0o755)


def test_a_file_where_the_directory_should_be(make_kb, tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(KBError, match="not a directory"):
        make_kb(blocker)


def test_kb_add_of_an_empty_path_is_a_usage_error(tmp_path):
    result = subprocess.run(appliance_cmd() + ["kb", "add", ""], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "empty path" in result.stderr
    assert json.loads(run_appliance("kb", "list", "--json").stdout) == []
