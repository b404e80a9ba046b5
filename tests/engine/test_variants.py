"""Which llama.cpp build a CPU gets, from its /proc/cpuinfo text: at set-up (packaging/llama_build.py choose), in the
USB installer (bundle_tool.py variants) and per engine process (appliance/engine/variants.py Build.modes).

The cpuinfo texts are real CPUs' flag lists, cut to the flags that matter here plus a few that do not.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import pytest

from appliance.engine.variants import Build, Cpu

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging"))
import bundle_tool  # noqa: E402  (packaging/ is scripts, not a package)
import llama_build  # noqa: E402

CONFIG = llama_build.load()
AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt aes avx f16c fma bmi1 avx2 bmi2"
AVX512 = "avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni"
CPUS = {
    # AMD EPYC Zen 5 (this CI machine): every AVX-512 extension, BF16 and VBMI too, no AMX
    "zen5": f"{AVX2} {AVX512} avx512ifma avx512_bf16 avx512vbmi avx512_vbmi2 avx512_bitalg avx512_vpopcntdq avx_vnni",
    # Intel Ice Lake laptop: VNNI and VBMI, no BF16: the variant does not require BF16, so it still fits
    "icelake": f"{AVX2} {AVX512} avx512ifma avx512vbmi avx512_vbmi2 avx512_bitalg avx512_vpopcntdq",
    # Intel Sapphire Rapids Xeon: AMX too (never used: every build has AMX off)
    "sapphirerapids": f"{AVX2} {AVX512} avx512_bf16 avx512vbmi amx_tile amx_int8 amx_bf16",
    # Intel Skylake-SP Xeon: AVX-512 F/CD/VL/DQ/BW but no VNNI
    "skylakex": f"{AVX2} avx512f avx512cd avx512vl avx512dq avx512bw",
    # Intel Alder Lake laptop: AVX2 and the 256-bit AVX-VNNI, no AVX-512
    "alderlake": f"{AVX2} avx_vnni",
    "haswell": AVX2,
    # Intel Nehalem: SSE4.2 only
    "nehalem": "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt",
}
EXPECTED = {"zen5": "x86_64-avx512", "icelake": "x86_64-avx512", "sapphirerapids": "x86_64-avx512",
            "skylakex": "x86_64-avx2", "alderlake": "x86_64-avx2", "haswell": "x86_64-avx2",
            "nehalem": "x86_64-baseline"}

# What each GGML_* switch lets the compiler emit (ggml/src/ggml-cpu/CMakeLists.txt, GCC branch), as cpuinfo names it.
EMITS = {"GGML_SSE42": ["sse4_2"], "GGML_AVX": ["avx"], "GGML_AVX2": ["avx2"], "GGML_FMA": ["fma"],
         "GGML_F16C": ["f16c"], "GGML_BMI2": ["bmi2"],
         "GGML_AVX512": ["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
         "GGML_AVX512_VNNI": ["avx512_vnni"], "GGML_AVX512_BF16": ["avx512_bf16"], "GGML_AVX512_VBMI": ["avx512vbmi"],
         "GGML_AVX_VNNI": ["avx_vnni"], "GGML_AMX_TILE": ["amx_tile"], "GGML_AMX_INT8": ["amx_int8"],
         "GGML_AMX_BF16": ["amx_bf16"]}


def setup_choice(flags: set[str] | frozenset[str], arch: str = "x86_64") -> str:
    """The variant the set-up builds for a CPU with these flags."""
    return llama_build.choose(CONFIG, set(flags), arch)


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    processor = f"processor\t: {{n}}\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n"
    path.write_text(processor.format(n=0) + processor.format(n=1))
    return path


@pytest.mark.parametrize("name", CPUS)
def test_the_set_up_picks_the_variant_from_the_cpu_flags(tmp_path, name):
    flags = llama_build.cpu_flags(cpuinfo(tmp_path, CPUS[name]))
    assert setup_choice(flags) == EXPECTED[name]


@pytest.mark.parametrize("flag", CONFIG["variant"]["x86_64-avx512"]["requires"])
def test_avx512_only_when_every_flag_it_requires_is_present(tmp_path, flag):
    """Take away any one flag the avx512 variant requires and the CPU gets avx2 (or baseline, without AVX2's)."""
    flags = llama_build.cpu_flags(cpuinfo(tmp_path, " ".join(f for f in CPUS["zen5"].split() if f != flag)))
    if flag == "sse4_2":  # below every x86 variant: a clear refusal, never a build that dies with SIGILL
        with pytest.raises(SystemExit, match="no llama.cpp build variant"):
            setup_choice(flags)
        return
    assert setup_choice(flags) == ("x86_64-avx2" if flag.startswith("avx512") else "x86_64-baseline")


def test_requires_names_exactly_what_each_build_turns_on():
    """A variant is never chosen on a CPU that lacks an instruction set its build uses, and never refused for one
    it does not use: its `requires` is the set of flags its CMake switches enable (the last -D of a name wins)."""
    for name, variant in CONFIG["variant"].items():
        if variant["arch"] != "x86_64":
            continue
        switches = {}
        for arg in llama_build.cmake_args(CONFIG, name):
            key, _, value = arg.removeprefix("-D").partition("=")
            switches[key] = value
        enabled = {flag for key, emits in EMITS.items() if switches.get(key) == "ON" for flag in emits}
        assert enabled == set(variant["requires"]), name
        assert all(switches[key] == "OFF" for key in ("GGML_NATIVE", "GGML_AMX_TILE", "GGML_AMX_INT8",
                                                      "GGML_AMX_BF16")), name
        fallback = variant.get("fallback")
        if fallback:  # a fallback runs everywhere its variant runs
            assert set(CONFIG["variant"][fallback]["requires"]) < set(variant["requires"]), name


def test_a_machine_without_avx512_builds_exactly_what_it_built_before():
    """One build, the avx2 one, with the flags (hence the cache key) it always had: no second build, no rebuild."""
    assert llama_build.fallback(CONFIG, "x86_64-avx2") is None
    assert llama_build.cmake_args(CONFIG, "x86_64-avx2") == [  # the flags the cache key is made of, as before
        "-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF", "-DGGML_AMX_TILE=OFF",
        "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF", "-DGGML_AVX512=OFF", "-DGGML_AVX512_VBMI=OFF",
        "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF", "-DGGML_AVX_VNNI=OFF", "-DGGML_CUDA=OFF",
        "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF", "-DGGML_BLAS=OFF", "-DGGML_RPC=OFF", "-DLLAVA_BUILD=OFF",
        "-DGGML_SSE42=ON", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON"]
    assert llama_build.fallback(CONFIG, "x86_64-avx512") == "x86_64-avx2"


@pytest.mark.parametrize("name", CPUS)
def test_the_usb_installer_lists_the_builds_this_cpu_runs_best_first(tmp_path, monkeypatch, name, capsys):
    manifest = tmp_path / "BUNDLE.json"
    variants = {n: {"arch": v["arch"], "requires": v["requires"]} for n, v in CONFIG["variant"].items()}
    manifest.write_text(json.dumps({"engine": {"variants": variants}}))
    monkeypatch.setattr(bundle_tool, "machine", lambda: "x86_64")
    monkeypatch.setattr(bundle_tool, "cpu_flags", lambda: llama_build.cpu_flags(cpuinfo(tmp_path, CPUS[name])))
    assert bundle_tool.main(["variants", str(manifest)]) == 0
    listed = capsys.readouterr().out.split()
    assert listed[0] == EXPECTED[name]
    order = [n for n in CONFIG["variant"] if n.startswith("x86_64")]
    assert listed == order[order.index(EXPECTED[name]):]


def installed_build(tmp_path: Path, extras: tuple[str, ...] = ("x86_64-avx2", "x86_64-baseline")) -> Build:
    """An environment as the set-up leaves it on an AVX-512 machine: the record, and the extras' library folders."""
    folders = {}
    for name in extras:
        folder = tmp_path / "lib" / "appliance-llama" / f"{name}-{llama_build.key(CONFIG, name)}"
        folder.mkdir(parents=True)
        folders[name] = str(folder)
    llama_build.write_record(CONFIG, "x86_64-avx512", folders, tmp_path)
    return Build.installed(tmp_path)


def engine_cpu(tmp_path: Path, name: str, monkeypatch) -> Cpu:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    return Cpu.detect(cpuinfo(tmp_path, CPUS[name]))


@pytest.mark.parametrize("name, modes", [
    ("zen5", ["normal", "safe", "fallback", "baseline"]),
    ("icelake", ["normal", "safe", "fallback", "baseline"]),
    # the same environment on a CPU without the AVX-512 the primary needs: it never starts (no SIGILL)
    ("skylakex", ["fallback", "baseline"]),
    ("haswell", ["fallback", "baseline"]),
    ("nehalem", ["baseline"]),
])
def test_each_engine_process_skips_builds_this_cpu_cannot_run(tmp_path, monkeypatch, name, modes):
    build = installed_build(tmp_path)
    cpu = engine_cpu(tmp_path, name, monkeypatch)
    assert build.modes(cpu) == modes
    assert [build.describe(mode) for mode in modes] == [
        {"normal": "x86_64-avx512", "safe": "x86_64-avx512", "fallback": "x86_64-avx2",
         "baseline": "x86_64-baseline"}[mode] for mode in modes]
    assert build.lib_path(modes[0]) == (None if modes[0] == "normal" else build.variants[build.describe(modes[0])]
                                        ["lib_path"])
    if name == "haswell":
        assert build.reason("fallback", cpu).startswith("x86_64-avx512 left out: the CPU lacks avx512f avx512cd")


def test_without_the_fallback_installed_the_avx512_build_still_has_safe_mode(tmp_path, monkeypatch):
    build = installed_build(tmp_path, extras=())
    assert build.fallback is None
    assert build.modes(engine_cpu(tmp_path, "zen5", monkeypatch)) == ["normal", "safe"]
    assert build.safe("safe") and build.safe("baseline") and not build.safe("fallback") and not build.safe("normal")


def test_unknown_cpu_flags_leave_every_installed_mode_to_the_canary(tmp_path, monkeypatch):
    build = installed_build(tmp_path)
    unknown = Cpu.detect(tmp_path / "no-cpuinfo")
    assert unknown.flags == frozenset()
    assert build.modes(unknown) == ["normal", "safe", "fallback", "baseline"]
    assert "flags are unknown" in build.reason("normal", unknown)
