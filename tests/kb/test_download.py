"""`appliance kb download` against a stand-in of Kiwix's catalog and mirror on 127.0.0.1: an OPDS feed, a real ZIM
made by zimwriterfs, its .sha256 and .meta4, HTTP Range. A good download is registered and searchable; a wrong byte
is refused (exit 3) with nothing left; a cut connection resumes; --dry-run reads only the feed; --from DIR takes
a folder with the network locked; `kb catalog` lists the shipped starter set."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from tests.conftest import run_appliance
from tests.kb import fixtures

NAME = "zimgit-water_en"  # in the shipped catalog
FILE = f"{NAME}_2026-11.zim"
ARTICLES = {"Boiling.html": ("Boiling water", [("How long", "Boil clear water for one full minute before drinking "
                                                            "it; at high altitude boil it for three minutes.")])}
QUERY = "how long do I boil drinking water"


@dataclass
class Mirror:
    """What the stand-in serves, and what it was asked."""

    content: bytes
    sha256: str
    served: bytes = b""  # the bytes sent as the file (a corrupted copy for the mismatch test)
    cut_first_after: int | None = None  # close the first file response after this many bytes
    sidecar: bool = True  # serve <file>.sha256 (else only the .meta4 has the hash)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header)
    announced: int | None = None  # the length the feed announces (default: the real one)

    def feed(self, host: str) -> bytes:
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:dc="http://purl.org/dc/terms/"
      xmlns:opds="https://specs.opds.io/opds-1.2">
  <id>urn:uuid:0</id><title>Filtered Entries</title><updated>2026-11-20T00:00:00Z</updated>
  <entry>
    <id>urn:uuid:old</id><title>Water</title><updated>2026-01-05T00:00:00Z</updated>
    <name>{NAME}</name><flavour></flavour><language>eng</language>
    <publisher><name>openZIM</name></publisher>
    <link rel="http://opds-spec.org/acquisition/open-access" type="application/x-zim"
          href="{host}/download/zim/{NAME}_2026-01.zim.meta4" length="999"/>
  </entry>
  <entry>
    <id>urn:uuid:1</id><title>Water</title><updated>2026-11-20T00:00:00Z</updated>
    <name>{NAME}</name><flavour></flavour><language>eng</language>
    <publisher><name>openZIM</name></publisher>
    <link rel="http://opds-spec.org/acquisition/open-access" type="application/x-zim"
          href="/download/zim/{FILE}.meta4" length="{self.announced or len(self.content)}"/>
  </entry>
</feed>""".encode()

    def meta4(self, host: str) -> bytes:
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <file name="{FILE}">
    <size>{len(self.content)}</size>
    <hash type="md5">00000000000000000000000000000000</hash>
    <hash type="sha-256">{self.sha256}</hash>
    <url location="xx" priority="1">{host}/download/zim/{FILE}</url>
  </file>
