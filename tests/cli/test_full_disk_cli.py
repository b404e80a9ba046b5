"""A full disk under `ask` and `models import --copy`: a small tmpfs mounted inside `unshare -rm` (no root needed)
holds the data directory and is filled to the last byte. Each command ends with one clear line, no traceback, and
leaves nothing half-written behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from appliance.models import packs
from tests.conftest import appliance_cmd

SCRIPT = r'''
set -u
M="$1"; shift
mount -t tmpfs -o size=4m tmpfs "$M" || exit 99
export APPLIANCE_HOME="$M/home" NO_COLOR=1
"$@" ask --no-kb --max-tokens 4 "first question, while there is room" >"$M.out1" 2>"$M.err1"; echo "rc1=$?"
dd if=/dev/zero of="$M/fill" bs=64k >/dev/null 2>&1
"$@" ask --no-kb --max-tokens 4 "a question on a full disk" >"$M.out2" 2>"$M.err2"; echo "rc2=$?"
"$@" models import --copy --name copied "$MODEL" >"$M.out3" 2>"$M.err3"; echo "rc3=$?"
"$@" history list >"$M.out4" 2>"$M.err4"; echo "rc4=$?"
echo "left=$(ls -A "$M/home/models" | tr '\n' ' ')"
'''


def on_a_small_disk(namespaces, tmp_path, script: str, timeout: float, **env: str):
    """Run `script` with a 4 MB tmpfs mounted at tmp_path/disk; its `name=value` lines, and a reader for the files
    it wrote beside the mount (disk.out1, disk.err1 ...)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run([namespaces, "-rm", "sh", "-c", script, "sh", str(mount), *appliance_cmd()],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
    assert "rc1=" in done.stdout, done.stdout + done.stderr
    out = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return out, lambda name: (tmp_path / f"disk.{name}").read_text()


@pytest.mark.slow
def test_ask_and_import_on_a_full_disk_end_with_one_line_and_leave_nothing(namespaces, tmp_path):
    out, read = on_a_small_disk(namespaces, tmp_path, SCRIPT, 600, MODEL=str(packs.SMOLLM2.locate()))
    assert out["rc1"] == "0", read("err1")
    # The answer still comes; only saving it fails, and that is said in one line.
    assert out["rc2"] == "0", read("err2")
    assert "not saved to history" in read("err2") and "Traceback" not in read("err2")
    assert len(read("err2").strip().splitlines()) <= 3
    # A copy that cannot fit: one line, exit 1, and no partial file left in the models folder.
    assert out["rc3"] == "1", read("err3")
    err3 = read("err3").strip()
    assert "Traceback" not in err3 and len(err3.splitlines()) <= 3 and "space" in err3.lower(), err3
    assert ".partial" not in out["left"] and "copied" not in out["left"], out["left"]
    # The history written before the disk filled is intact.
    assert out["rc4"] == "0" and "first question" in read("out4"), read("err4")


OLD_HISTORY = r'''
set -u
M="$1"; shift
mount -t tmpfs -o size=4m tmpfs "$M" || exit 99
export APPLIANCE_HOME="$M/home" NO_COLOR=1
mkdir -p "$APPLIANCE_HOME"
"$PYTHON" -c "$MAKE_V2" "$APPLIANCE_HOME/history.sqlite" || exit 98
dd if=/dev/zero of="$M/fill" bs=64k >/dev/null 2>&1
"$@" history verify >"$M.out1" 2>"$M.err1"; echo "rc1=$?"
"$@" history list >"$M.out2" 2>"$M.err2"; echo "rc2=$?"
'''

# A history as the appliance wrote it before the answer log (schema version 2), with one exchange.
MAKE_V2 = r'''
import sqlite3, sys
from appliance.records.history import MIGRATIONS
db = sqlite3.connect(sys.argv[1])
db.executescript(MIGRATIONS[0] + MIGRATIONS[1] + "PRAGMA user_version = 2;")
db.execute("INSERT INTO conversations VALUES (1, 'an old question', 1.0, 1.0)")
db.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES (1, 'user', 'an old question', 1.0)")
db.commit()
'''


def test_a_history_from_before_the_answer_log_on_a_full_disk_is_read_and_verify_says_why_not(namespaces, tmp_path):
    """The answer log's migration cannot run on a full disk: the old history is still listed, and `history verify`
    says in one line what is missing and what to do (not a missing-table error)."""
    out, read = on_a_small_disk(namespaces, tmp_path, OLD_HISTORY, 300, PYTHON=sys.executable, MAKE_V2=MAKE_V2)
    err = read("err1").strip()
    assert out["rc1"] == "1" and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "no answer log yet" in err and "free some space" in err, err
    assert out["rc2"] == "0" and "an old question" in read("out2"), read("err2")
