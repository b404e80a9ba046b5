"""The doctor's checks of the model side: the engine canary and which shipped pack fits this machine."""

from __future__ import annotations

from appliance.doctor.checks import Check


def engine_canary(engine) -> Check:
    """Load the default model in the engine process and generate a few tokens: `doctor` never says "ok" on a
    machine where `ask` crashes."""
    from appliance.errors import ApplianceError

    try:
        report = engine.canary()
    except ApplianceError as exc:
        return Check("engine", False, str(exc), exc.exit_code)
    detail = (f"{report['model']} answered: {report['tokens']} tokens at {report['tokens_per_s'] or 0:.1f} tokens/s "
              f"in {report['mode']} mode; llama.cpp build {report['variant']} ({report['reason']}) using "
              f"{' '.join(report['features']) or 'no SIMD'}; CPU {report['cpu']} "
              f"({' '.join(report['cpu_flags']) or 'flags unknown'}); {report['threads']} threads")
    if report.get("notice"):
        detail += f"; {report['notice']}"
    return Check("engine", True, detail)


def pack_advice(default_name: str, hardware=None) -> Check:
    """Which shipped model packs fit this machine, and how to get the better one (advice, never a failure)."""
    from appliance.models import packs
    from appliance.system.hardware import Hardware

    hw = hardware or Hardware.detect()
    cores, ram_gib = hw.physical_cores or hw.cores, hw.total_ram / 2**30
    fits = [pack for pack in packs.SPLIT_PACKS.values() if pack.recommended_cores
            and cores >= pack.recommended_cores and ram_gib >= pack.recommended_ram_gib]
    best = max(fits, key=lambda pack: pack.size, default=None)
    machine = f"{cores} cores, {ram_gib:.0f} GiB RAM"
    if best is None:
        return Check("model choice", True, f"default {default_name}; no shipped pack is recommended for this "
                                           f"machine ({machine}): keep the small default")
    if best.name == default_name:
        return Check("model choice", True, f"default {default_name}, the best pack for this machine ({machine})")
    step = ("" if best.installed else f"`appliance models install-pack {best.name}` (online), then ")
    return Check("model choice", True, f"default {default_name}; this machine ({machine}) fits {best.name}, which "
                                       f"answers better: {step}`appliance models default {best.name}`")
