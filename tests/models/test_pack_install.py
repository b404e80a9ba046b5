"""Split packs: pieces in several data wheels, fetched hash-pinned by pip, joined into one verified file.

The wheels here are real wheels built by the test from the real SmolLM2 file, cut in three, and pip really
fetches them (from a folder, as from a USB bundle: --no-index --find-links)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from appliance.errors import ApplianceError, IntegrityError
from appliance.models import pack_install, packs
from tests.conftest import run_appliance


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
