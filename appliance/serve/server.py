"""`appliance serve`: bind, lock, load, then answer.

    choose the address (loopback; --lan: the private interface; a public one refused) -> bind the listener
    -> install the network lock (appliance.system.netlock; from here no IP socket can be created, the listener
       still accepts) -> load the default model, verified, in the engine process (which inherits the lock)
    -> open the library (its content hash for /health) -> write serve/state.json (doctor reads it)
    -> print the URL, the join link's QR code and what others on the network can see -> uvicorn on the socket

The one engine answers one question at a time (appliance.serve.queue). Ctrl-C stops it; the state file goes.
APPLIANCE_SERVE_PLUGIN=module:function (test-only) is called inside the server after the lock and the load: the
tests use it to try a connection from inside the serving process.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from appliance.paths import Paths, atomic_write_text

PLUGIN_ENV = "APPLIANCE_SERVE_PLUGIN"


@dataclass(frozen=True)
class Options:
    lan: bool = False
    bind: str | None = None
    port: int = 8737
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_hosts: tuple[str, ...] = ()  # more names the Host header may carry (a router in front: the shelter's)
    queue_limit: int = 16
    qr: bool = True


def state_path(paths: Paths) -> Path:
    return paths.serve / "state.json"


def serve(paths: Paths, options: Options, say: Callable[[str], None], lock: Callable[[], str]) -> None:
    """Run until interrupted. `lock()` installs the network lock and says how (called right after binding)."""
    import socket

    import uvicorn

    from appliance.serve import network
    from appliance.serve.asking import Asker, Limits
    from appliance.serve.devices import DeviceKeys, JoinTokens
    from appliance.serve.queue import AnswerQueue
    from appliance.serve.web import Served, create_app, library_hash
    from appliance.services import Services

    address = network.choose_address(options.lan, options.bind)
    listener = network.bind(address, options.port)
    lock_line = lock()  # bind first, then lock: accepting is not connecting
    port = listener.getsockname()[1]
    tls = (network.tls_files(paths.serve / "tls", address, options.tls_cert, options.tls_key)
           if options.tls or options.tls_cert else None)
    scheme = "https" if tls else "http"
    base = f"{scheme}://{network.url_host(address)}:{port}"

    services = Services.create(paths)
    say(f"loading {services.config.model.default or 'the default model'} (verified first) ...")
    loaded = services.engine.load()
    kb = services.kb
    if kb.reranker_files is not None:  # read (and hashed) now, not on the first phone's question
        say("reading the reranker (verified first) ...")
        if kb.rerank is None:
            for notice in kb.take_notices():
                say(notice)
    problem = _library_problem(kb)
    limits = Limits()
    hosts = {network.url_host(address).lower(), address.lower()}
    if address.startswith("127.") or address == "::1":
        hosts |= {"localhost"}
    else:
        name = socket.gethostname().lower()
        hosts |= {name, f"{name}.local"}
    hosts |= {h.lower() for h in options.allow_hosts}
    joins = JoinTokens()
    served = Served(asker=Asker(services, limits), queue=AnswerQueue(options.queue_limit),
                    keys=DeviceKeys(paths.devices), joins=joins, limits=limits,
                    allowed_hosts=hosts, model_name=loaded.entry.name, model_sha256=loaded.entry.sha256,
                    library_hash=library_hash(kb.documents()), ready=True, tls=tls is not None,
                    library_verified=problem, replica=_replica_id(paths))
    if problem:
        say(f"the library did not pass its checks ({problem}): /health says not ready; `appliance kb repair`")
        served.ready = False

    def show_join(device: str | None = None) -> None:
        if device:
            say(f"{device} joined. The next device joins with this link (one use, 10 minutes):")
        link = f"{base}/join?t={joins.issue()}"
        say(f"  {link}")
        if options.qr:
            _qr(link)

    served.on_join = show_join
    state = state_path(paths)
    atomic_write_text(state, json.dumps({"pid": os.getpid(), "url": base, "address": address, "port": port,
                                         "tls": tls is not None, "lock": lock_line, "started": time.time()}) + "\n")
    try:
        plugin = os.environ.get(PLUGIN_ENV)
        if plugin:
            module, _, function = plugin.partition(":")
            getattr(importlib.import_module(module), function)()
        say(f"serving {loaded.entry.name} at {base}  ({lock_line})")
        if tls is not None:
            say(f"TLS certificate SHA-256 fingerprint (check it on the first visit):\n  {tls.fingerprint}")
        else:
            say("plain HTTP: on an open Wi-Fi anyone nearby can read the questions and copy a device's key; use a "
                "hotspot with a WPA2/WPA3 password, or --tls")
        say("join from a phone: scan the QR code, or open the link (one use, 10 minutes):")
        show_join()
        say("keys for other devices: appliance serve keys add NAME; stop with Ctrl-C")
        config = uvicorn.Config(create_app(served), http=network.GuardedH11, lifespan="off", log_level="warning",
                                access_log=False, server_header=False, timeout_keep_alive=5,
                                timeout_graceful_shutdown=3, limit_concurrency=64,
                                h11_max_incomplete_event_size=16 * 1024,
                                ssl_certfile=str(tls.certfile) if tls else None,
                                ssl_keyfile=str(tls.keyfile) if tls else None)
        # uvicorn re-raises a signal it caught once it has shut down: Python handlers make that an exception here,
        # so the cleanup below runs (the default SIGTERM action would end the process first)
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            uvicorn.Server(config).run(sockets=[listener])
        except _Stopped:
            pass
        say("stopped")
    finally:
        served.queue.close()
        services.engine.unload()
        try:
            state.unlink()
        except OSError:
            pass
        listener.close()


class _Stopped(Exception):
    pass


def _stop(signum, frame) -> None:
    raise _Stopped


def _qr(link: str) -> None:
    import segno

    try:
        segno.make(link, error="l").terminal(out=sys.stdout, compact=True, border=2)
    except (OSError, ValueError, UnicodeEncodeError):
        pass  # a terminal that cannot draw it still has the link above
    sys.stdout.flush()


def _library_problem(kb) -> str:
    """"" when the library's store passes SQLite's quick_check with an empty journal; else what failed."""
    try:
        structure = kb.store.quick_check()
        journal = kb.store.journal()
    except Exception as exc:  # noqa: BLE001 - a damaged store is what this reports
        return str(exc)[:200]
    if structure != "ok":
        return f"quick_check: {structure[:200]}"
    return f"{len(journal)} unfinished ingest step(s)" if journal else ""


def _replica_id(paths: Paths) -> str:
    path = paths.serve / "replica-id"
    try:
        return path.read_text().strip()
    except OSError:
        import secrets

        made = secrets.token_hex(4)
        atomic_write_text(path, made + "\n")
        return made


def running(paths: Paths) -> dict | None:
    """The state of a server running from this data dir (doctor), or None; a stale file (its process gone) too."""
    try:
        data = json.loads(state_path(paths).read_text())
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    from appliance.system import netlock

    if not Path(f"/proc/{pid}").exists():
        return data | {"alive": False}
    return data | {"alive": True, "seccomp": netlock.seccomp_mode(pid)}
