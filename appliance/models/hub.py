"""`appliance models download`: the one command that goes online, through huggingface-hub.

1. Inside `online()`, ask the hub (HfApi.model_info with files_metadata) for the commit the revision points
   at, the file's LFS sha256 and size, the card's license and base-model fields and the repo's tags. The sha256 is
   captured here, before a byte of the file is fetched.
2. Fetch `<repo>/resolve/<commit>/<file>` (pinned to that commit, not the moving branch) into
   `<file>.<sha256[:12]>.partial` in the data dir, through huggingface_hub's HTTP session. A cut link resumes with a
   Range request from the bytes already on disk, a few times in one run and again on the next run; the partial file
   is never deleted or restarted from zero (a server that ignores Range is an error, not a silent restart).
   hf_hub_download itself is not used: it checks only the size, and since huggingface_hub 1.x it downloads to a
   per-process temporary file that it deletes when the download fails, so a cut link loses everything on disk.
3. Offline again, hash the complete file and compare with the LFS sha256. A mismatch renames the file to
   `.rejected` and exits 3; a match is registered with the hub source recorded (repo, commit, LFS sha256, card).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from appliance.errors import ApplianceError, IntegrityError, UsageError
from appliance.models import manifest
from appliance.models.verify import Progress, sha256_file
from appliance.system.online import online

MAX_RETRIES = 5  # consecutive attempts without a single new byte
DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


@dataclass
class HubFile:
    repo_id: str
    filename: str
    revision: str | None
    commit: str
    sha256: str
    size: int
    card: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    gated: Any = None

    def source(self, url: str) -> dict[str, Any]:
        return {
            "kind": "hub", "endpoint": endpoint(), "repo_id": self.repo_id, "filename": self.filename,
            "revision_requested": self.revision, "commit": self.commit, "lfs_sha256": self.sha256,
            "lfs_size": self.size, "url": url, "downloaded_at": manifest.now(),
            "card": {key: self.card.get(key) for key in ("license", "license_name", "license_link", "base_model",
                                                         "base_model_relation") if self.card.get(key) is not None},
            "tags": self.tags, "gated": self.gated,
        }


def _network_errors(*more: type[BaseException]) -> tuple[type[BaseException], ...]:
    """The transport's errors (imported only when one is being caught), with `more` ahead of them."""
    import httpx2

    return (*more, httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError, httpx2.ReadError,
            httpx2.WriteError, httpx2.NetworkError)


