"""Models through `appliance ask`: verify, load, first token, tokens/s, prompt rate, peak RSS (both processes).

With --compare-native (or APPLIANCE_BENCH_COMPARE_NATIVE=1), llama.cpp's own `llama-bench`, built from the same
llama-cpp-python sources with the same flags (packaging/llama_build.py bench-tool), runs on the same files in the
same run (interleaved with the appliance's runs, so both see the same load on a shared machine), and the ratios
are printed: generation through the appliance against llama-bench's tg128, from an empty context and after as many
tokens as the appliance's prompt held (the attention work per token grows with the context); prompt processing
against pp512; the time to first token of a grounded question against prompt tokens / llama-bench's rate for as
many, both as the model's own prompt plan shows it and with up to 10 whole passages (about 1,500 tokens).
When the installed build has a fallback beside it (x86_64-avx2 beside x86_64-avx512), each run also runs the
appliance in fallback mode and llama-bench built with the fallback's flags, interleaved, and prints the variant's
prompt and generation rates against its fallback's. APPLIANCE_BENCH_RUNS sets the runs (default 5).
Models: SmolLM2, the default pack (Qwen2.5-Coder-0.5B) and, when installed
(`appliance models install-pack gemma-3-270m-q4-k-m`), Gemma 3 270M.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RUNS = int(os.environ.get("APPLIANCE_BENCH_RUNS") or 5)
PREFIX_DIR = "cache/prompt-prefix"  # the prompts' kept fixed start (appliance/engine/prefix_state.py)
ROOT = Path(__file__).resolve().parents[2]
GROUNDED = "How do I read a file line by line and decode bytes that are not utf-8?"
STORY = "Write a long, detailed story about a lighthouse keeper who saves a ship in a storm."
LONG_TEXT = ("Water from rivers and lakes can carry bacteria, viruses and parasites. Boiling kills them; filters "
             "remove some; chemical treatment with chlorine or iodine needs time to work. ") * 12


def _appliance() -> str:
    return str(Path(sys.executable).parent / "appliance")


def _ask(env: dict, *args: str) -> tuple[dict, float]:
    """One `appliance ask --json` run: its JSON and the CLI process's own peak RSS in MiB (VmHWM, sampled until it
    exits: wait4's figure would be the larger of the CLI and the engine process, not the CLI's own). The engine
    process's make-up at its largest goes in the JSON as "engine_rss" (file-backed: the model's mapped weights and
    the libraries; anonymous: KV cache, compute buffers, heap)."""
    proc = subprocess.Popen([_appliance(), "ask", "--json", "--no-history", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    peak = [0.0]
    engine = {"rss": 0.0, "file": 0.0, "anon": 0.0}

    def status(pid: int) -> dict:
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssFile", "RssAnon"):
                fields[key] = int(value.split()[0]) / 1024
        return fields

    def sample() -> None:
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], status(proc.pid).get("VmHWM", 0.0))
                for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                    now = status(int(child))
                    if now.get("VmRSS", 0.0) > engine["rss"]:
                        engine.update(rss=now["VmRSS"], file=now.get("RssFile", 0.0), anon=now.get("RssAnon", 0.0))
            except (OSError, ValueError):
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"appliance ask failed: {err.decode()[-500:]}")
    return json.loads(out) | {"engine_rss": engine}, peak[0]


def _corpus(folder: Path) -> None:
    """Real prose: the Python standard library's own docstrings (as the kb benchmark uses)."""
    import importlib.util

    # Loaded under its own name: importing it as `kb` would shadow the appliance's kb package in this process.
    spec = importlib.util.spec_from_file_location("bench_kb", ROOT / "scripts" / "benchmarks" / "kb.py")
    bench_kb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_kb)
    for name, text in bench_kb._docstring_corpus(30):
        (folder / f"{name}.md").write_text(text)


def _record() -> dict:
    """The engine record the set-up wrote (packaging/llama_build.py write_record)."""
    sys.path.insert(0, str(ROOT / "packaging"))
    import llama_build  # type: ignore[import-not-found]

    return json.loads((Path(sys.prefix) / llama_build.RECORD_NAME).read_text())


def _fallback() -> str | None:
    """The installed build's fallback variant, when its libraries are installed beside it."""
    record = _record()
    name = (record["variants"].get(record["primary"]) or {}).get("fallback")
    folder = (record["variants"].get(name) or {}).get("lib_path") if name else None
    return name if folder and Path(folder).is_dir() else None


