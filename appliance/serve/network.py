"""Where a served appliance listens, and the listener's own guards.

Loopback by default; `--lan` binds the address of one private interface (RFC 1918, link-local, or IPv6 ULA /
link-local); a public address is refused. The socket is bound here, before the network lock is installed
(appliance.system.netlock): after that the process may accept on it but cannot create another IP socket.

GuardedH11 is uvicorn's h11 protocol with a header timeout: a connection that has not sent a whole request head
within HEADER_TIMEOUT_S of connecting (or of its previous response) is closed, so a client sending a byte a second
holds nothing (uvicorn itself only times out idle keep-alive connections).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from uvicorn.protocols.http.h11_impl import H11Protocol

from appliance.errors import UsageError

DEFAULT_PORT = 8737  # not a port anything common uses (IANA: unassigned)
HEADER_TIMEOUT_S = 10.0
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class Interface:
    name: str
    address: str

    @property
    def private(self) -> bool:
        return is_private(self.address)


def is_private(address: str) -> bool:
    """RFC 1918 / RFC 4193 ULA / link-local: addresses a local network uses and the internet does not route."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.is_loopback:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                              "169.254.0.0/16"))
    return ip in ipaddress.ip_network("fc00::/7") or ip in ipaddress.ip_network("fe80::/10")


def interfaces() -> list[Interface]:
    """This machine's IPv4 interface addresses (ioctl SIOCGIFADDR) and IPv6 ones (/proc/net/if_inet6)."""
    found: list[Interface] = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            found.append(Interface(name, socket.inet_ntoa(packed[20:24])))
    finally:
        probe.close()
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 6:
            address = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
            found.append(Interface(parts[5], f"{address}%{parts[5]}" if address.startswith("fe80") else address))
    return found


def choose_address(lan: bool, bind: str | None) -> str:
    """The address to bind: loopback; with --lan the one private interface; --bind ADDR checked."""
    if bind:
        try:
            ip = ipaddress.ip_address(bind.split("%")[0])
        except ValueError:
            raise UsageError(f"--bind {bind!r} is not an IP address") from None
        if not ip.is_loopback and not is_private(bind):
            raise UsageError(f"{bind} is a public address: the appliance serves only loopback or a private network "
                             "(10/8, 172.16/12, 192.168/16, link-local, fc00::/7); use a hotspot or a local router")
        return bind
    if not lan:
        return "127.0.0.1"
    private = [i for i in interfaces() if i.private and not i.address.startswith("fe80")]
    if not private:
        raise UsageError("--lan: this machine has no private network address (10.x, 172.16-31.x, 192.168.x); join "
                         "a Wi-Fi network or start a hotspot first, or give one with --bind ADDR")
    ipv4 = [i for i in private if ":" not in i.address]
    chosen = (ipv4 or private)
    if len(chosen) > 1:
        listed = ", ".join(f"{i.address} ({i.name})" for i in chosen)
        raise UsageError(f"--lan: several private addresses ({listed}); pick one with --bind ADDR")
    return chosen[0].address


def bind(address: str, port: int) -> socket.socket:
    """The listening socket, bound now (before the lock)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            info = socket.getaddrinfo(address, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
            sock.bind(info[0][4])
        else:
            sock.bind((address, port))
        sock.listen(128)
        sock.set_inheritable(False)
    except OSError as exc:
        sock.close()
        reason = "the port is in use (another appliance serve?)" if exc.errno == 98 else (exc.strerror or str(exc))
        raise UsageError(f"cannot listen on {address} port {port}: {reason}; pick another with --port") from None
    return sock


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol, with a time limit on receiving a request's head."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._head_cycle = self.cycle
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timeout)

    def _head_timeout(self) -> None:
        if self.cycle is self._head_cycle and not self.transport.is_closing():
            self.transport.close()  # no whole request head in time: a slow or stuck client

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head_timer.cancel()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)


@dataclass(frozen=True)
class TLS:
    certfile: Path
    keyfile: Path
    fingerprint: str  # SHA-256 of the certificate (DER), as a browser shows it


def tls_files(directory: Path, address: str, cert: Path | None, key: Path | None) -> TLS:
    """The owner's certificate and key, or a self-signed pair made once (kept in `directory`) for `address`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if cert or key:
        if not (cert and key):
            raise UsageError("--tls-cert and --tls-key go together")
        for path in (cert, key):
            if not path.is_file():
                raise UsageError(f"{path} is not a readable file")
    else:
        cert, key = directory / f"cert-{address}.pem", directory / f"key-{address}.pem"
        if not (cert.is_file() and key.is_file()):
            directory.mkdir(parents=True, exist_ok=True)
            private = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"appliance {address}")])
            now = datetime.datetime.now(datetime.timezone.utc)
            alt: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(address.split("%")[0]))]
            certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                           .public_key(private.public_key()).serial_number(x509.random_serial_number())
                           .not_valid_before(now - datetime.timedelta(days=1))
                           .not_valid_after(now + datetime.timedelta(days=3650))
                           .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                           .sign(private, hashes.SHA256()))
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
            cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        raise UsageError(f"{cert} is not a PEM certificate") from None
    digest = hashlib.sha256(loaded.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return TLS(cert, key, ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)))
