"""The appliance's own HTTP client (urllib), the one place outside huggingface_hub where it opens a connection:
`exchange` (one request and its reply, an error status included), `read` (a small document read whole: a catalog
feed, a .sha256, a .meta4) and `fetch` (a large file appended to a `.partial` with HTTP Range, so a cut link
resumes from the bytes already on disk, in the same run a few times and on the next run).

Callers: `appliance kb download`, inside `appliance.system.online.online()`, and the shelter's LAN commands
(appliance.serve.replicas: `serve status`, `serve keys revoke --replica`, to the private addresses on their command
line). Those are the commands netlock leaves unlocked; under the kernel lock (every other command) a socket is
refused.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from appliance.errors import ApplianceError, IntegrityError

TIMEOUT_S = 60
MAX_RETRIES = 5  # consecutive attempts that brought no new byte
BLOCK = 1 << 20
USER_AGENT = "appliance-kb-download (offline appliance; https://kiwix.org catalog)"

Progress = Callable[[int, int], None]


def _request(url: str, start: int = 0, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> urllib.request.Request:
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    if start:
        sent["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, data=data, headers=sent, method="POST" if data is not None else "GET")


def _said(exc: BaseException, url: str) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"{url}: HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{url}: cannot be reached ({exc.reason})"
    return f"{url}: {type(exc).__name__} ({exc})"


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    body: bytes  # at most the caller's limit + 1 bytes: one more says there was more

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def exchange(url: str, limit: int, data: bytes | None = None, headers: dict[str, str] | None = None,
             timeout: float = TIMEOUT_S) -> Reply:
    """One request (a POST when `data` is given) and its reply, an HTTP error status with its body included.
    Raises ApplianceError when no reply came (refused, unreachable, timed out)."""
    try:
        with urllib.request.urlopen(_request(url, data=data, headers=headers),  # noqa: S310 - http(s) only
                                    timeout=timeout) as response:
            return Reply(response.status, str(response.reason), response.read(limit + 1))
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(limit + 1)
        except OSError:
            body = b""
        return Reply(exc.code, str(exc.reason), body)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise ApplianceError(_said(exc, url)) from None


def read(url: str, limit: int) -> bytes:
    """The whole body of `url`, at most `limit` bytes (more is refused). Raises ApplianceError."""
    reply = exchange(url, limit)
    if not reply.ok:
        raise ApplianceError(f"{url}: HTTP {reply.status} {reply.reason}")
    data = reply.body
    if len(data) > limit:
        raise ApplianceError(f"{url}: more than {limit} bytes; not a file this command reads")
    return data


def fetch(url: str, partial: Path, size: int | None, progress: Progress | None = None,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Append the missing bytes of `url` to `partial` until the server has sent all (`size` when known). Returns
    the file's length. A server that ignores the Range asked for is an error, never a silent restart."""
    failures = 0
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if size is not None and have == size:
            return have
        if size is not None and have > size:
            raise IntegrityError(f"{partial} has {have} bytes, more than the {size} the catalog announced; move it "
                                 "aside and download again")
        before = have
        total = size
        try:
            with urllib.request.urlopen(_request(url, have), timeout=TIMEOUT_S) as response:  # noqa: S310
                if have:
                    if response.status != 206:
                        raise ApplianceError(f"the server ignored the request to resume at byte {have} (HTTP "
                                             f"{response.status}); {partial} is kept as it is, not restarted")
                    if not (response.headers.get("Content-Range") or "").startswith(f"bytes {have}-"):
                        raise ApplianceError(f"the server resumed at the wrong place "
                                             f"({response.headers.get('Content-Range')!r} for byte {have}); "
                                             f"{partial} is kept as it is")
                if total is None:
                    length = response.headers.get("Content-Length")
                    total = have + int(length) if length and length.isdigit() else None
                with partial.open("ab") as out:
                    while block := response.read(BLOCK):
                        if total is not None and have + len(block) > total:
                            raise IntegrityError(f"{url} sent more than the {total} bytes announced")
                        out.write(block)
                        out.flush()  # every piece that arrived is on disk before the next read
                        have += len(block)
                        if progress:
                            progress(have, total or have)
                    os.fsync(out.fileno())
            if total is None or have >= total:
                return have
            raise _Short()
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and size is None and have:
                return have  # asked past the end: the file was complete
            kept = f"; {have} bytes are kept in {partial}: run the same command again to resume" if have else ""
            raise ApplianceError(_said(exc, url) + kept) from None
        except (_Short, urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
            failures = 0 if have > before else failures + 1
            if failures >= MAX_RETRIES:
                raise ApplianceError(f"download interrupted ({_said(exc, url)}); {have} bytes are kept in "
                                     f"{partial}: run the same command again to resume") from None
            sleep(min(0.25 * 2 ** failures, 4.0))


class _Short(Exception):
    def __str__(self) -> str:
        return "the connection closed before the whole file arrived"
