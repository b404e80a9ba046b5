"""A stand-in for the Hugging Face hub on 127.0.0.1 (and nowhere else): the two endpoints huggingface_hub calls for
a download (model info with file metadata, and resolve with Range support), plus ways to misbehave."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "3f2a9c1e5b7d4f60a1b2c3d4e5f60718293a4b5c"


@dataclass
class HubState:
    repo_id: str
    filename: str
    content: bytes
    card: dict = field(default_factory=dict)
    tags: list = field(default_factory=list)
    advertised_sha256: str | None = None  # what the hub says; None: the real sha256 of `content`
    cut_first_at: int | None = None  # the first file response stops after this many body bytes
    fail_after_first: int | None = None  # later file requests get this HTTP status (e.g. 503), until cleared
    requests: list = field(default_factory=list)  # (method, path, Range header or None, body bytes sent)

    @property
    def sha256(self) -> str:
        return self.advertised_sha256 or hashlib.sha256(self.content).hexdigest()

    def file_requests(self) -> list:
        return [r for r in self.requests if "/resolve/" in r[1]]


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _json(self, status: int, body: dict, error_code: str | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            if error_code:
                self.send_header("X-Error-Code", error_code)  # as the hub does; huggingface_hub maps it
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            state.requests.append(("GET", self.path, None, len(data)))

        def do_GET(self):  # noqa: N802 - http.server's naming
            path = unquote(urlsplit(self.path).path)
            if path in (f"/api/models/{state.repo_id}", f"/api/models/{state.repo_id}/revision/main",
                        f"/api/models/{state.repo_id}/revision/{COMMIT}"):
                return self._json(200, {
                    "id": state.repo_id, "sha": COMMIT, "private": False, "gated": False, "tags": state.tags,
                    "cardData": state.card,
                    "siblings": [
                        {"rfilename": "README.md", "size": 120, "blobId": "0" * 40},
                        {"rfilename": state.filename, "size": len(state.content), "blobId": "1" * 40,
                         "lfs": {"sha256": state.sha256, "size": len(state.content), "pointerSize": 134}},
                    ],
                })
            if path == f"/{state.repo_id}/resolve/{COMMIT}/{state.filename}":
                return self._file()
            if path.startswith("/api/models/"):
                return self._json(404, {"error": "Repository not found"}, "RepoNotFound")
            return self._json(404, {"error": "Entry not found"}, "EntryNotFound")

        def _file(self):
            ranged = self.headers.get("Range")
            earlier = len(state.file_requests())
            if earlier and state.fail_after_first:
                state.requests.append(("GET", self.path, ranged, 0))
                return self._json(state.fail_after_first, {"error": "try later"})
            start = 0
            if ranged:
                start = int(ranged.removeprefix("bytes=").split("-")[0])
            body = state.content[start:]
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{state.sha256}"')
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{len(state.content) - 1}/{len(state.content)}")
            self.end_headers()
            if earlier == 0 and state.cut_first_at is not None:
                body = body[:state.cut_first_at]  # then the link is cut: fewer bytes than Content-Length
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()
            state.requests.append(("GET", self.path, ranged, len(body)))

    return Handler


class HubServer:
    def __init__(self, state: HubState):
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
