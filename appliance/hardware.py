"""What this machine can do: memory, cores -> threads, and whether a model fits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import NotEnoughMemory

MIB = 1024 * 1024


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                values[name] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def _cgroup_limit() -> int | None:
    for candidate in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(candidate).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < (1 << 60):
            return int(raw)
    return None


def _physical_cores(cpus: set[int]) -> int | None:
    """Distinct physical cores among the CPUs this process may run on (SMT siblings counted once)."""
    cores = set()
    for cpu in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            siblings = (base / "core_cpus_list").read_text().strip()
        except OSError:
            try:
                siblings = (base / "thread_siblings_list").read_text().strip()
            except OSError:
                return None
        cores.add(siblings)
    return len(cores) or None


@dataclass(frozen=True)
class Hardware:
    total_ram: int
    available_ram: int
    cores: int  # logical CPUs this process may use
    physical_cores: int = 0  # 0: unknown

    @classmethod
    def detect(cls) -> "Hardware":
        info = _meminfo()
        total = info.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        available = info.get("MemAvailable", total)
        limit = _cgroup_limit()
        if limit is not None:
            total, available = min(total, limit), min(available, limit)
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        physical = _physical_cores(cpus) or 0
        return cls(total_ram=total, available_ram=available, cores=len(cpus), physical_cores=min(physical, len(cpus)))

    def threads(self, configured: int = 0) -> int:
        """Threads for llama.cpp: the owner's number, else one per physical core (SMT siblings only contend)."""
        if configured > 0:
            return configured
        return max(1, self.physical_cores or self.cores)


def estimate_model_ram(file_size: int, context: int, n_layer: int | None = None, n_embd: int | None = None) -> int:
    """Bytes a GGUF needs loaded: weights (mmap'd, but they get paged in) + KV cache (f16) + compute buffers."""
    if n_layer and n_embd:
        kv = 2 * 2 * context * n_layer * n_embd  # K and V, 2 bytes each, per layer and token
    else:
        kv = context * 32 * 1024  # header without the shape: a generous 32 KiB per token
    return int(file_size + kv + 64 * MIB)


def check_fits(need: int, what: str, ram_limit_mb: int = 0, hardware: Hardware | None = None) -> None:
    hw = hardware or Hardware.detect()
    available = hw.available_ram
    if ram_limit_mb > 0:
        available = min(available, ram_limit_mb * MIB)
    if need > available:
        source = f"the configured limit of {ram_limit_mb} MiB" if ram_limit_mb > 0 and ram_limit_mb * MIB <= hw.available_ram else "available memory"
        raise NotEnoughMemory(
            f"{what} needs about {need // MIB} MiB but {source} is {available // MIB} MiB; "
            "choose a smaller model, lower [model] context in config.toml, or close other programs"
        )
