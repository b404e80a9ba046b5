"""The only module that imports llama_cpp: load a verified model, stream tokens, cancel.

A model is loaded only after `ModelLibrary.verify` has matched its size and sha256 against the manifest and
its header has been re-read with limits. llama.cpp's own logging goes to a log file through a callback, never
to file descriptors 1 and 2 (which would garble a running terminal UI).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from appliance.config import Config
from appliance.errors import ApplianceError, IntegrityError
from appliance.hardware import Hardware, check_fits, estimate_model_ram
from appliance.models.gguf_meta import read_gguf
from appliance.models.library import ModelEntry, ModelLibrary
from appliance.models.verify import Progress

log = logging.getLogger("appliance.llama")

_log_lock = threading.Lock()
_log_callback = None  # keep the ctypes callback alive for the life of the process


def route_llama_logs(log_file: Path) -> None:
    """Send llama.cpp and ggml log lines to `log_file` instead of stderr. Safe to call more than once."""
    global _log_callback
    import llama_cpp

    log_file.parent.mkdir(parents=True, exist_ok=True)
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file for h in log.handlers):
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False
    with _log_lock:
        if _log_callback is None:

            @llama_cpp.llama_log_callback
            def _callback(level, text, user_data):  # pragma: no cover - called from native code
                try:
                    message = text.decode("utf-8", errors="replace").rstrip("\n")
                except Exception:
                    return
                if message:
                    log.debug(message)

            _log_callback = _callback
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


class _LogWriter:
    """A file-like object for Python-level prints from llama_cpp (verbose mode) that lands in the log."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug(text.rstrip("\n"))
        return len(text)

    def flush(self) -> None:
        pass


@dataclass
class Timings:
    verify_s: float = 0.0
    load_s: float = 0.0
    first_token_s: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None

    def as_dict(self) -> dict:
        return {
            "verify_s": round(self.verify_s, 4),
            "load_s": round(self.load_s, 4),
            "first_token_s": None if self.first_token_s is None else round(self.first_token_s, 4),
            "tokens": self.tokens,
            "tokens_per_s": None if self.tokens_per_s is None else round(self.tokens_per_s, 2),
        }


@dataclass
class Generation:
    """One streamed answer. Iterate `tokens()`; `text` and `timings` are complete once iteration ends."""

    model: "LoadedModel"
    messages: list[dict]
    max_tokens: int
    cancel: threading.Event = field(default_factory=threading.Event)
    text: str = ""
    cancelled: bool = False
    finish_reason: str | None = None
    timings: Timings = field(default_factory=Timings)

    def tokens(self) -> Iterator[str]:
        self.timings.load_s = self.model.load_s
        self.timings.verify_s = self.model.verify_s
        with self.model.lock:
            started = time.perf_counter()
            first = None
            stream = self.model.llama.create_chat_completion(
                messages=self.messages,
                max_tokens=self.max_tokens,
                temperature=self.model.temperature,
                seed=self.model.seed,
                stream=True,
            )
            pieces: list[str] = []
            try:
                with contextlib.redirect_stderr(_LogWriter()):
                    for chunk in stream:
                        if self.cancel.is_set():
                            self.cancelled = True
                            self.finish_reason = "cancelled"
                            break
                        choice = chunk["choices"][0]
                        piece = choice.get("delta", {}).get("content")
                        if choice.get("finish_reason"):
                            self.finish_reason = choice["finish_reason"]
                        if not piece:
                            continue
                        if first is None:
                            first = time.perf_counter()
                            self.timings.first_token_s = first - started
                        self.timings.tokens += 1
                        pieces.append(piece)
                        yield piece
            finally:
                stream.close()
                self.text = "".join(pieces)
                ended = time.perf_counter()
                if first is not None and self.timings.tokens > 1 and ended > first:
                    self.timings.tokens_per_s = (self.timings.tokens - 1) / (ended - first)


@dataclass
class LoadedModel:
    entry: ModelEntry
    llama: object
    load_s: float
    verify_s: float
    context: int
    temperature: float
    seed: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def generate(self, messages: list[dict], max_tokens: int) -> Generation:
        return Generation(self, messages, max_tokens)

    def token_count(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def close(self) -> None:
        close = getattr(self.llama, "close", None)
        if close:
            close()


class Engine:
    """Loads models (verified first) and keeps the most recent one in memory."""

    def __init__(self, library: ModelLibrary, config: Config, log_file: Path):
        self.library = library
        self.config = config
        self.log_file = log_file
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()

    def load(self, name: str | None = None, progress: Progress | None = None, context: int | None = None) -> LoadedModel:
        with self._load_lock:
            entry = self.library.resolve(name, self.config.model.default)
            if self._loaded and self._loaded.entry.name == entry.name:
                # Reusing a model already in memory: the file was verified when it was loaded.
                return self._loaded
            if not entry.available:
                missing = next(path for path, _, _ in entry.files if not path.exists())
                raise IntegrityError(f"model {entry.name!r}: file {missing} is missing (drive unplugged or file moved)")
            if entry.role != "model":
                raise ApplianceError(f"{entry.name!r} is a {entry.role}, not a model that can answer on its own")
            started = time.perf_counter()
            self.library.verify(entry, progress)  # size and sha256 of every shard, the sidecar, a pinned signature
            info = read_gguf(entry.path)
            verify_s = time.perf_counter() - started
            if info.chat_template_sha256 != entry.record.get("gguf", {}).get("chat_template_sha256"):
                raise IntegrityError(f"model {entry.name!r}: chat template differs from the manifest; not loaded")
            n_ctx = context or self.config.model.context
            trained = info.arch_value("context_length")
            if isinstance(trained, int) and trained > 0:
                n_ctx = min(n_ctx, trained)
            n_layer = info.arch_value("block_count")
            n_embd = info.arch_value("embedding_length")
            heads = info.arch_value("attention.head_count")
            kv_heads = info.arch_value("attention.head_count_kv")
            if isinstance(n_embd, int) and isinstance(heads, int) and isinstance(kv_heads, int) and heads:
                n_embd = n_embd * kv_heads // heads
            check_fits(
                estimate_model_ram(info.file_size, n_ctx, n_layer, n_embd),
                f"model {entry.name!r} with a {n_ctx}-token context",
                self.config.hardware.ram_limit_mb,
            )
            if self._loaded:
                self._loaded.close()
                self._loaded = None
            self._loaded = self._load_verified(entry, n_ctx, verify_s)
            return self._loaded

    def _load_verified(self, entry: ModelEntry, n_ctx: int, verify_s: float) -> LoadedModel:
        route_llama_logs(self.log_file)
        import llama_cpp

        threads = Hardware.detect().threads(self.config.model.threads)
        started = time.perf_counter()
        try:
            with contextlib.redirect_stderr(_LogWriter()), contextlib.redirect_stdout(_LogWriter()):
                llama = llama_cpp.Llama(
                    model_path=str(entry.path),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    seed=self.config.model.seed,
                    verbose=True,  # False would dup2() fds 1 and 2 during load; logs are routed instead
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ApplianceError(f"llama.cpp could not load {entry.path.name}: {exc} (details in {self.log_file})") from None
        return LoadedModel(
            entry=entry,
            llama=llama,
            load_s=time.perf_counter() - started,
            verify_s=verify_s,
            context=n_ctx,
            temperature=self.config.model.temperature,
            seed=self.config.model.seed,
        )

    def unload(self) -> None:
        with self._load_lock:
            if self._loaded:
                self._loaded.close()
                self._loaded = None
