"""Which llama.cpp build runs, how (normal or safe mode), and what this machine's CPU offers.

The set-up (packaging/llama_build.py) writes `<venv>/appliance-engine.json`: the variant it installed (its CMake
flags and the CPU flags it requires) and any extra variants unpacked beside it (the installed variant's fallback,
x86_64-avx2 beside x86_64-avx512; a baseline build for CPUs without AVX2), each a folder that `LLAMA_CPP_LIB_PATH`
can point the engine process at.

Modes, tried in this order when the engine process dies while loading or before its first token:
  normal    the installed variant, llama.cpp's extra buffer types on (repacked weights: faster prompts)
  safe      the same build, extra buffer types off (no repacked or AMX weight layouts)
  fallback  the installed variant's fallback (avx2 for avx512), extra buffer types on, as it runs on its own CPUs
            (only when installed)
  baseline  the baseline variant's libraries, extra buffer types off (only when installed)
Each engine process also checks the CPU it runs on: a mode whose variant requires a flag this CPU lacks (an
environment copied to an older machine) is left out, so an AVX-512 build is never started where it would die with
SIGILL. What worked is remembered per CPU, build and model in `engine-state.json`, so the next start goes
straight to it.
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
MODES = ("normal", "safe", "fallback", "baseline")
NOTABLE_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq",
                 "avx512bw", "avx512_vnni", "avx512_bf16", "avx512vbmi", "avx_vnni", "amx_tile", "amx_int8",
                 "amx_bf16", "neon", "asimd", "sve", "i8mm")


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

    @property
    def fallback(self) -> str | None:
        """The variant the set-up installed beside the primary as its fallback (llama-build.toml `fallback`)."""
        name = (self.variants.get(self.primary) or {}).get("fallback")
        return name if name and name != self.primary and name in self.variants else None

    def _extra_lib(self, name: str | None) -> str | None:
        folder = (self.variants.get(name) or {}).get("lib_path") if name and name != self.primary else None
        return folder if folder and Path(folder).is_dir() else None

    def baseline_name(self) -> str | None:
        """An installed extra variant without AVX2, when there is one."""
        return next((name for name in self.variants if "baseline" in name and self._extra_lib(name)), None)

    def baseline_lib(self) -> str | None:
        """The library folder of an installed extra variant without AVX2, when there is one."""
        return self._extra_lib(self.baseline_name())

    def variant(self, mode: str) -> str | None:
        """The variant a mode runs (None: not installed)."""
        if mode in ("normal", "safe"):
            return self.primary
        if mode == "fallback":
            return self.fallback if self._extra_lib(self.fallback) else None
        if mode == "baseline":
            return self.baseline_name()
        return None

    def missing_flags(self, name: str, cpu: Cpu | None) -> list[str]:
        """The CPU flags variant `name` requires and `cpu` lacks; none when the CPU's flags are unknown (no
        /proc/cpuinfo) or the record does not say what the variant requires."""
        if cpu is None or not cpu.flags:
            return []
        return [flag for flag in (self.variants.get(name) or {}).get("requires") or [] if flag not in cpu.flags]

    def modes(self, cpu: Cpu | None = None) -> list[str]:
        """The modes to try, in order: installed, and (given the CPU) whose variant this CPU can run. When the CPU
        can run none of them (its flags misread), every installed mode stays, so the canary decides."""
        installed = [mode for mode in MODES if self.variant(mode) is not None]
        runnable = [mode for mode in installed if not self.missing_flags(self.variant(mode), cpu)]  # type: ignore
        return runnable or installed

    def lib_path(self, mode: str) -> str | None:
        """LLAMA_CPP_LIB_PATH for a mode: None for the primary (the libraries inside the installed package)."""
        return self._extra_lib(self.variant(mode)) if mode in ("fallback", "baseline") else None

    @staticmethod
    def safe(mode: str) -> bool:
        """Whether a mode turns llama.cpp's extra buffer types (repacked weight layouts) off."""
        return mode in ("safe", "baseline")

    def describe(self, mode: str) -> str:
        return self.variant(mode) or ("baseline" if mode == "baseline" else self.primary)

    def reason(self, mode: str, cpu: Cpu) -> str:
        """Why this mode's variant runs on this CPU, in one clause for `doctor`."""
        name = self.describe(mode)
        if not self.recorded:
            return "no build record in this environment (installed outside the set-up)"
        required: list[str] = list((self.variants.get(name) or {}).get("requires") or [])
        needs = [flag for flag in required if flag.startswith(("avx512", "avx2", "amx"))] or required
        if not cpu.flags:
            has = f"this CPU's flags are unknown (no /proc/cpuinfo), so not checked against {' '.join(needs)}"
        else:
            has = f"the CPU has every flag it requires: {' '.join(needs)}" if needs else "it requires no CPU flags"
        if mode in ("normal", "safe"):
            return f"the set-up's choice for this CPU; {has}"
        skipped = self.missing_flags(self.primary, cpu)
        if skipped:
            return f"{self.primary} left out: the CPU lacks {' '.join(skipped)}; {name}: {has}"
        return f"the fallback of {self.primary}; {has}"


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
