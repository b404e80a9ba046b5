"""Shelter mode: a question through `appliance serve` (HTTP, the openai package) against the same question asked in
process the way `appliance ask` asks it, the queue with 4 clients against one, and the server's idle memory.

Both sides use the default model, the same small library (one text file), the same question, with the model already
loaded (the server preloads it; in process it is loaded once before timing). First token: from sending the request
(HTTP, 64 tokens at most) or calling Conversation.ask (in process) to the first word. Tokens/s: the engine's own
rate, the figure `ask --json` reports, for an answer served through /api/ask (the configured max_tokens: a longer
answer, which if anything is slower per token) and one asked in process; and what the streaming client sees
(completion tokens over its first to last word; the engine sends words in 50 ms frames). Answers per minute: 12
questions, one client after another against 4 clients at once (3 each). Medians over BENCH_SERVE_ROUNDS rounds
(default 5), the first of each side not counted. `--replicas N`: N replicas behind HAProxy against one.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROUNDS = int(os.environ.get("BENCH_SERVE_ROUNDS", "5"))
REPLICAS = int(os.environ.get("BENCH_SERVE_REPLICAS", "1"))  # `./scripts/bench serve --replicas 2`
QUESTION = "How long should I boil water to make it safe to drink?"
MAX_TOKENS = 64
DOC = """Making water safe

Bring clear water to a rolling boil for one minute to kill germs. At altitudes above 2,000 metres, boil it for
three minutes. Let it cool naturally, and store it in clean containers with tight covers.
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def in_process(home: Path) -> tuple[list[float], list[float]]:
    os.environ["APPLIANCE_HOME"] = str(home)
    from appliance.services import Services

    services = Services.create()
    services.engine.load()
    firsts, rates = [], []
    for index in range(ROUNDS + 1):
        started = time.perf_counter()
        run = services.conversation().ask(QUESTION, max_tokens=MAX_TOKENS)
        first = None
        for _piece in run.tokens():
            first = first if first is not None else time.perf_counter()
        if index:
            firsts.append((first or started) - started)
            rates.append(float(run.timings.get("tokens_per_s") or 0.0))  # the engine's own rate, as `ask --json`
    services.engine.unload()
    return firsts, rates


