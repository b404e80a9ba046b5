"""The air-gap checks of `appliance doctor`: the environment guards, the kernel lock's probe, the online door, the
hub's offline mode, and the self-test watched from outside (strace, else a network namespace, else "not proven")."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import appliance
from appliance.doctor.checks import Check, warning
from appliance.system.online import is_offline


@dataclass
class NetworkWatch:
    """Every socket connect/getaddrinfo Python makes while active (an audit hook; hooks cannot be removed, so it
    only records while `active`)."""

    attempts: list[str] = field(default_factory=list)
    active: bool = False

    def hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "socket.connect":
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
                self.attempts.append(f"connect {address!r}")
        elif event == "socket.getaddrinfo":
            self.attempts.append(f"getaddrinfo {args[0]!r}")


_watch: NetworkWatch | None = None


def network_watch() -> NetworkWatch:
    global _watch
    if _watch is None:
        _watch = NetworkWatch()
        sys.addaudithook(_watch.hook)
    return _watch


def env_guards() -> Check:
    wrong = {key: os.environ.get(key) for key, value in appliance._OFFLINE_ENV.items() if os.environ.get(key) != value}
    if wrong:
        return Check("environment guards", False, "not set as expected: " +
                     ", ".join(f"{k}={v!r}" for k, v in sorted(wrong.items())))
    return Check("environment guards", True, f"{len(appliance._OFFLINE_ENV)} variables set (HF_HUB_OFFLINE=1, "
                 "telemetry off for huggingface_hub, onnxruntime, chromadb, opentelemetry)")


def hub_refuses() -> Check:
    """huggingface_hub is in offline mode: a request is refused before any socket is opened."""
    import huggingface_hub.constants as hub_constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    if not hub_constants.HF_HUB_OFFLINE:
        return Check("huggingface_hub offline", False, "huggingface_hub.constants.HF_HUB_OFFLINE is False")
    try:
        get_session().head(f"{hub_constants.ENDPOINT}/api/models", timeout=1)
    except OfflineModeIsEnabled:
        return Check("huggingface_hub offline", True, "a hub request is refused before any socket is opened")
    except Exception as exc:  # pragma: no cover  # noqa: BLE001 - would mean the guard did not hold
        return Check("huggingface_hub offline", False, f"a hub request was attempted ({type(exc).__name__})")
    return Check("huggingface_hub offline", False, "a hub request went through")


def lock_check() -> Check:
    """The kernel lock (appliance/system/netlock.py) is in force: deliberate sockets of forbidden families (AF_INET,
    AF_INET6, AF_NETLINK, AF_PACKET; from Python, libc and raw system calls) are refused by the kernel. The detail
    names the families the lock allows."""
    from appliance.system import netlock

    state = netlock.state()
    refused, how = netlock.probe()
    name = "kernel network lock"
    if refused:
        cost = f"; installed in {state.seconds * 1000:.1f} ms at start-up" if state and state.locked else ""
        return Check(name, True, f"in force (seccomp {netlock.seccomp_mode()}): sockets allowed for "
                     f"{netlock.allowed_families()}, i386 and x32 system calls refused; the kernel refused {how}{cost}")
    if state is not None and state.locked:
        return Check(name, False, f"installed but not holding: {how}", fix="report this; the other guards stay")
    reason = state.reason if state else "not installed (this process did not start through `appliance`)"
    if reason.startswith("not available"):
        return warning(name, f"{reason}; the environment guards and the online door still hold",
                       fix="on Linux, install libseccomp (libseccomp2) and the pyseccomp package")
    return warning(name, f"off: {reason}; {how}",
                   fix=f"remove `lock = false` from [airgap] in config.toml and unset {netlock.LOCK_ENV}")


def door_check() -> Check:
    """The one online door: which commands may open it, and that it is shut now."""
    from appliance.system import netlock

    doors = ", ".join(f"`appliance {command}`" for command in sorted(netlock.ONLINE_COMMANDS))
    if not is_offline():
        return Check("online door", False, "the door is open outside an online command (HF_HUB_OFFLINE is not 1)",
                     fix="unset HF_HUB_OFFLINE (the appliance sets it itself)")
    return Check("online door", True, f"shut; only {doors} open it (never locked, each an explicit request)")


# A connect or send to an internet address, or the creation of an internet socket (refused or not): an attempt.
INET_ATTEMPT = re.compile(r"socket\(AF_INET6?,|(connect|sendto|sendmsg|sendmmsg)\(\d+, \[?\{sa_family=AF_INET6?[,}]")
SELFTEST = [sys.executable, "-m", "appliance.doctor.selftest"]


def _selftest_result(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {"error": "the self-test printed nothing"}


def _flow(done: dict) -> str:
    return f"loaded {done.get('model')}, retrieval: {done.get('retrieval')}, generated {done.get('tokens')} tokens"


def _under_strace(timeout: float) -> Check | str:
    tool = shutil.which("strace")
    if not tool:
        return "strace is not installed"
    with tempfile.TemporaryDirectory(prefix="appliance-selftest-") as tmp:
        trace = Path(tmp) / "trace"
        try:
            result = subprocess.run([tool, "-f", "-qq", "-e", "trace=execve,socket,connect,sendto,sendmsg,sendmmsg",
                                     "-o", str(trace), "--", *SELFTEST], capture_output=True, text=True,
                                    timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Check("air-gap self-test", False, f"the watched flow did not finish in {timeout:.0f} s")
        text = trace.read_text(errors="replace") if trace.exists() else ""
    if "execve(" not in text:
        said = result.stderr.strip().splitlines()
        return f"strace cannot trace here ({said[-1][:120] if said else 'no trace'})"
    attempts = [line.split(" ", 1)[-1][:160] for line in text.splitlines() if INET_ATTEMPT.search(line)]
    done = _selftest_result(result.stdout)
    if attempts:
        return Check("air-gap self-test", False, f"watched with strace: {len(attempts)} network attempt(s) in the "
                     f"self-test process: {'; '.join(attempts[:2])}", fix="report this: something tried the network")
    if result.returncode != 0 or "error" in done:
        return Check("air-gap self-test", False, f"watched with strace, no network attempt, but the flow failed: "
                     f"{done.get('error', result.stderr.strip()[-200:])}", fix="run `appliance ask` to see the error")
    return Check("air-gap self-test", True, f"watched with strace (every socket, connect and send of the process "
                 f"and its children): none to the network while it {_flow(done)}")


def _in_namespace(timeout: float) -> Check | str:
    tool = shutil.which("unshare")
    if not tool:
        return "unshare is not installed"
    flags = ["-n"] if os.geteuid() == 0 else ["-r", "-n"]
    if subprocess.run([tool, *flags, "true"], capture_output=True).returncode != 0:
        return "this user cannot make a network namespace"
    try:
        result = subprocess.run([tool, *flags, "--", *SELFTEST], capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Check("air-gap self-test", False, f"the flow did not finish in {timeout:.0f} s without a network")
    done = _selftest_result(result.stdout)
    if result.returncode != 0 or "error" in done:
        return Check("air-gap self-test", False, f"in a network namespace the flow failed: "
                     f"{done.get('error', result.stderr.strip()[-200:])}", fix="run `appliance ask` to see the error")
    return Check("air-gap self-test", True, f"in a network namespace with no network device, it {_flow(done)} "
                 "(attempts are refused there, not observed; install strace to see them)")


def watched_selftest(timeout: float = 600) -> Check:
    """Load, retrieval and a short generation in a child process, watched from outside: strace when present, else
    a network namespace when this user can make one; "not proven" when neither works, never a false ok."""
    why_not = []
    for method in (_under_strace, _in_namespace):
        outcome = method(timeout)
        if isinstance(outcome, Check):
            return outcome
        why_not.append(outcome)
    return warning("air-gap self-test", f"not proven: {'; '.join(why_not)}",
                   fix="install strace (apt install strace) so doctor can watch the flow's system calls")
