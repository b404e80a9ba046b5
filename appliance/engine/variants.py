"""Which llama.cpp build runs, how (normal or safe mode), and what this machine's CPU offers.

The set-up (packaging/llama_build.py) writes `<venv>/appliance-engine.json`: the variant it installed (its CMake
flags) and any extra variants unpacked beside it (a baseline build for CPUs without AVX2), each a folder that
`LLAMA_CPP_LIB_PATH` can point the engine process at.

Modes, tried in this order when the engine process dies while loading or before its first token:
  normal    the installed variant, llama.cpp's extra buffer types on (repacked weights: faster prompts)
  safe      the same build, extra buffer types off (no repacked or AMX weight layouts)
  baseline  the baseline variant's libraries, extra buffer types off (only when installed)
What worked is remembered per CPU, build and model in `engine-state.json`, so the next start goes straight to it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.paths import atomic_write_text

RECORD_NAME = "appliance-engine.json"
MODES = ("normal", "safe", "baseline")
NOTABLE_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512_vnni", "avx512_bf16",
                 "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve", "i8mm")


@dataclass(frozen=True)
class Cpu:
    model: str
    flags: frozenset[str]
    arch: str

    @classmethod
    def detect(cls, cpuinfo: Path = Path("/proc/cpuinfo")) -> "Cpu":
        model = ""
        flags: set[str] = set()
        try:
            text = cpuinfo.read_text(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name in ("model name", "Model", "Hardware") and not model:
                model = value.strip()
            elif name in ("flags", "Features") and not flags:
                flags = set(value.split())
        arch = platform.machine().lower()
        arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
        return cls(model=model or platform.processor() or arch, flags=frozenset(flags), arch=arch)

    @property
    def notable(self) -> list[str]:
        return [flag for flag in NOTABLE_FLAGS if flag in self.flags]

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.arch}|{self.model}|{' '.join(sorted(self.flags))}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Build:
    """What the set-up recorded about the installed llama.cpp, or an 'unrecorded' stand-in."""

    primary: str
    variants: dict
    llama_cpp_python: str
    recorded: bool

    @classmethod
    def installed(cls, prefix: Path | None = None) -> "Build":
        path = Path(prefix or sys.prefix) / RECORD_NAME
        try:
            data = json.loads(path.read_text())
            return cls(primary=str(data["primary"]), variants=dict(data["variants"]),
                       llama_cpp_python=str(data.get("llama_cpp_python", "")), recorded=True)
        except (OSError, ValueError, KeyError, TypeError):
            return cls(primary="unrecorded", variants={}, llama_cpp_python="", recorded=False)

    @property
    def key(self) -> str:
        return f"{self.primary}-{self.llama_cpp_python or 'x'}"

    def baseline_lib(self) -> str | None:
        """The library folder of an installed extra variant without AVX2, when there is one."""
        for name, variant in self.variants.items():
            if name != self.primary and "baseline" in name and variant.get("lib_path"):
                if Path(variant["lib_path"]).is_dir():
                    return variant["lib_path"]
        return None

    def modes(self) -> list[str]:
        return ["normal", "safe"] + (["baseline"] if self.baseline_lib() else [])

    def lib_path(self, mode: str) -> str | None:
        return self.baseline_lib() if mode == "baseline" else None

    def describe(self, mode: str) -> str:
        name = next((n for n in self.variants if "baseline" in n), "baseline") if mode == "baseline" else self.primary
        return name


class EngineState:
    """engine-state.json under APPLIANCE_HOME: the mode that works for (CPU, build, model)."""

    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def key(cpu: Cpu, build: Build, model_sha256: str) -> str:
        return f"{cpu.key}/{build.key}/{model_sha256[:16]}"

    def mode(self, key: str) -> dict | None:
        entry = self._read().get("modes", {}).get(key)
        return entry if isinstance(entry, dict) and entry.get("mode") in MODES else None

    def remember(self, key: str, mode: str, reason: str) -> None:
        data = self._read()
        data.setdefault("modes", {})[key] = {"mode": mode, "reason": reason, "when": time.strftime("%Y-%m-%d %H:%M")}
        try:
            atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")
        except OSError:
            pass  # a full disk must not turn a working answer into an error; the retry just happens again

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def forget(self, key: str) -> None:
        data = self._read()
        if data.get("modes", {}).pop(key, None) is not None:
            try:
                atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")
            except OSError:
                pass
