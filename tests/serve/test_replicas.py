"""Two replicas (each an ordinary `appliance serve` in a network namespace of its own, joined to this one by a veth
pair: no traffic leaves the machine) behind a real HAProxy from the Debian package, configured by
`appliance serve haproxy-config`; clients with the openai package and the page's own route."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import missing, require_tool, run_appliance
from tests.serve.conftest import free_port, start_server, web

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"


def sh(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{args}: {done.stderr}"


@pytest.fixture
def namespaces():
    ip = require_tool("ip")
    if os.geteuid() != 0:
        missing("network namespaces need root (CI runs as root)")
    tag = f"{os.getpid() % 10000}"
    made: list[str] = []
    subnets = []
    try:
        for n in (1, 2):
            name, host_end, ns_end = f"apl{tag}r{n}", f"aplh{tag}{n}", f"aplr{tag}{n}"
            subnet = f"10.231.{(int(tag) * 2 + n) % 250}"
            sh(ip, "netns", "add", name)
            made.append(name)
            sh(ip, "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            sh(ip, "link", "set", ns_end, "netns", name)
            sh(ip, "addr", "add", f"{subnet}.1/24", "dev", host_end)
            sh(ip, "link", "set", host_end, "up")
            sh(ip, "netns", "exec", name, ip, "addr", "add", f"{subnet}.2/24", "dev", ns_end)
            sh(ip, "netns", "exec", name, ip, "link", "set", ns_end, "up")
            sh(ip, "netns", "exec", name, ip, "link", "set", "lo", "up")
            subnets.append((name, f"{subnet}.2"))
        yield subnets
    finally:
        for name in made:
            subprocess.run([ip, "netns", "del", name], capture_output=True)  # takes its end of the veth pair


def kill_hard(served) -> None:
    """SIGKILL the replica and its engine process: a laptop that dies."""
    pid = json.loads((served.home / "serve" / "state.json").read_text())["pid"]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for victim in [pid, *map(int, children)]:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    served.process.wait(30)


def answered_questions(home: Path) -> list[str]:
    rows = run_appliance("history", "list", "-n", "1000", "--json", env={"APPLIANCE_HOME": str(home)})
    return [row["title"] for row in json.loads(rows.stdout)]


def test_two_replicas_behind_haproxy(namespaces, tmp_path):
    haproxy = require_tool("haproxy")
    (ns1, addr1), (ns2, addr2) = namespaces
    front_port = free_port()
    home1, home2 = tmp_path / "r1" / "home", tmp_path / "r2" / "home"
    home1.mkdir(parents=True)
    home2.mkdir(parents=True)
    env1, env2 = {"APPLIANCE_HOME": str(home1)}, {"APPLIANCE_HOME": str(home2)}
    assert run_appliance("serve", "shelter", "init", env=env1).returncode == 0
    secret = tmp_path / "shelter.json"
    assert run_appliance("serve", "shelter", "export", str(secret), env=env1).returncode == 0
    assert run_appliance("serve", "shelter", "join", str(secret), env=env2).returncode == 0

    def replica(home: Path, ns: str, address: str):
        return start_server(home, "--bind", address, "--allow-host", "127.0.0.1",
                            prefix=["ip", "netns", "exec", ns])

    r1, r2 = replica(home1, ns1, addr1), replica(home2, ns2, addr2)
    replicas = [f"{addr1}:{r1.port}", f"{addr2}:{r2.port}"]
    config = run_appliance("serve", "haproxy-config", "--listen", f"127.0.0.1:{front_port}", "--check-interval",
                           "1", *[arg for r in replicas for arg in ("--replica", r)])
    assert config.returncode == 0, config.stderr
    (tmp_path / "shelter.cfg").write_text(config.stdout)
    proxy_log = (tmp_path / "haproxy.log").open("ab")
    proxy = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "shelter.cfg")], stdout=proxy_log,
                             stderr=subprocess.STDOUT)
    front = f"http://127.0.0.1:{front_port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if web.get(f"{front}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        keys = {f"phone-{n}": r1.key(f"phone-{n}") for n in range(10)}  # signed: known to both replicas

        def ask(name: str, question: str, max_tokens: int = 24) -> str:
            if name.endswith(("8", "9")):  # the page's own route
                with httpx.stream("POST", f"{front}/api/ask", timeout=120, json={"question": question},
                                  headers={"Authorization": f"Bearer {keys[name]}"}) as response:
                    body = "".join(response.iter_text())
                assert response.status_code == 200 and "event: done" in body, body[-300:]
                return body
            ai = openai.OpenAI(base_url=f"{front}/v1", api_key=keys[name], max_retries=0, timeout=120)
            return "".join(c.choices[0].delta.content or "" for c in ai.chat.completions.create(
                model=MODEL, max_tokens=max_tokens, stream=True, messages=[{"role": "user", "content": question}])
                if c.choices)

        # 1. ten clients, two questions each: spread over both replicas
        failures: list[str] = []
        busy: list[str] = []

        def client(name: str, round_: int) -> None:
            for attempt in (1, 2):
                try:
                    ask(name, f"how many drops of bleach per litre ({name} {round_})")
                    return
                except Exception as exc:  # noqa: BLE001 - collected, asserted below
                    if attempt == 1 and "no appliance can take the question now" in str(exc):
                        # HAProxy's own 503 (it reached no replica, so nothing was answered or recorded): a phone
                        # asks again after its Retry-After, and the test says it happened (below)
                        busy.append(f"{name} (round {round_})")
                        time.sleep(10)
                        continue
                    failures.append(f"{name}: {exc!r}")
                    return

        for round_ in (1, 2):
            threads = [threading.Thread(target=client, args=(name, round_)) for name in keys]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
            assert not any(t.is_alive() for t in threads), "a request hung"
        log = (tmp_path / "haproxy.log").read_text()[-3000:]
        assert failures == [], "HAProxy printed:\n" + log
        if busy:  # CI twice saw one such 503 here, which loaded local runs do not reproduce: keep the evidence
            warnings.warn(f"HAProxy's own 503 for {', '.join(busy)}, answered when asked again; HAProxy printed:\n"
                          + log, stacklevel=1)
        served1 = web.get(f"{r1.url}/health").json()["answered"]
        served2 = web.get(f"{r2.url}/health").json()["answered"]
        assert served1 > 0 and served2 > 0 and served1 + served2 == 20

        # 2. a revocation pushed from one laptop reaches both replicas
        gone = r1.key("gone")
        for url in (r1.url, r2.url):
            assert web.get(f"{url}/api/me", headers={"Authorization": f"Bearer {gone}"}).status_code == 200
        pushed = run_appliance("serve", "keys", "revoke", "gone", *[a for r in replicas for a in ("--replica", r)],
                               env=env1)
        assert pushed.returncode == 0 and pushed.stdout.count(": ok") == 2, pushed.stdout + pushed.stderr
        for url in (r1.url, r2.url):
            assert web.get(f"{url}/api/me", headers={"Authorization": f"Bearer {gone}"}).status_code == 401

        # 3. one replica dies mid-load: its streams end with an error, new questions go to the other
        outcomes: dict[str, str] = {}

        def long_client(name: str) -> None:
            try:
                ask(name, f"write a long story about a boat ({name} killed)", max_tokens=150)
                outcomes[name] = "answered"
            except Exception as exc:  # noqa: BLE001 - the error a client sees is the point
                outcomes[name] = f"error: {type(exc).__name__}"

        threads = [threading.Thread(target=long_client, args=(f"phone-{n}",)) for n in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and web.get(f"{r1.url}/health").json()["queue"] == 0:
            time.sleep(0.05)
        kill_hard(r1)
        for thread in threads:
            thread.join(300)
        assert not any(t.is_alive() for t in threads), "a stream on the dead replica hung"
        assert len(outcomes) == 6 and any(o.startswith("error") for o in outcomes.values()), outcomes
        time.sleep(3)  # two missed health checks, 1 s apart
        after = [ask(f"phone-{n}", f"bleach drops after the loss ({n})") for n in range(4)]
        assert all(after)

        # 4. it comes back, with a library that differs: it takes questions again, and the difference is named
        extra = tmp_path / "r1" / "extra.txt"
        extra.write_text("Wood ash and fat make soap when boiled together for hours.\n")
        assert run_appliance("kb", "add", str(extra), env=env1).returncode == 0
        r1 = replica(home1, ns1, addr1)
        replicas[0] = f"{addr1}:{r1.port}"
        (tmp_path / "shelter.cfg").write_text(run_appliance(
            "serve", "haproxy-config", "--listen", f"127.0.0.1:{front_port}", "--check-interval", "1",
            *[arg for r in replicas for arg in ("--replica", r)]).stdout)
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(10)
        proxy = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "shelter.cfg")], stdout=proxy_log,
                                 stderr=subprocess.STDOUT)
        time.sleep(3)
        for n in range(6):
            ask(f"phone-{n}", f"bleach drops once it is back ({n})")
        assert web.get(f"{r1.url}/health").json()["answered"] > 0
        h1, h2 = web.get(f"{r1.url}/health").json(), web.get(f"{r2.url}/health").json()
        assert h1["library"]["content_sha256"] != h2["library"]["content_sha256"]
        assert h1["model"]["sha256"] == h2["model"]["sha256"]
        status = run_appliance("serve", "status", "--json", *[a for r in replicas for a in ("--replica", r)])
        assert status.returncode == 1
        rows = json.loads(status.stdout)
        assert all("library" in row.get("differs", []) and "model" not in row.get("differs", []) for row in rows)
    finally:
        proxy.terminate()
        proxy.wait(10)
        for served in (r1, r2):
            served.stop()
    # nothing was recorded twice, across both replicas
    titles = answered_questions(home1) + answered_questions(home2)
    assert len(titles) == len(set(titles))
    assert sum(1 for t in titles if "killed" in t) <= 6
