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
        limited = ram_limit_mb > 0 and ram_limit_mb * MIB <= hw.available_ram
        source = f"the configured limit of {ram_limit_mb} MiB" if limited else "available memory"
        raise NotEnoughMemory(
            f"{what} needs about {need // MIB} MiB but {source} is {available // MIB} MiB; "
            "choose a smaller model, lower [model] context in config.toml, or close other programs"
        )


# -- what fits this machine (the doctor's "hardware fit") ----------------------------------------------------------
GIB = 1024**3


@dataclass(frozen=True)
class SizeAdvice:
    """One row of the built-in table: machines with at least `min_ram_gib` of RAM run these models comfortably."""

    min_ram_gib: float  # MemTotal as the kernel reports it (a "8 GB" machine shows about 7.6 GiB)
    machine: str
    params: str
    quants: str
    context: int
    repos: tuple[str, ...]  # hub repo ids, for when the owner is online (`appliance models download REPO FILE`)


# Q4_K_M is about 0.6 GB per billion parameters; the rows keep the weights near half the RAM, leaving room for the
# KV cache at the context shown, the knowledge base's embedder and the system.
SIZE_TABLE = (
    SizeAdvice(0, "under 4 GB", "0.1-0.5B", "Q4_K_M or Q8_0", 2048,
               ("HuggingFaceTB/SmolLM2-360M-Instruct-GGUF", "Qwen/Qwen2.5-0.5B-Instruct-GGUF")),
    SizeAdvice(3.5, "4 GB", "1-2B", "Q4_K_M", 4096,
               ("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF")),
    SizeAdvice(7.0, "8 GB", "3-4B", "Q4_K_M", 8192,
               ("Qwen/Qwen2.5-3B-Instruct-GGUF", "bartowski/Llama-3.2-3B-Instruct-GGUF",
                "bartowski/Phi-3.5-mini-instruct-GGUF")),
    SizeAdvice(14.0, "16 GB", "7-8B", "Q4_K_M or Q5_K_M", 8192,
               ("Qwen/Qwen2.5-7B-Instruct-GGUF", "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF")),
    SizeAdvice(28.0, "32 GB", "12-14B (Q6_K), up to 24B at Q4_K_M", "Q4_K_M to Q6_K", 16384,
               ("Qwen/Qwen2.5-14B-Instruct-GGUF", "bartowski/Mistral-Small-24B-Instruct-2501-GGUF")),
)


def size_advice(total_ram: int) -> SizeAdvice:
    """The largest row of SIZE_TABLE this much RAM reaches."""
    gib = total_ram / GIB
    return [row for row in SIZE_TABLE if gib >= row.min_ram_gib][-1]


def max_context(file_size: int, available: int, n_layer: int | None, n_embd_kv: int | None) -> int:
    """The longest context (tokens) whose estimate_model_ram fits in `available` bytes; 0 when the weights alone
    do not fit."""
    room = available - file_size - 64 * MIB
    if room <= 0:
        return 0
    per_token = 2 * 2 * n_layer * n_embd_kv if n_layer and n_embd_kv else 32 * 1024
    return int(room // per_token)


def free_disk(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing parent); None when unknown."""
    import shutil

    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None
