"""Build llama-cpp-python portably, from the flags in packaging/llama-build.toml. Standard library only.

Used by scripts/_setup.sh (with the venv's python), scripts/build-engine and the USB bundle builder:

  python packaging/llama_build.py choose              the variant for this CPU (first whose flags it has)
  python packaging/llama_build.py fallback VARIANT    the variant the set-up installs beside it, if any
  python packaging/llama_build.py cmake-args VARIANT  the CMAKE_ARGS of a variant
  python packaging/llama_build.py wheel VARIANT       build (once) and print the wheel's path
  python packaging/llama_build.py cached VARIANT      the wheel's path if it is built already, else nothing
  python packaging/llama_build.py dirname VARIANT     <variant>-<flags key>: the folder name for its libraries
  python packaging/llama_build.py extract VARIANT DIR unpack a variant's shared libraries into DIR
  python packaging/llama_build.py record VARIANT      write the engine record the appliance reads at run time
  python packaging/llama_build.py add-extra VARIANT DIR
                                                      record an extra variant's libraries (safe mode's last step)
  python packaging/llama_build.py describe VARIANT    one line on which CPUs a variant serves
  python packaging/llama_build.py bench-tool VARIANT  build llama.cpp's llama-bench with the variant's flags

Wheels are kept under ~/.cache/appliance/llama-wheels/<variant>-<key>/, keyed by the flags, the llama-cpp-python
version, the Python tag and the machine: pip's own wheel cache is keyed by the sdist only and would hand back a
wheel built with other flags (a native one, say), so it is bypassed (--no-cache-dir) for this one build.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "llama-build.toml"
RECORD_NAME = "appliance-engine.json"  # under sys.prefix of the venv


def load(path: Path = CONFIG) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def machine() -> str:
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux names them ('flags' on x86, 'Features' on ARM); empty when unknown."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def choose(config: dict, flags: set[str], arch: str) -> str:
    for name, variant in config["variant"].items():
        if variant["arch"] == arch and set(variant["requires"]) <= flags:
            return name
    raise SystemExit(f"no llama.cpp build variant in {CONFIG.name} fits this CPU ({arch}); "
                     f"add one without -march=native")


def fallback(config: dict, name: str) -> str | None:
    """The variant installed beside `name` for the engine to fall back to (x86_64-avx2 beside x86_64-avx512): what
    runs when the AVX-512 build crashes on a CPU that claims the flags (a hypervisor that hides the registers)."""
    return config["variant"][name].get("fallback")


def cmake_args(config: dict, name: str) -> list[str]:
    try:
        variant = config["variant"][name]
    except KeyError:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(config['variant'])}") from None
    return [*config["common"], *variant["cmake"]]


def key(config: dict, name: str) -> str:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{sysconfig.get_platform()}"
    material = json.dumps([config["llama_cpp_python"], cmake_args(config, name), tag], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("APPLIANCE_BUILD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "appliance")
    return Path(base) / "llama-wheels"


def wheel_dir(config: dict, name: str) -> Path:
    return cache_root() / f"{name}-{key(config, name)}"


def find_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("llama_cpp_python-*.whl")) if folder.is_dir() else []
    return wheels[-1] if wheels else None


def build_wheel(config: dict, name: str) -> Path:
    folder = wheel_dir(config, name)
    found = find_wheel(folder)
    if found:
        return found
    scratch = folder.with_name(folder.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(cmake_args(config, name))
    env["FORCE_CMAKE"] = "1"
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    env.pop("SOURCE_DATE_EPOCH", None)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--progress-bar", "off",
               "--no-binary", "llama-cpp-python", "-w", str(scratch),
               f"llama-cpp-python=={config['llama_cpp_python']}"]
    subprocess.run(command, env=env, check=True)
    built = find_wheel(scratch)
    if built is None:
        raise SystemExit(f"pip wheel made no llama-cpp-python wheel in {scratch}")
    (scratch / "BUILD.json").write_text(json.dumps({"variant": name, "cmake_args": cmake_args(config, name),
                                                    "llama_cpp_python": config["llama_cpp_python"]}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    return folder / built.name


def sdist(config: dict) -> Path:
    """The llama-cpp-python source archive (from the package index, kept in the build cache)."""
    folder = cache_root().parent / "sdist"
    name = f"llama_cpp_python-{config['llama_cpp_python']}.tar.gz"
    if not (folder / name).exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--progress-bar", "off", "-d", str(folder), f"llama-cpp-python=={config['llama_cpp_python']}"],
                       check=True)
    return folder / name


def bench_tool(config: dict, name: str) -> Path:
    """llama.cpp's own `llama-bench`, built from the same sources with the same flags as the variant's wheel, for
    `scripts/bench --compare-native`. Kept in the build cache; never committed."""
    import tarfile

    folder = cache_root().parent / "llama-bench" / f"{name}-{key(config, name)}"
    binary = folder / "bin" / "llama-bench"
    if binary.exists():
        return binary
    source = folder / "src"
    if not (source / "CMakeLists.txt").exists():
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        prefix = f"llama_cpp_python-{config['llama_cpp_python']}/vendor/llama.cpp/"
        with tarfile.open(sdist(config)) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
            for member in members:
                member.name = member.name[len(prefix):]
            archive.extractall(source, members=[m for m in members if m.name], filter="data")
    build = folder / "build"
    args = [a for a in cmake_args(config, name) if not a.startswith("-DLLAVA_BUILD")]
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF", *args], check=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(os.cpu_count() or 2)],
                   check=True)
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "bin" / "llama-bench", binary)
    return binary


def extract_libs(wheel: Path, dest: Path) -> None:
    """Unpack llama_cpp/lib/* from a wheel into dest (a folder LLAMA_CPP_LIB_PATH can point at)."""
    scratch = dest.with_name(dest.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith("llama_cpp/lib/") and not member.endswith("/"):
                target = scratch / Path(member).name
                with archive.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    shutil.rmtree(dest, ignore_errors=True)
    scratch.rename(dest)


def write_record(config: dict, primary: str, extras: dict[str, str], prefix: Path) -> Path:
    """What the appliance reads at run time: which variant is installed, with which flags, and where extra
    variants' libraries live. Extras already recorded are kept while their folders exist."""
    path = prefix / RECORD_NAME
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    variants = {primary: {"lib_path": None}}
    for name, entry in (old.get("variants") or {}).items():
        folder = entry.get("lib_path") if isinstance(entry, dict) else None
        current = name in config["variant"] and Path(folder or "").name == f"{name}-{key(config, name)}"
        if name != primary and folder and Path(folder).is_dir() and current:  # built with today's flags
            variants[name] = {"lib_path": folder}
    for name, folder in extras.items():
        if name != primary:
            variants[name] = {"lib_path": str(Path(folder).resolve())}
    for name in variants:
        variant = config["variant"][name]
        variants[name] |= {"cmake_args": cmake_args(config, name), "requires": variant["requires"],
                           "description": variant["description"], "fallback": variant.get("fallback")}
    record = {"llama_cpp_python": config["llama_cpp_python"], "primary": primary, "variants": variants}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def primary_of(prefix: Path) -> str | None:
    try:
        return json.loads((prefix / RECORD_NAME).read_text())["primary"]
    except (OSError, ValueError, KeyError):
        return None


def main(argv: list[str]) -> int:
    config = load()
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "choose":
        print(choose(config, cpu_flags(), machine()))
    elif command == "fallback":
        print(fallback(config, rest[0]) or "")
    elif command == "cmake-args":
        print(" ".join(cmake_args(config, rest[0])))
    elif command == "dirname":
        print(f"{rest[0]}-{key(config, rest[0])}")
    elif command == "cached":
        print(find_wheel(wheel_dir(config, rest[0])) or "")
    elif command == "wheel":
        print(build_wheel(config, rest[0]))
    elif command == "extract":
        extract_libs(build_wheel(config, rest[0]), Path(rest[1]))
    elif command == "record":
        print(write_record(config, rest[0], {}, Path(sys.prefix)))
    elif command == "add-extra":
        primary = primary_of(Path(sys.prefix))
        if primary is None:
            raise SystemExit("no engine record in this environment yet; run ./scripts/run or ./scripts/test first")
        print(write_record(config, primary, {rest[0]: rest[1]}, Path(sys.prefix)))
    elif command == "bench-tool":
        print(bench_tool(config, rest[0]))
    elif command == "describe":
        print(config["variant"][rest[0]]["description"])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