def _hub_error(exc: BaseException, what: str) -> ApplianceError:
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return ApplianceError(f"{what} is gated: accept its license on the hub, then set HF_TOKEN and try again")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return ApplianceError(f"{what}: no such repository on {endpoint()} (or it is private: set HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return ApplianceError(f"{what}: no such revision")
    if isinstance(exc, errors.HfHubHTTPError) and getattr(exc.response, "status_code", None) == 404:
        return ApplianceError(f"{what}: not found on {endpoint()}")
    if isinstance(exc, errors.HfHubHTTPError):
        return ApplianceError(f"{what}: the hub answered {str(exc).splitlines()[0]}")
    if isinstance(exc, _network_errors()):
        return ApplianceError(f"cannot reach {endpoint()} ({type(exc).__name__}: {exc}); `appliance models download` "
                              "needs a network connection. Nothing else in the appliance does")
    return ApplianceError(f"{what}: {exc}")


def fetch_info(repo_id: str, filename: str, revision: str | None) -> HubFile:
    """Ask the hub about one file. Must run inside `online()`."""
    from huggingface_hub import HfApi, errors, get_token

    what = f"{repo_id}@{revision}" if revision else repo_id
    try:
        info = HfApi(endpoint=endpoint(), token=get_token()).model_info(repo_id, revision=revision,
                                                                       files_metadata=True)
    except _network_errors(errors.HfHubHTTPError) as exc:
        raise _hub_error(exc, what) from None
    sibling = next((s for s in info.siblings or [] if s.rfilename == filename), None)
    if sibling is None:
        names = [s.rfilename for s in info.siblings or [] if s.rfilename.endswith(".gguf")]
        raise ApplianceError(f"{what} has no file {filename!r}" +
                             (f"; its GGUF files: {', '.join(names[:12])}" if names else "; it has no GGUF files"))
    if sibling.lfs is None or not sibling.lfs.sha256:
        raise ApplianceError(f"{filename} in {what} is not stored with LFS, so the hub publishes no sha256 to check "
                             "it against; not downloaded")
    if not info.sha:
        raise ApplianceError(f"{what}: the hub did not say which commit this is; not downloaded")
    card = info.card_data.to_dict() if info.card_data is not None else {}
    return HubFile(repo_id, filename, revision, info.sha, sibling.lfs.sha256.lower(), int(sibling.lfs.size), card,
                   list(info.tags or []), info.gated)


def fetch_file(url: str, partial: Path, size: int, progress: Progress | None = None,
               sleep=time.sleep) -> None:
    """Append the missing bytes of `url` to `partial` until it has `size` bytes. Must run inside `online()`."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = build_hf_headers(token=get_token())
    headers["Accept-Encoding"] = "identity"  # byte ranges of the stored file, never of a re-encoded body
    failures = 0
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if have == size:
            return
        if have > size:
            raise IntegrityError(f"{partial} has {have} bytes, more than the {size} the hub announced; "
                                 "move it aside and download again")
        request = dict(headers)
        if have:
            request["Range"] = f"bytes={have}-"
        before = have
        try:
            with get_session().stream("GET", url, headers=request, timeout=60) as response:
                hf_raise_for_status(response)
                if have and response.status_code != 206:
                    raise ApplianceError(f"the server ignored the request to resume at byte {have} (HTTP "
                                         f"{response.status_code}); {partial} is kept as it is, not restarted")
                if have and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                    raise ApplianceError("the server resumed at the wrong place "
                                         f"({response.headers.get('Content-Range')!r} for byte {have}); {partial} "
                                         "is kept as it is")
                with partial.open("ab") as out:
                    # Unbuffered: every piece that arrived is on disk before the next read, so a cut link loses
                    # nothing (iter_bytes(chunk_size) would drop its half-filled buffer on an error).
                    for chunk in response.iter_bytes():
                        if have + len(chunk) > size:
                            raise IntegrityError(f"{url} sent more than the {size} bytes the hub announced")
                        out.write(chunk)
                        have += len(chunk)
                        if progress:
                            progress(have, size)
                    out.flush()
                    os.fsync(out.fileno())
            if have < size:
                raise _Short()
        except HfHubHTTPError as exc:
            kept = (f"; {have} of {size} bytes are kept in {partial}: run the same command again to resume"
                    if have else "")
            raise ApplianceError(f"{_hub_error(exc, url)}{kept}") from None
        except _network_errors(_Short) as exc:
            failures = 0 if have > before else failures + 1
            if failures >= MAX_RETRIES:
                raise ApplianceError(
                    f"download interrupted ({type(exc).__name__}); {have} of {size} bytes are kept in {partial}: "
                    "run the same command again to resume") from None
            sleep(min(0.25 * 2 ** failures, 4.0))


class _Short(Exception):
    def __str__(self) -> str:
        return "the connection closed before the whole file arrived"


def download(library, repo_id: str, filename: str, revision: str | None = None, name: str | None = None,
             progress: Progress | None = None, hash_progress: Progress | None = None):
    """Download one GGUF from the hub (resumable), check it against the LFS sha256, and register it."""
    pure = PurePosixPath(filename)
    if pure.is_absolute() or ".." in pure.parts or not pure.name.endswith(".gguf"):
        raise UsageError(f"{filename!r}: give the path of a .gguf file inside the repository")
    if repo_id.count("/") != 1 or any(not part for part in repo_id.split("/")):
        raise UsageError(f"{repo_id!r}: a repository id looks like OWNER/NAME")
    library.paths.models.mkdir(parents=True, exist_ok=True)
    dest = library.paths.models / pure.name
    from huggingface_hub import hf_hub_url

    with online("appliance models download"):
        meta = fetch_info(repo_id, filename, revision)
        url = hf_hub_url(repo_id, filename, revision=meta.commit, endpoint=endpoint())
        if dest.exists():
            raise ApplianceError(f"{dest} already exists; remove that model first (`appliance models remove NAME "
                                 "--delete-file`) or import it")
        partial = dest.with_name(f"{dest.name}.{meta.sha256[:12]}.partial")
        fetch_file(url, partial, meta.size, progress)
    # Offline again from here on.
    actual = sha256_file(partial, hash_progress)
    if actual != meta.sha256:
        rejected = dest.with_name(dest.name + ".rejected")
        partial.replace(rejected)
        raise IntegrityError(f"{filename} from {repo_id}@{meta.commit[:12]}: sha256 {actual} does not match the hub's "
                             f"LFS sha256 {meta.sha256}; refused (kept as {rejected} for inspection)")
    partial.replace(dest)
    try:
        return library.register(dest, name=name, mode="download", source=meta.source(url),
                                expected_sha256=meta.sha256, hub_card=(meta.card, meta.tags))
    except ApplianceError:
        dest.replace(dest.with_name(dest.name + ".rejected"))  # e.g. a hostile header: never left where it loads
        raise
