"""The kernel-enforced air gap: a seccomp filter under which a socket can be created for AF_UNIX only.

Installed once, at start-up, by `appliance.cli.root.main()` for every command except the explicit online ones
(`models download`, `models install-pack`), decided from the command line before anything else runs. The filter
is built with libseccomp through `pyseccomp` (no hand-written BPF) and synchronised to every thread (TSYNC); the
kernel keeps it across fork and exec, so the engine process, pip, strace and any other child are locked as well.

An allowlist, not a denylist: a denylist of AF_INET/AF_INET6 left AF_PACKET (raw Ethernet frames, IP included, as
root), AF_VSOCK (the hypervisor), AF_XDP, AF_NETLINK, Bluetooth and every family a kernel adds later. What the
filter does, each refusal with EPERM (the errno of the kernel's own policy refusals; Python raises PermissionError):
- socket() and socketpair() with any family but AF_UNIX. The whole 64-bit argument is compared, so a family with
  high bits set (which the kernel truncates to an int: 2**32 + AF_INET is AF_INET) is refused too.
- io_uring_setup: io_uring can create sockets without the socket() system call the filter watches.
- every system call through another ABI of the machine (on x86-64: i386 by `int 0x80`, socketcall included, and
  x32): the filter is written for the native ABI only, and libseccomp's "bad architecture" action is set to EPERM
  instead of its default, which kills the calling thread (the rest of the process could then wait on it forever).
AF_UNIX is what the appliance itself uses: the engine protocol and its descriptor passing, asyncio's self-pipe
socketpair. Nothing here needs AF_NETLINK (strace of kb add, ask and doctor: AF_UNIX sockets only; glibc's
getaddrinfo opens one for AI_ADDRCONFIG and copes with its refusal), so it stays refused. Sockets created before
the filter (a server bound first, then locked) keep working: accept() is not filtered.

A filter cannot be removed once installed: never call `install()` in a process that must reach the network later
(the test suite runs the CLI in-process; its conftest switches the lock off, and dedicated tests run the real
`appliance` in subprocesses with the lock on).

The owner can switch it off: `[airgap] lock = false` in config.toml, or APPLIANCE_AIRGAP_LOCK=off for one run.
Where seccomp is unavailable (macOS, an old kernel, no libseccomp) the other guards stay and `doctor` says so.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass
from typing import Callable

# Commands that must reach the network: never locked. A command path is the subcommand names, space-separated.
ONLINE_COMMANDS = frozenset({"models download", "models install-pack", "kb download"})
# Locked by the command itself, once its listening socket is bound (appliance.serve.server): accepting on a socket
# made before the lock still works; creating one after it does not. Its other subcommands are locked at start.
AFTER_BIND = "serve"
AFTER_BIND_EXCEPT = frozenset({"keys", "shelter", "haproxy-config", "status"})
# The shelter's LAN commands (appliance.serve.replicas): they connect to the replicas named on their command line,
# loopback or private addresses only (checked before connecting), and are not locked for that reason.
LAN_COMMANDS = frozenset({"serve status"})
LAN_WHEN_ASKED = frozenset({"serve keys"})  # with --replica: pushing a revocation to the replicas


def lan_command(command_path: str, args: list[str]) -> bool:
    """Whether this command line is one of the shelter's LAN commands."""
    return command_path in LAN_COMMANDS or (command_path in LAN_WHEN_ASKED and any(
        arg == "--replica" or arg.startswith("--replica=") for arg in args))
LOCK_ENV = "APPLIANCE_AIRGAP_LOCK"
REFUSED_ERRNO = errno.EPERM
# Linux's values (the socket module is not imported at start-up: it costs ms)
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET = 1, 2, 10, 16, 17
ALLOWED_FAMILIES = {AF_UNIX: "AF_UNIX"}  # the only family socket() and socketpair() may create under the lock


@dataclass(frozen=True)
class LockState:
    """What start-up decided: `locked` (the filter is installed), else why not (`reason`)."""

    locked: bool
    reason: str
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"locked": self.locked, "reason": self.reason, "seconds": round(self.seconds, 6)}


_state: LockState | None = None  # set by apply_for(); read by doctor in the same process


def state() -> LockState | None:
    return _state