def _stream(ai, model: str) -> tuple[float, float, int]:
    sent = time.perf_counter()
    first = last = None
    tokens = 0
    for chunk in ai.chat.completions.create(model=model, max_tokens=MAX_TOKENS, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": QUESTION}]):
        now = time.perf_counter()
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else now
            last = now
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return (first or sent) - sent, tokens / max((last or sent) - (first or sent), 1e-6), tokens


def _start(appliance: list[str], env: dict, *args: str) -> tuple[subprocess.Popen, int, str]:
    port = _free_port()
    server = subprocess.Popen(appliance + ["serve", "--port", str(port), "--no-qr", *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    model = ""
    assert server.stdout is not None
    for line in server.stdout:
        if line.startswith("serving "):
            model = line.split()[1]
        if "/join?t=" in line:
            break
    return server, port, model


def _crowd(url: str, keys: list[str], model: str, each: int) -> tuple[float, int]:
    """Answers per minute with one client per key asking `each` questions; and how many failed."""
    import openai

    failures: list[str] = []

    def client(k: str) -> None:
        c = openai.OpenAI(base_url=url, api_key=k, timeout=600, max_retries=5)
        for _ in range(each):
            try:
                _stream(c, model)
            except openai.APIError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in keys]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (len(keys) * each - len(failures)) / ((time.perf_counter() - started) / 60), len(failures)


def replicas_run(count: int) -> None:
    """N replicas on loopback (separate data dirs, one shelter) behind HAProxy, against one replica alone."""
    import shutil

    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise SystemExit("haproxy is not installed (apt-get install haproxy)")
    appliance = [str(Path(sys.executable).parent / "appliance")]
    with tempfile.TemporaryDirectory() as tmp:
        doc = Path(tmp) / "water.txt"
        doc.write_text(DOC)
        envs = []
        for n in range(count):
            env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
            env.update(APPLIANCE_HOME=str(Path(tmp) / f"r{n}"), APPLIANCE_KB_FIELD_GUIDE="off", NO_COLOR="1")
            subprocess.run(appliance + ["kb", "add", str(doc)], env=env, check=True, capture_output=True)
            envs.append(env)
        subprocess.run(appliance + ["serve", "shelter", "init"], env=envs[0], check=True, capture_output=True)
        secret = Path(tmp) / "shelter.json"
        subprocess.run(appliance + ["serve", "shelter", "export", str(secret)], env=envs[0], check=True,
                       capture_output=True)
        for env in envs[1:]:
            subprocess.run(appliance + ["serve", "shelter", "join", str(secret)], env=env, check=True,
                           capture_output=True)
        keys = [subprocess.run(appliance + ["serve", "keys", "add", f"bench-{n}"], env=envs[0], check=True,
                               capture_output=True, text=True).stdout.strip() for n in range(8)]
        servers = [_start(appliance, env) for env in envs]
        model = servers[0][2]
        front = _free_port()
        config = Path(tmp) / "shelter.cfg"
        config.write_text(subprocess.run(
            appliance + ["serve", "haproxy-config", "--listen", f"127.0.0.1:{front}", "--check-interval", "1",
                         *[a for _, port, _ in servers for a in ("--replica", f"127.0.0.1:{port}")]],
            env=envs[0], check=True, capture_output=True, text=True).stdout)
        proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            time.sleep(3)
            alone, failed_alone = _crowd(f"http://127.0.0.1:{servers[0][1]}/v1", keys, model, 3)
            spread, failed_spread = _crowd(f"http://127.0.0.1:{front}/v1", keys, model, 3)
        finally:
            proxy.terminate()
            for server, _, _ in servers:
                server.terminate()
                server.wait(30)
    cores = os.cpu_count()
    print(f"   model {model}, 8 clients x 3 questions, {MAX_TOKENS} tokens at most, all on this machine "
          f"({cores} cores shared by every replica)")
    print(f"   answers/min:  one replica {alone:.1f}, {count} replicas behind HAProxy {spread:.1f}: "
          f"{spread / alone:.2f}x ({failed_alone} + {failed_spread} failed)")
    print("   (replicas on one machine share its cores: the figure shows what HAProxy and the replicas cost, not "
          "what laptops of their own would add)")


def _served_rate(port: int, key: str) -> float:
    """The engine's own tokens/s for one answer served through /api/ask (the `done` event's timings)."""
    import httpx

    kind, rate = "", 0.0
    with httpx.stream("POST", f"http://127.0.0.1:{port}/api/ask", headers={"Authorization": f"Bearer {key}"},
                      json={"question": QUESTION}, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind == "done":
                rate = float(json.loads(line[5:])["timings"].get("tokens_per_s") or 0.0)
    return rate


def run() -> None:
    import openai

    if REPLICAS > 1:
        replicas_run(REPLICAS)
        return

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(APPLIANCE_HOME=str(home), APPLIANCE_KB_FIELD_GUIDE="off", NO_COLOR="1")
        doc = Path(tmp) / "water.txt"
        doc.write_text(DOC)
        appliance = [str(Path(sys.executable).parent / "appliance")]
        subprocess.run(appliance + ["kb", "add", str(doc)], env=env, check=True, capture_output=True)
        key = subprocess.run(appliance + ["serve", "keys", "add", "bench"], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        keys = [key] + [subprocess.run(appliance + ["serve", "keys", "add", f"bench-{n}"], env=env, check=True,
                                       capture_output=True, text=True).stdout.strip() for n in range(4)]
        server, port, model = _start(appliance, env)
        try:
            time.sleep(1)
            engine = _children(server.pid)
            idle = _rss_mb(server.pid)
            engine_idle = sum(_rss_mb(pid) for pid in engine)
            url = f"http://127.0.0.1:{port}/v1"
            ai = openai.OpenAI(base_url=url, api_key=key, timeout=300)
            http = [_stream(ai, model) for _ in range(ROUNDS + 1)][1:]
            one = openai.OpenAI(base_url=url, api_key=keys[1], timeout=600)
            started = time.perf_counter()
            for _ in range(12):
                _stream(one, model)
            alone = 12 / ((time.perf_counter() - started) / 60)
            failures: list[str] = []

            def client(k: str) -> None:
                c = openai.OpenAI(base_url=url, api_key=k, timeout=600, max_retries=5)
                for _ in range(3):
                    try:
                        _stream(c, model)
                    except openai.APIError as exc:
                        failures.append(str(exc))

            threads = [threading.Thread(target=client, args=(k,)) for k in keys[1:]]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            together = (12 - len(failures)) / ((time.perf_counter() - started) / 60)
            busy = _rss_mb(server.pid)
            served_rates = [_served_rate(port, key) for _ in range(ROUNDS)]
            freed = []
            import httpx

            for _ in range(3):  # a client that leaves mid-answer: how soon the engine is free again
                with httpx.stream("POST", f"{url}/chat/completions", timeout=300,
                                  headers={"Authorization": f"Bearer {key}"},
                                  json={"model": model, "stream": True, "max_tokens": 400,
                                        "messages": [{"role": "user", "content": "Tell me a long story."}]}) as r:
                    for line in r.iter_lines():
                        if '"content": "' in line and '"content": ""' not in line:
                            break
                left = time.perf_counter()
                while httpx.get(f"http://127.0.0.1:{port}/health").json()["queue"]:
                    time.sleep(0.005)
                freed.append(time.perf_counter() - left)
        finally:
            server.terminate()
            server.wait(30)
        firsts, rates = in_process(home)
    http_first = statistics.median(h[0] for h in http)
    http_rate = statistics.median(served_rates)
    stream_rate = statistics.median(h[1] for h in http)
    local_first, local_rate = statistics.median(firsts), statistics.median(rates)
    print(f"   model {model}, {MAX_TOKENS} tokens at most, {ROUNDS} rounds (medians), loopback")
    print(f"   first token:  HTTP (openai package, streamed) {http_first:.2f} s, in process (as `ask`) "
          f"{local_first:.2f} s: {http_first / local_first:.2f}x (goal <= 1.05x)")
    print(f"   tokens/s:     served {http_rate:.1f}, in process (as `ask`) {local_rate:.1f}: "
          f"{http_rate / local_rate:.2f}x (goal >= 0.97x; the engine's own rate, as `ask --json` reports it; "
          f"seen by the streaming client, in 50 ms frames: {stream_rate:.1f})")
    print(f"   answers/min:  1 client {alone:.1f}, 4 clients at once {together:.1f}: {together / alone:.2f}x "
          f"(goal >= 0.95x; {len(failures)} refused or failed)")
    print(f"   a client leaving mid-answer: the engine free again after {statistics.median(freed) * 1000:.0f} ms "
          f"(median of 3; goal < 100 ms)")
    print(f"   memory:       server idle {idle:.0f} MiB (+ engine process {engine_idle:.0f} MiB), server after "
          f"answering {busy:.0f} MiB")
    print("   " + json.dumps({"http_first_s": round(http_first, 3), "local_first_s": round(local_first, 3),
                             "http_tokens_per_s": round(http_rate, 1), "local_tokens_per_s": round(local_rate, 1),
                             "answers_per_min_1": round(alone, 2), "answers_per_min_4": round(together, 2),
                             "idle_rss_mb": round(idle), "engine_rss_mb": round(engine_idle)}))