</metalink>""".encode()


@pytest.fixture
def mirror(tmp_path):
    zim = fixtures.make_zim(tmp_path / "made" / FILE, ARTICLES, title="Water")
    content = zim.read_bytes()
    state = Mirror(content, hashlib.sha256(content).hexdigest(), served=content)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            state.requests.append((self.path, self.headers.get("Range", "")))
            path = self.path.split("?")[0]
            if path == "/catalog/v2/entries":
                return self._send(200, state.feed(host), "application/atom+xml")
            if path == f"/download/zim/{FILE}.sha256" and state.sidecar:
                return self._send(200, f"{state.sha256}  {FILE}\n".encode(), "text/plain")
            if path == f"/download/zim/{FILE}.meta4":
                return self._send(200, state.meta4(host), "application/metalink4+xml")
            if path == f"/download/zim/{FILE}":
                return self._file()
            return self._send(404, b"not here", "text/plain")

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self) -> None:
            body, start = state.served, 0
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes="):
                start = int(wanted[6:].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            part = body[start:]
            if state.cut_first_after is not None:
                part, state.cut_first_after = part[: state.cut_first_after], None
                self.wfile.write(part)
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield state
    server.shutdown()
    server.server_close()


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def offline_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def test_a_good_download_is_checked_registered_and_searchable(appliance_home, mirror, offline_proxy, tmp_path):
    done = _run("kb", "download", "--catalog", mirror.base, "--json", NAME)
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    (archive,) = data["archives"]
    assert archive["sha256"] == mirror.sha256 and archive["sha256_from"].endswith(f"{FILE}.sha256")
    assert data["registered"]["registered_zims"] == 1
    folder = appliance_home / "archives"
    assert _files(folder) == [FILE, f"{FILE}.sha256"]  # the .partial renamed, the carry-on hash beside it
    assert (folder / FILE).read_bytes() == mirror.content
    # the newest entry of the feed was chosen, the older one never fetched
    assert not any("2026-01" in path for path, _ in mirror.requests)
    found = json.loads(_run("kb", "search", "--json", QUERY).stdout)
    assert found["hits"] and found["hits"][0]["path"] == str(folder / FILE)
    shown = json.loads(_run("kb", "show", FILE, "--json").stdout)
    origin = shown["record"]["origin"]
    assert origin["kind"] == "url" and origin["url"] == f"{mirror.base}/download/zim/{FILE}"
    assert origin["catalog"]["name"] == NAME and origin["shipped_entry"] == NAME
    assert shown["record"]["sha256"] == mirror.sha256
    # run again: the file is there with the published hash, nothing is fetched again
    again = _run("kb", "download", "--catalog", mirror.base, NAME)
    assert again.exit_code == 0 and "already there" in again.stdout
    assert sum(1 for path, _ in mirror.requests if path.endswith(f"/{FILE}")) == 1


def test_the_meta4_hash_is_used_when_there_is_no_sha256_file(appliance_home, mirror, offline_proxy):
    mirror.sidecar = False
    done = _run("kb", "download", "--catalog", mirror.base, "--json", NAME)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["archives"][0]["sha256_from"].endswith(f"{FILE}.meta4")


def test_a_corrupted_byte_is_refused_and_nothing_is_left(appliance_home, mirror, offline_proxy):
    broken = bytearray(mirror.content)
    broken[len(broken) // 2] ^= 0xFF
    mirror.served = bytes(broken)
    done = _run("kb", "download", "--catalog", mirror.base, NAME)
    assert done.exit_code == 3, done.output
    assert "the partial file was deleted, nothing was registered" in done.output
    assert _files(appliance_home / "archives") == []
    assert json.loads(_run("kb", "list", "--json").stdout) == []


def test_a_cut_connection_resumes_in_the_same_run(appliance_home, mirror, offline_proxy):
    mirror.cut_first_after = len(mirror.content) // 2
    done = _run("kb", "download", "--catalog", mirror.base, NAME)
    assert done.exit_code == 0, done.output
    ranges = [wanted for path, wanted in mirror.requests if path.endswith(f"/{FILE}")]
    assert ranges == ["", f"bytes={len(mirror.content) // 2}-"]
    assert (appliance_home / "archives" / FILE).read_bytes() == mirror.content


def test_an_interrupted_download_resumes_from_the_partial_file(appliance_home, mirror, offline_proxy):
    folder = appliance_home / "archives"
    folder.mkdir(parents=True)
    third = len(mirror.content) // 3
    (folder / f"{FILE}.partial").write_bytes(mirror.content[:third])  # what an earlier, cut run left
    done = _run("kb", "download", "--catalog", mirror.base, NAME)
    assert done.exit_code == 0, done.output
    assert [w for p, w in mirror.requests if p.endswith(f"/{FILE}")] == [f"bytes={third}-"]
    assert (folder / FILE).read_bytes() == mirror.content and _files(folder) == [FILE, f"{FILE}.sha256"]


def test_dry_run_reads_the_feed_only(appliance_home, mirror, offline_proxy):
    done = _run("kb", "download", "--catalog", mirror.base, "--dry-run", "--json", NAME)
    assert done.exit_code == 0, done.output
    (row,) = json.loads(done.stdout)["would_fetch"]
    assert row["file"] == FILE and row["length"] == len(mirror.content)
    assert [path.split("?")[0] for path, _ in mirror.requests] == ["/catalog/v2/entries"]
    assert _files(appliance_home / "archives") == []
    text = _run("kb", "download", "--catalog", mirror.base, "--dry-run", NAME)
    assert f"would fetch {NAME}: {FILE}" in text.stdout


def test_an_archive_larger_than_the_free_disk_is_refused_before_it_is_fetched(appliance_home, mirror,
                                                                              offline_proxy):
    mirror.announced = 10**15  # a petabyte
    done = _run("kb", "download", "--catalog", mirror.base, NAME)
    assert done.exit_code == 1 and "free some space or choose another folder with --to" in done.output
    assert not any(path.startswith("/download/") for path, _ in mirror.requests)


def test_an_unknown_name_is_one_line(appliance_home, mirror, offline_proxy):
    done = _run("kb", "download", "--catalog", mirror.base, "no_such_archive")
    assert done.exit_code == 2 and "lists no archive named 'no_such_archive'" in done.output


def test_from_a_folder_with_the_network_locked(appliance_home, mirror, tmp_path):
    """The real command in a subprocess, the kernel lock on (run_appliance drops the test process's switch):
    nothing reaches the network, the folder's archive is checked, copied, registered and searchable."""
    stick = tmp_path / "usb"
    stick.mkdir()
    (stick / FILE).write_bytes(mirror.content)
    (stick / f"{FILE}.sha256").write_text(f"{mirror.sha256}  {FILE}\n")
    done = run_appliance("kb", "download", "--from", str(stick), "--json", NAME)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["archives"][0]["origin"] == {"kind": "folder", "path": str(stick / FILE),
                                             "sha256_from": str(stick / f"{FILE}.sha256")}
    assert mirror.requests == []
    found = run_appliance("kb", "search", "--json", QUERY)
    assert found.returncode == 0 and json.loads(found.stdout)["hits"][0]["path"].endswith(f"archives/{FILE}")


def test_from_a_folder_a_wrong_hash_is_refused(appliance_home, mirror, tmp_path):
    stick = tmp_path / "usb"
    stick.mkdir()
    (stick / FILE).write_bytes(mirror.content)
    (stick / f"{FILE}.sha256").write_text(f"{'0' * 64}  {FILE}\n")
    done = _run("kb", "download", "--from", str(stick), NAME)
    assert done.exit_code == 3 and "the copy was deleted, nothing was registered" in done.output
    assert _files(appliance_home / "archives") == []
    (stick / f"{FILE}.sha256").unlink()
    bare = _run("kb", "download", "--from", str(stick), NAME)
    assert bare.exit_code == 3 and "beside it to check it against; not taken" in bare.output


def test_kb_catalog_lists_the_starter_set_with_sizes_licenses_and_what_fits(appliance_home):
    shown = _run("kb", "catalog", "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    names = {entry["name"] for entry in data["entries"]}
    assert {"wikipedia_en_medicine", "zimgit-medicine_en", "zimgit-water_en", "zimgit-food-preparation_en",
            "zimgit-post-disaster_en", "ifixit_en_all", "wikivoyage_en_all"} <= names
    for entry in data["entries"]:
        assert entry["publisher"] and entry["language"] and entry["good_for"] and entry["license"]["basis"]
        assert entry["fits_free_disk"] in (True, False)
    assert "approximate" in data["size_basis"] and ".sha256" in data["hash_source"]
    text = _run("kb", "catalog")
    assert "the whole set: ~" in text.stdout and "zimgit-water_en" in text.stdout


def test_the_real_command_goes_online_with_the_lock_on_by_default(appliance_home, mirror):
    """`kb download` is an explicit online command: the installed command, with the kernel lock on for everything
    else, reaches the stand-in; `kb search` in the same environment stays locked and still answers offline."""
    env = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    done = run_appliance("kb", "download", "--catalog", mirror.base, NAME, env=env)
    assert done.returncode == 0, done.stderr
    assert "sha256 matches" in done.stdout and "registered: 1 new" in done.stdout
    found = run_appliance("kb", "search", QUERY, env=env)
    assert found.returncode == 0 and FILE in found.stdout


def test_from_a_folder_under_strace_makes_no_inet_connection(appliance_home, mirror, tmp_path):
    """`kb download --from DIR`, `kb verify` and `kb show` in a network namespace, watched by strace: no
    AF_INET/AF_INET6 connect attempt at all (the lock is on for them too)."""
    from tests.airgap import run_offline

    stick = tmp_path / "usb"
    stick.mkdir()
    (stick / FILE).write_bytes(mirror.content)
    (stick / f"{FILE}.meta4").write_bytes(mirror.meta4("http://127.0.0.1:1"))
    runs = [run_offline("kb", "download", "--from", str(stick), NAME, trace_file=tmp_path / "from.trace"),
            run_offline("kb", "verify", trace_file=tmp_path / "verify.trace"),
            run_offline("kb", "show", FILE, trace_file=tmp_path / "show.trace")]
    for traced in runs:
        assert traced.result.returncode == 0, traced.result.stderr
        assert "execve(" in traced.trace, "strace recorded nothing; the trace is not working"
        assert traced.inet_attempts == []
    assert "sha256 matches" in runs[0].result.stdout and f"{FILE}.meta4" in runs[0].result.stdout
    assert "1 of 1 sources verified" in runs[1].result.stdout


def test_the_download_reports_its_progress_and_resumes_where_it_was_cut(mirror, offline_proxy, tmp_path):
    """system/fetch on its own: the progress callback (what the bar shows) rises to the file's length, across
    the cut and the resumed request."""
    from appliance.system import fetch

    mirror.cut_first_after = len(mirror.content) // 3
    seen: list[tuple[int, int]] = []
    partial = tmp_path / "x.zim.partial"
    waits: list[float] = []
    size = fetch.fetch(f"{mirror.base}/download/zim/{FILE}", partial, len(mirror.content),
                       lambda done, total: seen.append((done, total)), sleep=waits.append)
    assert size == len(mirror.content) and partial.read_bytes() == mirror.content
    assert seen and all(total == len(mirror.content) for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen) and seen[-1][0] == len(mirror.content)
    assert len(waits) == 1  # one pause before the resumed request