class Unavailable(Exception):
    """seccomp cannot be used here; the message says why."""


def _seccomp():
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"seccomp is Linux-only (this is {sys.platform})")
    try:
        pyseccomp = _import_pyseccomp()
    except ImportError as exc:
        raise Unavailable(f"the pyseccomp package is not installed ({exc})") from None
    except OSError as exc:  # pyseccomp loads libseccomp.so.2 with ctypes at import
        raise Unavailable(f"libseccomp cannot be loaded ({exc})") from None
    return pyseccomp


_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def _import_pyseccomp():
    """Import pyseccomp without `ctypes.util`: its find_library runs subprocesses (ldconfig -p, gcc) and importing
    it pulls in subprocess and tempfile, tens of ms at every start-up. While pyseccomp imports, `ctypes.util` is a
    stand-in that names the libraries by their usual sonames (checked by loading them), and falls back to the real
    search only when those do not load."""
    if "pyseccomp" in sys.modules:
        return sys.modules["pyseccomp"]
    import ctypes
    import types

    def find_library(name: str):
        soname = _SONAMES.get(name)
        if soname:
            try:
                ctypes.CDLL(soname)
                return soname
            except OSError:
                pass
        import importlib

        return importlib.import_module("ctypes.util").find_library(name)

    real = sys.modules.get("ctypes.util")
    if real is None:
        stand_in = types.ModuleType("ctypes.util")
        vars(stand_in)["find_library"] = find_library
        sys.modules["ctypes.util"] = stand_in
        vars(ctypes)["util"] = stand_in  # what `import ctypes.util` binds inside pyseccomp
    try:
        import pyseccomp
    finally:
        if real is None:
            del sys.modules["ctypes.util"]
            del vars(ctypes)["util"]
    return pyseccomp


def build_filter():
    """The filter, not loaded: everything allowed but sockets of any family not in ALLOWED_FAMILIES, io_uring, and
    system calls through a foreign ABI (each EPERM)."""
    seccomp = _seccomp()
    refuse = seccomp.ERRNO(REFUSED_ERRNO)
    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    flt.set_attr(seccomp.Attr.ACT_BADARCH, refuse)  # i386 (int 0x80) and x32 calls: EPERM, not a killed thread
    (family,) = ALLOWED_FAMILIES  # libseccomp takes one comparison per argument in a rule: one family, NE
    for call in ("socket", "socketpair"):
        flt.add_rule(refuse, call, seccomp.Arg(0, seccomp.NE, family))
    flt.add_rule(refuse, "io_uring_setup")
    flt.set_attr(seccomp.Attr.CTL_TSYNC, 1)  # every thread already running gets the filter too
    # Kernels before 5.16 (spec_store_bypass_disable=seccomp, their default) force the Speculative Store Bypass
    # mitigation on any process with a seccomp filter, which slows llama.cpp's matrix code in the engine process
    # that inherits it. This filter sandboxes nothing but sockets: keep the owner's prctl choice
    # (SECCOMP_FILTER_FLAG_SPEC_ALLOW). An older libseccomp without the attribute: the kernel's default applies.
    try:
        flt.set_attr(seccomp.Attr.CTL_SSB, 1)
    except (AttributeError, OSError, ValueError):
        pass
    return flt


def install() -> None:
    """Install the filter in this process, its threads and all its future children. Irreversible."""
    flt = build_filter()
    try:
        flt.load()
    except OSError as exc:
        raise Unavailable(f"the kernel refused the seccomp filter ({exc.strerror or exc})") from None


def wanted(command_path: str, config_lock: bool = True) -> tuple[bool, str]:
    """Whether this command is locked, and the reason when it is not. The environment variable wins over the
    config file (APPLIANCE_AIRGAP_LOCK=off|on)."""
    if command_path in ONLINE_COMMANDS:
        return False, f"`{command_path}` is an explicit online command"
    env = os.environ.get(LOCK_ENV)
    if env is not None:
        value = env.strip().lower()
        if value in {"0", "false", "no", "off"}:
            return False, f"switched off by {LOCK_ENV}={env}"
        if value in {"1", "true", "yes", "on"}:
            return True, ""
    if not config_lock:
        return False, "switched off by [airgap] lock = false in config.toml"
    return True, ""


