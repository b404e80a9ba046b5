"""Where the appliance keeps its data. APPLIANCE_HOME overrides everything (tests point it at a temp dir)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from appliance.errors import DataDirError


@dataclass(frozen=True)
class Paths:
    home: Path

    @classmethod
    def default(cls) -> "Paths":
        env = os.environ.get("APPLIANCE_HOME")
        home = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("appliance", appauthor=False))
        return cls(home=home.absolute())

    @property
    def config(self) -> Path:
        return self.home / "config.toml"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def library(self) -> Path:
        return self.home / "library.json"

    @property
    def kb(self) -> Path:
        return self.home / "kb"

    @property
    def archives(self) -> Path:
        """ZIM archives fetched by `appliance kb download` (registered in the library from here)."""
        return self.home / "archives"

    @property
    def serve(self) -> Path:
        """Shelter mode's files (appliance.serve): device keys, the shelter secret, a running server's state, TLS."""
        return self.home / "serve"

    @property
    def devices(self) -> Path:
        """Device keys as hashes (appliance.serve.devices; the shelter secret lies beside it)."""
        return self.serve / "devices.json"

    @property
    def history(self) -> Path:
        return self.home / "history.sqlite"

    @property
    def rules(self) -> Path:
        """The owner's rules (appliance.answering.rules); none until the owner writes some."""
        return self.home / "rules.toml"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def llama_log(self) -> Path:
        return self.logs / "llama.log"

    @property
    def engine_state(self) -> Path:
        return self.home / "engine-state.json"

    def ensure(self) -> "Paths":
        """Create the data dirs, or say plainly why they cannot be used."""
        try:
            for directory in (self.home, self.models, self.logs):
                directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.home, prefix=".write-test-"):
                pass
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise DataDirError(
                f"data directory {self.home} is not usable ({reason}); "
                "set APPLIANCE_HOME to a writable directory"
            ) from None
        return self


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that a crash or a full disk leaves either the old or the new content, never half of one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """atomic_write_text for bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