def _native(model: Path, threads: int, prompt_sizes: list[int], runs: int = RUNS, gen: int = 128,
            depth: int = 0, variant: str | None = None) -> dict:
    """llama-bench's tokens/s: pp<N> for each prompt size (0: none), tg<gen> (0: none), after `depth` tokens
    already in the context (keys then end in @d<depth>); built with the flags of `variant` (default: the
    installed one)."""
    sys.path.insert(0, str(ROOT / "packaging"))
    import llama_build  # type: ignore[import-not-found]  # packaging/ is on sys.path only from the line above

    config = llama_build.load()
    tool = llama_build.bench_tool(config, variant or _record()["primary"])
    command = [str(tool), "-m", str(model), "-t", str(threads), "-p", ",".join(map(str, prompt_sizes)),
               "-n", str(gen), "-d", str(depth), "-r", str(runs), "-o", "json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    results = {}
    for row in json.loads(done.stdout):
        key = f"tg{row['n_gen']}" if row["n_gen"] else f"pp{row['n_prompt']}"
        results[key + (f"@d{depth}" if depth else "")] = row["avg_ts"]
    return results


def _in_process(name: str) -> dict:
    """Prefix reuse and cancel latency, measured in one process as the TUI uses the engine."""
    from appliance.services import Services

    services = Services.create()
    loaded = services.engine.load(name)
    system = {"role": "system", "content": "You are a careful assistant running offline."}
    first = loaded.generate([system, {"role": "user", "content": LONG_TEXT + "\nHow do I make water safe?"}], 16)
    list(first.tokens())
    follow = loaded.generate([system, {"role": "user", "content": LONG_TEXT + "\nHow do I make water safe?"},
                              {"role": "assistant", "content": first.text},
                              {"role": "user", "content": "And how long should I boil it?"}], 16)
    list(follow.tokens())
    latencies = []
    for _ in range(RUNS):
        generation = loaded.generate([system, {"role": "user", "content": STORY}], 400)
        stopped = []
        for index, _piece in enumerate(generation.tokens()):
            if index == 5:
                stopped.append(time.perf_counter())
                threading.Thread(target=generation.stop).start()
        latencies.append(time.perf_counter() - stopped[0])
    # A grounded question with up to 10 whole passages (about 1,500 prompt tokens, as a larger model is shown), from a
    # fresh load so nothing is reused: its first token against prompt tokens / llama-bench's rate for as many.
    from appliance.answering.conversation import PromptPlan

    services.engine.unload()
    shutil.rmtree(Path(os.environ["APPLIANCE_HOME"]) / PREFIX_DIR, ignore_errors=True)  # the whole prompt read
    conversation = services.conversation()
    conversation.plan = PromptPlan(passages=10, words=None)
    run = conversation.ask(GROUNDED, model=name, max_tokens=16)
    list(run.tokens())
    services.engine.unload()
    return {"first": first.timings, "follow": follow.timings, "cancel_ms": 1000 * statistics.median(latencies),
            "long": run.generation.timings, "long_passages": len(run.sources)}


def _prompt_rate(data: dict) -> float:
    """Tokens read per second, not counting the prompt's fixed start when it came from disk (prefix_state.py)."""
    t = data["timings"]
    return (t["prompt_tokens"] - t["cached_tokens"]) / t["prompt_s"]


def _against_fallback(primary: str, fallback: str, tg: list, pp: list, native_runs: list[dict], other: dict) -> None:
    """The installed variant's rates against its fallback's, from interleaved runs on the same machine."""
    def ratio(a: list, b: list) -> float:
        return statistics.median(a) / statistics.median(b)

    native_pp, native_tg = [r["pp512"] for r in native_runs], [r["tg128"] for r in native_runs]
    other_pp, other_tg = [r["pp512"] for r in other["native"]], [r["tg128"] for r in other["native"]]
    print(f"     {primary} against its fallback {fallback} (interleaved, medians): appliance prompt "
          f"{statistics.median(pp):.1f} / {statistics.median(other['pp']):.1f} tokens/s = "
          f"{ratio(pp, other['pp']):.2f}x (goal >= 1.3), generation {statistics.median(tg):.1f} / "
          f"{statistics.median(other['tg']):.1f} = {ratio(tg, other['tg']):.2f}x (goal >= 1.0); llama-bench pp512 "
          f"{ratio(native_pp, other_pp):.2f}x, tg128 {ratio(native_tg, other_tg):.2f}x")
    print(f"     per run, {primary} / {fallback}: appliance prompt "
          + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(pp, other["pp"], strict=True)) + "; generation "
          + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(tg, other["tg"], strict=True)) + "; llama-bench pp512 "
          + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(native_pp, other_pp, strict=True)) + "; tg128 "
          + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(native_tg, other_tg, strict=True)))


