"""Several laptops serving one shelter: each an ordinary `appliance serve` (a replica), HAProxy in front.

The owner's view of them (`appliance serve status --replica HOST:PORT ...`: each replica's /health), the push of
revocations (`serve keys revoke NAME --replica ...`), and the HAProxy configuration (`serve haproxy-config`). These
commands connect to the replicas named on their command line only, each a loopback or private address (checked
here before any connection), through the appliance's one HTTP client (appliance.system.fetch); they are the
shelter's LAN commands, which netlock leaves unlocked for that reason.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from appliance.errors import ApplianceError, UsageError
from appliance.serve.network import is_private, url_host
from appliance.system import fetch

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Replica:
    host: str
    port: int

    @property
    def base(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    def __str__(self) -> str:
        return f"{url_host(self.host)}:{self.port}"


def parse(text: str) -> Replica:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise UsageError(f"--replica {text!r}: give ADDRESS:PORT, e.g. 10.0.0.12:8737") from None
    if not (ip.is_loopback or is_private(host)) or not 0 < number < 65536:
        raise UsageError(f"--replica {text!r}: only loopback or private addresses (the shelter's own network)")
    return Replica(host, number)


def health(replica: Replica) -> dict[str, Any]:
    """A replica's /health (ready or not: a 503 says why in its body too), or {"error": why it could not be read}."""
    try:
        reply = fetch.exchange(f"{replica.base}/health", 65536, headers={"Host": url_host(replica.host)},
                               timeout=TIMEOUT_S)
    except ApplianceError as exc:
        return {"error": str(exc)[:200]}
    try:
        return json.loads(reply.body)
    except ValueError:
        return {"error": f"HTTP {reply.status}"}


def status(replicas: list[Replica]) -> list[dict[str, Any]]:
    """Each replica's health, and what differs from the others (the model file, the library's content)."""
    rows = [{"replica": str(r)} | health(r) for r in replicas]
    for key, label in ((("model", "sha256"), "model"), (("library", "content_sha256"), "library")):
        values = [(row.get(key[0]) or {}).get(key[1]) for row in rows if "error" not in row]
        # what more than half of them hold; with no majority (two replicas, two libraries) none is "the" one
        common = next((v for v in set(values) if values.count(v) * 2 > len(values)), None)
        for row in rows:
            value = (row.get(key[0]) or {}).get(key[1]) if "error" not in row else None
            if "error" not in row and value != common:
                row.setdefault("differs", []).append(label)
    return rows


def push_revocations(replicas: list[Replica], signed: dict) -> list[tuple[Replica, str]]:
    """POST the shelter's signed revocations to every replica; (replica, "ok" or what went wrong)."""
    body = json.dumps(signed).encode()
    results = []
    for replica in replicas:
        try:
            reply = fetch.exchange(f"{replica.base}/shelter/revocations", 65536, data=body, timeout=TIMEOUT_S,
                                   headers={"Content-Type": "application/json", "Host": url_host(replica.host)})
            if not reply.ok:
                results.append((replica, f"refused (HTTP {reply.status})"))
                continue
            json.loads(reply.body)
            results.append((replica, "ok"))
        except (ApplianceError, ValueError) as exc:
            results.append((replica, f"not reached ({str(exc)[:120]})"))
    return results


BUSY = ('{\\"error\\":{\\"message\\":\\"no appliance can take the question now; try again shortly\\",'
        '\\"type\\":\\"server_busy\\",\\"param\\":null,\\"code\\":\\"unavailable\\"}}')


def haproxy_config(replicas: list[Replica], listen: str, check_interval_s: float = 2.0) -> str:
    """A working HAProxy configuration for these replicas, with the reasons in its comments."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen {listen!r}: give ADDRESS:PORT, e.g. 192.168.1.10:8737")
    front = host.strip("[]")
    inter = f"{int(check_interval_s * 1000)}ms"
    servers = "\n".join(
        f"    server r{n} {r} check inter {inter} fall 2 rise 2 maxconn 2" for n, r in enumerate(replicas, 1))
    checks = "\n".join(f"    # r{n}: appliance serve --bind {r.host} --port {r.port} --allow-host {front}"
                       for n, r in enumerate(replicas, 1))
    return f"""# HAProxy in front of {len(replicas)} appliance replicas (made by `appliance serve haproxy-config`).
# Start each replica with its own address and the front's name allowed in the Host header:
{checks}
# then: haproxy -f this-file.cfg
global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    # a streamed answer can take minutes; the replicas send a keep-alive comment every 10 s
    timeout client 10m
    timeout server 10m
    timeout http-request 10s
    # a question waits here at most this long for a replica to take it
    timeout queue 2m
    # a health check's reply may take this long: a replica busy generating on a loaded laptop answers /health late,
    # and without it the check would time out at the check interval and mark a working replica down
    timeout check 5s
    # retry only requests that never reached a replica: an answer is never asked (or recorded) twice
    retries 2
    retry-on conn-failure
    option redispatch 1
    # HAProxy's own 503 (every replica down, or the queue timed out) says when to come back; a replica's own
    # 503 + Retry-After (its line is full) is passed through as it is
    http-error status 503 content-type application/json string "{BUSY}" hdr Retry-After 10

frontend shelter
    bind {listen}
    default_backend answers

backend answers
    # the replica with the fewest open requests; any replica can go on with a conversation (the page resends
    # its earlier turns), so nothing needs to be sticky
    balance leastconn
    # ready = model verified and loaded, library checked (GET /health, no key)
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host {front}
    http-check expect status 200
    # one generation at a time per replica (and one more waiting there): the rest waits in HAProxy's queue
{servers}
"""