def deferred(command_path: str) -> bool:
    """Whether this command installs the lock itself after binding its listener (`appliance serve`), instead of
    main() before it runs. A misread either way is safe: `serve` always locks after binding."""
    words = command_path.split()
    return bool(words) and words[0] == AFTER_BIND and not (len(words) > 1 and words[1] in AFTER_BIND_EXCEPT)


def apply_for(command_path: str, config_lock: bool = True, when: str = "at start-up") -> LockState:
    """Start-up: install the lock unless this command is online or the owner switched it off. Never raises: where
    seccomp is unavailable the state says why (and the other guards stay)."""
    global _state
    import time

    want, reason = wanted(command_path, config_lock)
    if not want:
        _state = LockState(False, reason)
        return _state
    started = time.perf_counter()
    try:
        install()
    except Unavailable as exc:
        _state = LockState(False, f"not available: {exc}")
        return _state
    _state = LockState(True, f"seccomp filter installed {when}", time.perf_counter() - started)
    return _state


def seccomp_mode(pid: int | None = None) -> str:
    """The kernel's view of this process (or of process `pid`: doctor asks it of a running server): 'filter (N
    filters)', 'strict', 'off' or 'unknown'."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii", errors="replace") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return "unknown"
    mode = fields.get("Seccomp", "").strip()
    count = fields.get("Seccomp_filters", "").strip()
    if mode == "2":
        return f"filter ({count} filter{'s' if count != '1' else ''})" if count else "filter"
    return {"0": "off", "1": "strict"}.get(mode, "unknown")


def allowed_families() -> str:
    """What the lock lets a socket be created for, in words (doctor's report)."""
    return ", ".join(ALLOWED_FAMILIES.values()) + " only"


_SYS_SOCKET_X86_64 = 41
_SOCK_DGRAM, _SOCK_RAW = 2, 3


def probe() -> tuple[bool, str]:
    """Ask the kernel for sockets the lock must refuse, none connected: AF_INET from Python's socket module, AF_INET6
    from libc's socket(), and through raw syscall(2) (as native code may) AF_NETLINK (any user can create one: its
    refusal is the lock's, not a missing privilege) and AF_PACKET. (True, how each was refused) when every one is
    refused with a permission error; else (False, what happened). A socket that was created is closed at once."""
    import ctypes
    import socket

    results = []
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except PermissionError as exc:
        results.append((True, f"socket(AF_INET) from Python: {errno.errorcode.get(exc.errno or 0, exc.errno)}"))
    except OSError as exc:
        results.append((False, f"socket(AF_INET) from Python failed otherwise ({exc})"))
    else:
        sock.close()
        results.append((False, "socket(AF_INET) from Python was allowed"))
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's socket() and syscall()
    except OSError as exc:
        return False, "; ".join([text for _, text in results] + [f"libc could not be called ({exc})"])
    def raw_socket(family: int, kind: int) -> Callable[[], int]:
        return lambda: libc.syscall(ctypes.c_long(_SYS_SOCKET_X86_64), ctypes.c_long(family), ctypes.c_long(kind),
                                    ctypes.c_long(0))

    calls: list[tuple[str, Callable[[], int]]] = [
        ("socket(AF_INET6) from C", lambda: libc.socket(AF_INET6, _SOCK_DGRAM, 0))]
    if os.uname().machine == "x86_64":
        libc.syscall.restype = ctypes.c_long
        for name, family, kind in (("AF_NETLINK", AF_NETLINK, _SOCK_RAW), ("AF_PACKET", AF_PACKET, _SOCK_RAW)):
            calls.append((f"syscall(socket, {name})", raw_socket(family, kind)))
    for label, call in calls:
        try:
            ctypes.set_errno(0)
            fd = call()
        except (OSError, AttributeError) as exc:
            results.append((False, f"{label} could not be called ({exc})"))
            continue
        if fd >= 0:
            os.close(fd)
            results.append((False, f"{label} was allowed"))
        else:
            code = ctypes.get_errno()
            results.append((code in (errno.EPERM, errno.EACCES), f"{label}: {errno.errorcode.get(code, code)}"))
    return all(ok for ok, _ in results), "; ".join(text for _, text in results)