def _bench(name: str, path: Path, env: dict, compare: bool, threads: int) -> None:
    tg, pp, rss, verify, load, parts = [], [], [], [], [], []
    native_runs: list[dict] = []
    fallback = _fallback() if compare else None
    other: dict[str, list] = {"tg": [], "pp": [], "native": []}  # the fallback build's runs, interleaved
    for _ in range(RUNS):
        if compare:  # llama-bench interleaved with the appliance's runs: on a shared machine both see the same load
            native_runs.append(_native(path, threads, [512], runs=1))
        data, cli_peak = _ask(env, "--model", name, "--no-kb", "--max-tokens", "128", STORY)
        t = data["timings"]
        if compare:  # and tg128 after as many tokens as the appliance's prompt: the same attention work per token
            depth = int(t["prompt_tokens"])
            native_runs[-1].update(_native(path, threads, [0], runs=1, depth=depth))
            native_runs[-1]["tg128@depth"] = native_runs[-1].pop(f"tg128@d{depth}")
        tg.append(t["tokens_per_s"] or 0)
        verify.append(t["verify_s"])
        load.append(t["load_s"])
        engine_peak = t.get("engine_peak_rss_mb") or 0
        rss.append(cli_peak + engine_peak)
        parts.append((cli_peak, engine_peak, data["engine_rss"]))
        data, _ = _ask(env, "--model", name, "--no-kb", "--max-tokens", "1", LONG_TEXT + "\nSummarize.")
        pp.append(_prompt_rate(data))
        if fallback:  # the same runs with the fallback build: the appliance in fallback mode, llama-bench likewise
            other["native"].append(_native(path, threads, [512], runs=1, variant=fallback))
            slow_env = dict(env, APPLIANCE_ENGINE_MODE="fallback")
            data, _ = _ask(slow_env, "--model", name, "--no-kb", "--max-tokens", "128", STORY)
            if data["engine"]["variant"] != fallback:
                raise SystemExit(f"APPLIANCE_ENGINE_MODE=fallback ran {data['engine']}, not {fallback}")
            other["tg"].append(data["timings"]["tokens_per_s"] or 0)
            data, _ = _ask(slow_env, "--model", name, "--no-kb", "--max-tokens", "1", LONG_TEXT + "\nSummarize.")
            other["pp"].append(_prompt_rate(data))
    shutil.rmtree(Path(env["APPLIANCE_HOME"]) / PREFIX_DIR, ignore_errors=True)  # the whole prompt read
    grounded, grounded_cli = _ask(env, "--model", name, "--max-tokens", "16", GROUNDED)
    g = grounded["timings"]
    kept, _ = _ask(env, "--model", name, "--max-tokens", "16", GROUNDED)  # the fixed start now from disk
    k = kept["timings"]
    print(f"   [{name}] {path.stat().st_size / 1e6:.0f} MB, {threads} threads, {RUNS} runs (medians)")
    print(f"     verify {statistics.median(verify):.3f} s, load {statistics.median(load):.3f} s")
    print(f"     generation (appliance ask, streamed): {statistics.median(tg):.1f} tokens/s")
    print(f"     prompt processing ({data['timings']['prompt_tokens']} tokens): {statistics.median(pp):.1f} tokens/s")
    print(f"     grounded question: {len(grounded['sources'])} passages, {g['prompt_tokens']} prompt tokens, "
          f"first token {g['first_token_s']:.3f} s; in a later process, the prompt's fixed start "
          f"({k['cached_tokens']} tokens) from disk: {k['first_token_s']:.3f} s")
    cli, engine_peak, engine = parts[rss.index(max(rss))]
    print(f"     peak RSS, CLI + engine process: {max(rss):.0f} MiB = {max(rss) * 1.048576:.0f} MB (CLI {cli:.0f}; "
          f"engine {engine_peak:.0f}; the engine at its largest sampled {engine['rss']:.0f}: "
          f"{engine['file']:.0f} file-backed, the model's mapped weights and the libraries, {engine['anon']:.0f} "
          f"anonymous, KV cache, buffers and heap)")
    grounded_engine = g.get("engine_peak_rss_mb") or 0
    grounded_rss = grounded_cli + grounded_engine
    print(f"     peak RSS of a grounded question (the library's embedder in the CLI): {grounded_rss:.0f} MiB = "
          f"{grounded_rss * 1.048576:.0f} MB (CLI {grounded_cli:.0f}; engine {grounded_engine:.0f})")
    inner = _in_process(name)
    first, follow = inner["first"], inner["follow"]
    print(f"     prefix cache: a follow-up read {follow.prompt_tokens - follow.cached_tokens} new of "
          f"{follow.prompt_tokens} prompt tokens ({follow.cached_tokens} reused); first token {first.first_token_s:.3f}"
          f" s -> {follow.first_token_s:.3f} s")
    print(f"     cancel: engine stopped {inner['cancel_ms']:.1f} ms after stop() (median)")
    long = inner["long"]
    print(f"     grounded question, {inner['long_passages']} whole passages: {long.prompt_tokens} prompt tokens, "
          f"first token {long.first_token_s:.3f} s")
    if not compare:
        return
    n_grounded = int(g["prompt_tokens"])
    native = {key: statistics.median(run[key] for run in native_runs) for key in ("tg128", "tg128@depth", "pp512")}
    n_long = int(long.prompt_tokens)
    rates = _native(path, threads, [n_grounded, n_long], gen=0)
    pp_grounded, pp_long = rates[f"pp{n_grounded}"], rates[f"pp{n_long}"]
    tg_ratio = statistics.median(tg) / native["tg128"]
    tg_depth_ratio = statistics.median(tg) / native["tg128@depth"]
    pp_ratio = statistics.median(pp) / native["pp512"]
    ttft_goal = n_grounded / pp_grounded
    print(f"     llama-bench (same flags, interleaved, medians): tg128 {native['tg128']:.1f} tokens/s, tg128 after "
          f"{depth} tokens {native['tg128@depth']:.1f}, pp512 {native['pp512']:.1f} tokens/s, pp{n_grounded} "
          f"{pp_grounded:.1f} tokens/s")
    pairs_tg = ", ".join(f"{a:.0f}/{b['tg128']:.0f}/{b['tg128@depth']:.0f}"
                         for a, b in zip(tg, native_runs, strict=True))
    pairs_pp = ", ".join(f"{a:.0f}/{b['pp512']:.0f}" for a, b in zip(pp, native_runs, strict=True))
    print(f"     per run, appliance / llama-bench: generation {pairs_tg} (tg128 / tg128 after the same prompt); "
          f"prompt {pairs_pp}")
    print(f"     ratios: generation {tg_ratio:.3f}x tg128, {tg_depth_ratio:.3f}x tg128 after the same {depth}-token "
          f"prompt (goal >= 0.95), prompt {pp_ratio:.3f}x pp512 (goal >= 0.95), grounded first token "
          f"{g['first_token_s'] / ttft_goal:.3f}x prompt/pp, with {n_long} prompt tokens "
          f"{long.first_token_s / (n_long / pp_long):.3f}x (goal <= 1.1; llama-bench pp{n_long} {pp_long:.1f} "
          "tokens/s)")
    if fallback:
        _against_fallback(_record()["primary"], fallback, tg, pp, native_runs, other)


