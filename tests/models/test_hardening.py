"""Hostile input and a failing disk at the model library's edges: FIFOs named like models or records, a copy that
fails half way, a chat template that loops, output paths that do not exist, file names that are not UTF-8, and a
damaged library.json. Each gives one clear line and an exit code; nothing hangs, nothing is left behind."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess

import pytest

from appliance.models import manifest
from tests.conftest import appliance_cmd, run_appliance
from tests.models.fixtures import make_gguf

LOOP = "{% for a in range(99999) %}{% for b in range(99999) %}x{% endfor %}{% endfor %}"


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_fifo_named_like_a_model_is_refused_not_waited_on(tmp_path, invoke):
    fifo = tmp_path / "trap.gguf"
    os.mkfifo(fifo)
    result = run_appliance("models", "import", str(fifo), timeout=60)  # a hang fails the test, it does not stall it
    assert result.returncode == 1 and "not a regular file" in _one_error_line(result.stderr)
    folder = tmp_path / "drive"
    folder.mkdir()
    make_gguf(folder / "good.gguf", {"general.license": "mit"})
    os.mkfifo(folder / "pipe.gguf")
    result = run_appliance("models", "import", str(folder), timeout=60)
    assert result.returncode == 1 and "registered good" in result.stdout
    assert "pipe.gguf" in result.stderr and "not a regular file" in result.stderr
    assert "1 of 2 file(s) were not imported" in result.stderr
    # FIFOs where the travelling record or a signature would be: refused, not read.
    os.mkfifo(tmp_path / "lonely.gguf.manifest.json")
    make_gguf(tmp_path / "lonely.gguf")
    result = run_appliance("models", "import", str(tmp_path / "lonely.gguf"), timeout=60)
    assert result.returncode == 1 and "not a regular file" in _one_error_line(result.stderr)
    os.mkfifo(tmp_path / "signed.gguf.sig.json")
    make_gguf(tmp_path / "signed.gguf")
    result = run_appliance("models", "import", str(tmp_path / "signed.gguf"), timeout=60)
    assert result.returncode == 3 and "signature document is unreadable" in _one_error_line(result.stderr)


def test_a_copy_that_fails_half_way_leaves_nothing_behind(tmp_path, appliance_home):
    big = make_gguf(tmp_path / "big.gguf", {"general.license": "mit"}, tensors=40)  # 40 x 256 bytes of tensors...
    with big.open("ab") as handle:
        handle.write(b"\0" * (3 * 1024 * 1024))  # ...and padding after the data: a 3 MiB file
    run_appliance("models", "list")  # the data dir exists and the bundled model is registered first
    limit = 1024 * 1024  # files may not grow past 1 MiB: the copy hits the limit (EFBIG) like a full disk

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    result = subprocess.run(appliance_cmd() + ["models", "import", str(big), "--copy"], capture_output=True, text=True,
                            timeout=120, preexec_fn=small_files, env=dict(os.environ, NO_COLOR="1"))
    assert result.returncode == 1, result.stderr
    line = _one_error_line(result.stderr)
    assert "copying big.gguf into" in line and "File too large" in line and "nothing was left behind" in line
    assert sorted(p.name for p in (appliance_home / "models").iterdir() if "big" in p.name) == []
    assert "big" not in [row["name"] for row in json.loads(run_appliance("models", "list", "--json").stdout)]
    assert not (tmp_path / "big.gguf.manifest.json").exists()
    ok = run_appliance("models", "import", str(big), "--copy", "--json")  # with room it works
    assert ok.returncode == 0 and json.loads(ok.stdout)["path"] == str(appliance_home / "models" / "big.gguf")
    assert not [p for p in (appliance_home / "models").iterdir() if p.name.endswith(".partial")]


def test_a_chat_template_that_loops_is_refused_at_import(tmp_path, invoke):
    path = make_gguf(tmp_path / "loops.gguf", {"general.license": "mit"}, template=LOOP)
    result = invoke("models", "import", str(path), code=3)
    line = _one_error_line(result.stderr)
    assert "loops.gguf: not imported: its chat template is refused" in line and "loops more than" in line
    assert "loops" not in [row["name"] for row in invoke.json("models", "list")]
    assert not manifest.sidecar_path(path).exists()
    good = invoke.json("models", "import", str(make_gguf(tmp_path / "kind.gguf")))
    record = invoke.json("models", "show", good["name"])["record"]
    assert record["gguf"]["template_check"]["result"] == "ok"


@pytest.mark.slow
def test_verify_refuses_a_looping_template_imported_before_the_check(tmp_path, invoke, monkeypatch):
    """A model imported by an appliance that did not check templates yet (checker 0): verify checks it now."""
    from appliance.models import importer as importer_module
    from appliance.services import Services

    path = make_gguf(tmp_path / "old-loop.gguf", {"general.license": "mit"}, template=LOOP)
    with monkeypatch.context() as patched:
        patched.setattr(importer_module, "check_template",
                        lambda info, refusal: {"checker": 0, "result": "not checked", "sha256": None, "at": "then"})
        Services.create().models.register(path)
    result = invoke("models", "verify", "old-loop", code=3)
    assert "its chat template is refused" in _one_error_line(result.stderr)
    rows = {row["name"]: row for row in invoke.json("models", "list")}
    assert rows["old-loop"]["state"] == "quarantined" and rows["old-loop"]["last_check"]["result"] == "refused"
    asked = run_appliance("ask", "--model", "old-loop", "hello", timeout=120)
    assert asked.returncode == 3 and "quarantined" in asked.stderr  # never handed to the engine


def test_output_paths_that_do_not_exist(tmp_path, invoke):
    missing = tmp_path / "no" / "such" / "dir"
    result = invoke("models", "bom", "smollm2-135m-instruct", "-o", str(missing / "bom.json"), code=2)
    assert "is not a directory" in _one_error_line(result.stderr) and not missing.exists()
    result = invoke("models", "keygen", str(missing / "k.pem"), code=2)
    assert "create it first" in _one_error_line(result.stderr) and not (tmp_path / "no").exists()
    result = invoke("models", "keygen", "/nonexistent-appliance-test/k.pem", code=2)
    assert "/nonexistent-appliance-test is not a directory" in result.stderr
    assert not os.path.exists("/nonexistent-appliance-test")


def test_a_file_name_that_is_not_utf8(tmp_path, appliance_home):
    raw_dir = os.fsencode(tmp_path) + b"/caf\xe9-drive"
    os.mkdir(raw_dir)
    raw_path = raw_dir + b"/m\xff\x1b[2J.gguf"
    make_gguf(tmp_path / "plain.gguf", {"general.license": "mit"}).rename(os.fsdecode(raw_path))
    command = [os.fsencode(part) for part in appliance_cmd()]
    env = dict(os.environ, NO_COLOR="1")
    result = subprocess.run(command + [b"models", b"import", raw_path], capture_output=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode("utf-8")  # valid UTF-8: the bad bytes and the escape sequence are shown as escapes
    assert "registered m-2j" in out and "\x1b" not in out
    listed = subprocess.run(command + [b"models", b"list"], capture_output=True, timeout=60, env=env)
    line = next(ln for ln in listed.stdout.decode("utf-8").splitlines() if ln.startswith("m-2j"))
    assert "caf\\udce9-drive" in line
    as_json = subprocess.run(command + [b"models", b"show", b"m-2j", b"--json"], capture_output=True, timeout=60,
                             env=env)
    record = json.loads(as_json.stdout)["record"]  # exact: the bytes come back as they are on disk
    assert os.fsencode(record["source"]["original_path"]) == raw_path
    assert os.fsencode(record["file"]["name"]) == b"m\xff\x1b[2J.gguf"
    verified = subprocess.run(command + [b"models", b"verify", b"m-2j"], capture_output=True, timeout=60, env=env)
    assert verified.returncode == 0 and verified.stdout.decode("utf-8").startswith("ok")


@pytest.mark.parametrize("content, reason", [
    (b"{ this is not json", "is damaged"),
    (b"\xff\xfe\x00garbage", "is damaged"),
    (b'["a", "list"]', "is damaged (no table of models)"),
    (b'{"models": {"x": "not an entry"}}', "the entry for 'x' does not say where its file and record are"),
    (b'{"models": {"x": {"path": 3, "manifest": null}}}', "the entry for 'x' does not say where"),
    (b'{"version": 7, "models": {}}', "written by a newer appliance"),
])
def test_a_damaged_library_json_is_one_clear_line(appliance_home, invoke, content, reason):
    invoke("models", "list")
    (appliance_home / "library.json").write_bytes(content)
    assert reason in _one_error_line(invoke("models", "list", code=1).stderr)
    assert reason in _one_error_line(invoke("models", "verify", "--all", code=1).stderr)


def test_a_damaged_entry_can_be_removed(appliance_home, invoke):
    invoke("models", "list")
    data = json.loads((appliance_home / "library.json").read_text())
    data["models"]["broken"] = {"mode": "in-place"}
    (appliance_home / "library.json").write_text(json.dumps(data))
    assert "appliance models remove broken" in invoke("models", "list", code=1).stderr
    invoke("models", "remove", "broken", "--delete-file", code=2)
    assert "removed broken" in invoke("models", "remove", "broken").stdout
    assert [row["name"] for row in invoke.json("models", "list")] == ["smollm2-135m-instruct"]


def test_library_json_that_is_not_a_file(appliance_home, invoke):
    invoke("models", "list")
    (appliance_home / "library.json").unlink()
    os.mkfifo(appliance_home / "library.json")
    result = run_appliance("models", "list", timeout=60)
    assert result.returncode == 1 and "not a regular file" in _one_error_line(result.stderr)


def test_a_damaged_record_is_named_and_does_not_hide_the_others(tmp_path, invoke, appliance_home):
    invoke("models", "import", str(make_gguf(tmp_path / "hurt.gguf")))
    path = appliance_home / "models" / "hurt.manifest.json"
    record = json.loads(path.read_text())
    del record["file"]["sha256"]
    path.write_text(json.dumps(record))
    rows = {row["name"]: row for row in invoke.json("models", "list")}
    assert rows["hurt"]["state"] == "damaged" and "does not say which bytes it describes" in rows["hurt"]["error"]
    assert rows["smollm2-135m-instruct"]["state"] == "verified"
    assert "hurt                         damaged: manifest" in invoke("models", "list").stdout
    assert "re-import the model" in _one_error_line(invoke("models", "show", "hurt", code=1).stderr)
    assert "re-import the model" in _one_error_line(invoke("models", "verify", "hurt", code=1).stderr)
    checked = {row["name"]: row["result"] for row in invoke.json("models", "verify", "--all", code=1)}
    assert checked == {"hurt": "failed", "smollm2-135m-instruct": "ok"}
    path.write_text('{"schema": "appliance.model-manifest", "schema_version": 3, "file": [], "license": {}}')
    assert "has no 'file' section" in _one_error_line(invoke("models", "show", "hurt", code=1).stderr)
    invoke("models", "import", str(tmp_path / "hurt.gguf"))  # re-imported on purpose: whole again
    assert {row["name"]: row for row in invoke.json("models", "list")}["hurt"]["state"] == "verified"
