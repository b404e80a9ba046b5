"""`appliance serve` for real: the installed command on loopback under the network lock, SmolLM2, a small library;
real clients (the openai package, httpx, raw sockets)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai
import pytest

from appliance.serve.web import CSP
from tests.conftest import run_appliance
from tests.serve.conftest import web

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"


def client(server, key: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120, **kw)


def ask_events(server, key: str, question: str, conversation: int | None = None) -> list[tuple[str, object]]:
    events, kind = [], "message"
    with httpx.stream("POST", f"{server.url}/api/ask", headers={"Authorization": f"Bearer {key}"},
                      json={"question": question, "conversation_id": conversation}, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line[5:].strip())))
    return events


def test_the_openai_package_streams_a_grounded_answer(server):
    ai = client(server, server.key("openai-stream"))
    assert [m.id for m in ai.models.list().data] == [MODEL]
    pieces, finish, extra, usage = [], None, None, None
    for chunk in ai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content":
                                                                   "How long do I boil water to make it safe?"}],
                                            stream=True, max_tokens=40, stream_options={"include_usage": True}):
        if not chunk.choices:
            usage = chunk.usage
            continue
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
        extra = (chunk.model_extra or {}).get("appliance") or extra
    assert "".join(pieces).strip() and finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert extra is not None and any("water.txt" in s["path"] for s in extra["sources"])
    assert any("boil" in q["text"].lower() for q in extra["quotes"])


def test_the_openai_package_without_streaming_and_its_errors(server):
    ai = client(server, server.key("openai-plain"))
    reply = ai.chat.completions.create(model=MODEL, max_tokens=16, messages=[
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "How many drops of bleach per litre of water?"}])
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        ai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="last message"):
        ai.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "x"}])
    ungrounded = ai.chat.completions.create(model=MODEL, max_tokens=8, extra_body={"grounded": False},
                                            messages=[{"role": "user", "content": "boil water"}])
    assert ungrounded.model_extra["appliance"]["sources"] == []


def test_the_raw_stream_ends_with_done_and_usage_only_when_asked(server):
    key = server.key("raw-stream")
    for include in (False, True):
        body = {"model": MODEL, "stream": True, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        if include:
            body["stream_options"] = {"include_usage": True}
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {key}"}) as response:
            data = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        usage_only = [c for c in chunks if c["choices"] == []]
        assert len(usage_only) == (1 if include else 0)
        if include:
            assert chunks[-1] is usage_only[0] and usage_only[0]["usage"]["completion_tokens"] > 0


def test_keys_hosts_and_limits(server):
    url = server.url
    assert web.get(f"{url}/api/me").status_code == 401
    assert web.get(f"{url}/v1/models", headers={"Authorization": "Bearer apl_forged"}).status_code == 401
    key = server.key("to-revoke")
    auth = {"Authorization": f"Bearer {key}"}
    assert web.get(f"{url}/api/me", headers=auth).json()["device"] == "to-revoke"
    revoked = run_appliance("serve", "keys", "revoke", "to-revoke", env={"APPLIANCE_HOME": str(server.home)})
    assert revoked.returncode == 0, revoked.stderr
    assert web.get(f"{url}/api/me", headers=auth).status_code == 401
    good = {"Authorization": f"Bearer {server.key('limits')}"}
    assert web.get(f"{url}/api/me", headers=good | {"Host": "evil.example"}).status_code == 400
    assert web.get(f"{url}/api/me", headers=good | {"Host": f"localhost:{server.port}"}).status_code == 200
    big = web.post(f"{url}/api/ask", headers=good, content=b"{" + b" " * 70_000 + b"}",
                     timeout=30)
    assert big.status_code == 413
    form = web.post(f"{url}/api/ask", headers=good, data={"question": "x"})
    assert form.status_code == 400 and "JSON" in form.json()["error"]["message"]
    long_question = web.post(f"{url}/api/ask", headers=good, json={"question": "word " * 1000})
    assert long_question.status_code == 400 and "at most" in long_question.json()["error"]["message"]
    huge_header = web.get(f"{url}/api/me", headers=good | {"X-Filler": "a" * 20_000})
    assert huge_header.status_code in (400, 431)
    assert web.get(f"{url}/api/me", headers=good).status_code == 200  # and the server is still fine


def test_one_question_in_line_per_device(server):
    # three other devices ask first, so this device's question waits in line (seconds) while it asks again
    others = [threading.Thread(target=ask_events, args=(server, server.key(f"ahead-{n}"), f"bleach per litre {n}"))
              for n in range(3)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 30
    while web.get(f"{server.url}/health").json()["queue"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    auth = {"Authorization": f"Bearer {server.key('impatient')}"}
    with httpx.stream("POST", f"{server.url}/api/ask", headers=auth, timeout=300,
                      json={"question": "how long to boil water"}) as first:
        assert first.status_code == 200
        lines = first.iter_lines()  # kept: a dropped line iterator closes the stream, and the server cancels
        assert next(lines) == "event: queued"
        second = web.post(f"{server.url}/api/ask", headers=auth, json={"question": "and bleach?"})
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1, second.text[:300]
        assert second.json()["error"]["code"] == "device_busy"
    for thread in others:
        thread.join(300)


def test_no_route_serves_a_path_a_client_names(server):
    auth = {"Authorization": f"Bearer {server.key('paths')}"}
    for path in ("/static/../../../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
                 "/static//etc/passwd", "/static/index.html/../../pyproject.toml", "/etc/passwd",
                 "/api/conversations/..%2f..", "/static/app.js%00.txt"):
        raw = httpx.Request("GET", server.url + path, headers=auth)
        raw.url = httpx.URL(server.url + path)  # exactly as written
        response = httpx.Client().send(raw)
        assert response.status_code in (400, 404), path
        assert b"root:" not in response.content and b"[project]" not in response.content


def test_every_response_carries_the_csp_and_no_cors(server):
    auth = {"Authorization": f"Bearer {server.key('headers')}"}
    responses = [web.get(server.url + "/"), web.get(server.url + "/static/app.js"),
                 web.get(server.url + "/health"), web.get(server.url + "/api/me"),
                 web.get(server.url + "/nowhere", headers=auth),
                 web.get(server.url + "/", headers={"Host": "evil.example"}),
                 web.request("OPTIONS", server.url + "/v1/chat/completions",
                               headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})]
    for response in responses:
        assert response.headers["content-security-policy"] == CSP, response.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in response.headers
    page = responses[0].text
    assert "<script src=\"/static/app.js\">" in page and "http" not in page.split("<body>")[1].lower()


def test_one_device_cannot_read_anothers_conversation(server):
    alice, bob = server.key("alice"), server.key("bob")
    events = ask_events(server, alice, "how many drops of bleach for a litre of water")
    done = [data for kind, data in events if kind == "done"][0]
    number = done["conversation_id"]
    mine = web.get(f"{server.url}/api/conversations/{number}", headers={"Authorization": f"Bearer {alice}"})
    assert mine.status_code == 200 and mine.json()["messages"][0]["content"].startswith("how many drops")
    theirs = web.get(f"{server.url}/api/conversations/{number}", headers={"Authorization": f"Bearer {bob}"})
    assert theirs.status_code == 404
    assert web.get(f"{server.url}/api/conversations", headers={"Authorization": f"Bearer {bob}"}).json() == []
    follow = web.post(f"{server.url}/api/ask", headers={"Authorization": f"Bearer {bob}"},
                        json={"question": "and then?", "conversation_id": number})
    assert follow.status_code == 400
    # the owner sees which device asked what
    listed = run_appliance("history", "list", "--json", env={"APPLIANCE_HOME": str(server.home)})
    assert any(row["id"] == number and row["device"] == "alice" for row in json.loads(listed.stdout))
    logged = run_appliance("history", "verify", env={"APPLIANCE_HOME": str(server.home)})
    assert logged.returncode == 0, logged.stdout + logged.stderr


def test_the_page_answer_has_quotes_sources_and_passages(server):
    events = ask_events(server, server.key("page-events"), "how long should i boil water")
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "queued" and "start" in kinds and "token" in kinds and kinds[-1] == "done"
    start = dict(events)["start"]
    assert start["quotes"] and "boil" in " ".join(q["text"] for q in start["quotes"]).lower()
    done = dict(events)["done"]
    assert done["device"] == "page-events" and done["passages"]
    assert "".join(data for kind, data in events if kind == "token").strip() == done["answer"].strip()


def test_a_slow_client_holds_nothing(server):
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"GET /health HTTP/1.1\r\n")
    started = time.monotonic()
    try:
        # while it dawdles, another client is answered
        assert web.get(f"{server.url}/health", timeout=10).status_code == 200
        slow.settimeout(1)
        closed = False
        while time.monotonic() - started < 30 and not closed:
            try:
                slow.sendall(b"X")
                closed = slow.recv(1) == b""
            except socket.timeout:
                continue
            except OSError:
                closed = True
        assert closed, "a client that never finished its request head was not cut off"
    finally:
        slow.close()


def test_a_join_link_works_once(server):
    link = server.join
    with httpx.Client(follow_redirects=False) as browser:
        first = browser.get(link)
        assert first.status_code == 303 and "httponly" in first.headers["set-cookie"].lower()
        assert "samesite=strict" in first.headers["set-cookie"].lower()
        me = browser.get(f"{server.url}/api/me")
        assert me.status_code == 200 and me.json()["device"].startswith("device-")
    assert web.get(link).status_code == 403
    lines = server.read_more(2)
    assert any("joined" in line for line in lines)
    server.join = [line.strip() for line in lines if "/join?t=" in line][-1]  # the next one, for other tests


def test_a_client_that_leaves_frees_the_engine(server):
    key = server.key("leaver")
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": MODEL, "stream": True, "max_tokens": 400,
                            "messages": [{"role": "user", "content": "Write a long story about a boat."}]}) as r:
        for line in r.iter_lines():
            if '"content"' in line and '"content": ""' not in line:
                break  # the first words came: leave
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and web.get(f"{server.url}/health").json()["queue"]:
        time.sleep(0.05)
    assert web.get(f"{server.url}/health").json()["queue"] == 0
    # the same device can ask again at once, and is answered
    reply = client(server, key).chat.completions.create(model=MODEL, max_tokens=4,
                                                       messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content is not None


def test_twenty_clients_at_once(server):
    """Every request answered or refused with 503 + Retry-After; none lost or hung; first come first served; the
    history holds each answered exchange once."""
    keys = {f"crowd-{n}": server.key(f"crowd-{n}") for n in range(20)}
    results: dict[str, dict] = {}

    def one(name: str) -> None:
        try:
            events, kind = [], "message"
            with httpx.stream("POST", f"{server.url}/api/ask", timeout=300,
                              headers={"Authorization": f"Bearer {keys[name]}"},
                              json={"question": f"bleach drops per litre? ({name})"}) as response:
                if response.status_code != 200:
                    response.read()
                    results[name] = {"status": response.status_code, "retry": response.headers.get("retry-after")}
                    return
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        events.append((kind, json.loads(line[5:].strip()), time.monotonic()))
            results[name] = {"status": 200, "events": events}
        except Exception as exc:  # noqa: BLE001 - recorded, then asserted on
            results[name] = {"status": None, "error": repr(exc)}

    threads = [threading.Thread(target=one, args=(name,)) for name in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(400)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    assert len(results) == 20
    refused = [r for r in results.values() if r["status"] == 503]
    answered = {name: r for name, r in results.items() if r["status"] == 200}
    assert all(r["retry"] and int(r["retry"]) >= 1 for r in refused)
    assert len(refused) + len(answered) == 20 and answered
    assert len(answered) <= 9  # the one being answered and a line of 8
    for r in answered.values():
        assert r["events"][-1][0] == "done", r["events"][-1]
    # first come, first served: the order they were told they stood in is the order they were answered
    stood = sorted(answered, key=lambda name: answered[name]["events"][0][1]["ahead"])
    finished = sorted(answered, key=lambda name: answered[name]["events"][-1][2])
    assert stood == finished
    listed = json.loads(run_appliance("history", "list", "-n", "500", "--json",
                                      env={"APPLIANCE_HOME": str(server.home)}).stdout)
    crowd = [row["device"] for row in listed if (row["device"] or "").startswith("crowd-")]
    assert sorted(crowd) == sorted(answered)