def run() -> None:
    from appliance.models import packs
    from appliance.system.hardware import Hardware

    compare = os.environ.get("APPLIANCE_BENCH_COMPARE_NATIVE") == "1"
    threads = Hardware.detect().threads()
    with tempfile.TemporaryDirectory() as home:
        # The bench's own corpus only (the shipped field guide off), so the figures compare across versions.
        env = dict(os.environ, APPLIANCE_HOME=home, APPLIANCE_KB_FIELD_GUIDE="off")
        os.environ["APPLIANCE_HOME"] = home
        os.environ["APPLIANCE_KB_FIELD_GUIDE"] = "off"
        corpus = Path(home) / "corpus"
        corpus.mkdir()
        _corpus(corpus)
        subprocess.run([_appliance(), "kb", "add", str(corpus)], env=env, check=True, capture_output=True)
        models = [(packs.SMOLLM2.name, packs.SMOLLM2.locate())]
        if packs.DEFAULT_PACK.installed:  # registered by name on first use
            models.append((packs.DEFAULT_PACK.name, packs.DEFAULT_PACK.path()))
        gemma = packs.GEMMA3_270M
        if gemma.installed:
            subprocess.run([_appliance(), "models", "install-pack", gemma.name], env=env, check=True,
                           capture_output=True)
            models.append((gemma.name, gemma.path()))
        else:
            print(f"   ({gemma.name} not installed: `appliance models install-pack {gemma.name}` adds a second model)")
        for name, path in models:
            _bench(name, path, env, compare, threads)
