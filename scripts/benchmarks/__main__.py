"""Benchmark runner: each module here with a `run()` function is one benchmark; it prints its own figures.

Every benchmark runs in a fresh Python process, so one cannot skew another (a large parent inflates the peak RSS
its children report, and warm caches flatter later timings).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def run_one(name: str) -> None:
    sys.path.insert(0, str(HERE.parent.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"== {name}: {(module.__doc__ or '').strip().splitlines()[0]}", flush=True)
    started = time.perf_counter()
    module.run()
    print(f"   ({time.perf_counter() - started:.1f} s)\n", flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        run_one(argv[1])
        return 0
    if "--compare-native" in argv:  # the model benchmark also runs llama.cpp's llama-bench, same flags, same files
        argv = [arg for arg in argv if arg != "--compare-native"]
        os.environ["APPLIANCE_BENCH_COMPARE_NATIVE"] = "1"
        argv = argv or ["model"]
    if "--replicas" in argv:  # `serve --replicas N`: the serve benchmark with N replicas behind HAProxy
        at = argv.index("--replicas")
        os.environ["BENCH_SERVE_REPLICAS"] = argv[at + 1] if at + 1 < len(argv) else "2"
        argv = argv[:at] + argv[at + 2:]
        argv = argv or ["serve"]
    names = argv or sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    unknown = [name for name in names if not (HERE / f"{name}.py").exists()]
    if unknown:
        print(f"no benchmark named {unknown[0]!r}; known: "
              + ", ".join(sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))), file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        failed += subprocess.run([sys.executable, __file__, "--one", name]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
