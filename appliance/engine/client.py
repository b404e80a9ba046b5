"""The engine as the rest of the appliance sees it: load a verified model, stream tokens, cancel, count tokens.

llama.cpp itself runs in a separate process (process.py / child.py). `Engine.load` verifies the model's files
through open descriptors, reads the header again from those descriptors, checks that the model fits in memory,
and hands the same descriptors to the engine process. When the engine process dies while loading or before the
first token, the engine tries the next mode (normal -> safe -> fallback -> baseline, see variants.py; modes whose
build needs a CPU flag this machine lacks are left out from the start), remembers what worked,
and says so once; a death after tokens were shown ends that answer with one clear error, and the next question
starts a fresh engine process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from appliance.config import Config
from appliance.engine.process import EngineProcess
from appliance.engine.variants import Build, Cpu, EngineState
from appliance.errors import ApplianceError, EngineCrashed, EngineError, IntegrityError
from appliance.models.gguf_meta import read_gguf
from appliance.models.library import ModelEntry, ModelLibrary, VerifiedFiles
from appliance.models.verify import Progress
from appliance.system.hardware import Hardware, check_fits, estimate_model_ram

MODE_NOTES = {
    "safe": "safe mode (llama.cpp's repacked and AMX weight layouts off: on CPUs with AMX or AVX-512 it can be "
            "slower; `appliance doctor` measures it)",
    "fallback": "the fallback build {variant} (without AVX-512: prompts come about a third slower)",
    "baseline": "the baseline build without AVX2 (answers come several times slower)",
}


@dataclass
class Timings:
    verify_s: float = 0.0
    load_s: float = 0.0
    first_token_s: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    prompt_s: float | None = None
    engine_peak_rss_mb: float | None = None  # the engine process's peak resident memory so far

    def as_dict(self) -> dict:
        def r(value, digits=4):
            return None if value is None else round(value, digits)

        return {
            "verify_s": r(self.verify_s), "load_s": r(self.load_s), "first_token_s": r(self.first_token_s),
            "tokens": self.tokens, "tokens_per_s": r(self.tokens_per_s, 2), "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens, "prompt_s": r(self.prompt_s),
            "engine_peak_rss_mb": self.engine_peak_rss_mb,
        }


@dataclass(eq=False)
class Generation:
    """One streamed answer. Iterate `tokens()`; `text`, `finish_reason` and `timings` are complete once it ends."""

    model: "LoadedModel"
    messages: list[dict]
    max_tokens: int
    sampling: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    text: str = ""
    cancelled: bool = False
    finish_reason: str | None = None
    notice: str = ""
    timings: Timings = field(default_factory=Timings)
    _rid: int | None = None
    _process: EngineProcess | None = None

    def stop(self) -> None:
        """Cancel from any thread: the engine stops at its next token (or mid-prompt), within milliseconds."""
        self.cancel.set()
        if self._rid is not None and self._process is not None:
            self._process.cancel(self._rid)

    def tokens(self) -> Iterator[str]:
        pieces: list[str] = []
        shown = False
        try:
            while True:
                try:
                    for piece in self._stream(pieces):
                        shown = True
                        yield piece
                    return
                except EngineCrashed as exc:
                    if shown or self.cancel.is_set():
                        raise
                    self.model.engine.recover(self.model, exc)  # raises when no mode is left to try
                    self.notice = self.model.notice
        finally:
            self.text = "".join(pieces)

    def _stream(self, pieces: list[str]) -> Iterator[str]:
        model = self.model
        self.timings.verify_s, self.timings.load_s = model.verify_s, model.load_s
        with model.engine.busy:
            process = model.process
            if process is None or not process.alive:
                raise EngineError(f"model {model.entry.name!r} is not loaded")
            stage = "answering with"
            started = time.perf_counter()
            self._process = process
            self._rid = rid = process.send("generate", stage, messages=self.messages, max_tokens=self.max_tokens,
                                           sampling=self.sampling)
            if self.cancel.is_set():
                process.cancel(rid)
            first = None
            try:
                while True:
                    event = process.next_event(rid, stage)
                    kind = event.get("ev")
                    if kind == "token":
                        if self.cancel.is_set():
                            continue  # already cancelled: the engine stops within a token; show nothing more
                        if first is None:
                            first = time.perf_counter()
                            self.timings.first_token_s = first - started
                        pieces.append(event["text"])
                        yield event["text"]
                    elif kind == "done":
                        ended = time.perf_counter()
                        self.finish_reason = "cancelled" if self.cancel.is_set() else event.get("finish")
                        self.cancelled = self.finish_reason == "cancelled"
                        t = self.timings
                        t.tokens = int(event.get("tokens") or 0)
                        t.prompt_tokens = int(event.get("n_prompt") or 0)
                        t.cached_tokens = int(event.get("n_cached") or 0)
                        t.prompt_s = event.get("prompt_s")
                        t.engine_peak_rss_mb = event.get("peak_rss_mb")
                        if first is not None and t.tokens > 1 and ended > first:
                            t.tokens_per_s = (t.tokens - 1) / (ended - first)
                        return
                    elif kind == "error":
                        raise model.engine.error_from(event, model.entry)
            except GeneratorExit:
                process.cancel(rid)
                raise


@dataclass(eq=False)
class LoadedModel:
    engine: "Engine"
    entry: ModelEntry
    files: VerifiedFiles
    context: int
    verify_s: float
    template: str | None
    threads: int
    process: EngineProcess | None = None
    mode: str = "normal"
    load_s: float = 0.0
    n_ctx_train: int = 0
    n_params: int = 0
    notice: str = ""  # said once when the engine had to fall back to a safer mode
    lookup_ranges: list[tuple[int, int]] = field(default_factory=list)  # byte ranges of the first file, see child

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    @property
    def variant(self) -> str:
        """The llama.cpp build this model runs on (packaging/llama-build.toml's name for it)."""
        return self.engine.build.describe(self.mode)

    def generate(self, messages: list[dict], max_tokens: int, **sampling) -> Generation:
        options = {"temperature": self.engine.config.model.temperature, "seed": self.engine.config.model.seed}
        options.update({k: v for k, v in sampling.items() if v is not None})
        return Generation(self, messages, max_tokens, options)

    def set_threads(self, threads: int) -> bool:
        """Use `threads` for the next answers, in the running engine; False if it could not (then load again)."""
        with self.engine.busy:
            try:
                event = self._process().request("threads", "setting the threads of", "threads", threads=threads)
            except EngineError:
                return False
            self.threads = int(event["threads"])
            return self.threads == threads

    def token_counts(self, texts: list[str], special: bool = False) -> list[int]:
        """Tokens of each text; `special` parses control-token text such as <|im_end|> as the control token
        (as in a rendered prompt); off, it is counted as the plain text a document would hold."""
        with self.engine.busy:
            return self._process().request("count", "counting tokens for", "counted", texts=texts,
                                           special=special)["counts"]

    def token_count(self, text: str) -> int:
        return self.token_counts([text])[0]

    def prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens of the whole rendered chat prompt, as the engine will see it."""
        with self.engine.busy:
            try:
                answer = self._process().request("count", "counting tokens for", "counted", messages=messages)
                return answer["counts"][0]
            except EngineError as exc:
                raise self.engine.error_from(exc.details, self.entry) from None

    def _process(self) -> EngineProcess:
        if self.process is None or not self.process.alive:
            raise EngineError(f"model {self.entry.name!r} is not loaded")
        return self.process

    def close(self) -> None:
        self.engine.unload()


class Engine:
    """Loads models (verified first) into one engine process and keeps the most recent one loaded."""

    def __init__(self, models: ModelLibrary, config: Config, log_file: Path, state_file: Path | None = None,
                 prefix_dir: Path | None = None):
        self.models = models
        self.config = config
        self.log_file = log_file
        self.state = EngineState(state_file or log_file.parent.parent / "engine-state.json")
        self.prefix_dir = prefix_dir  # the prompts' fixed start, kept across processes (engine/prefix_state.py)
        self.build = Build.installed()
        self.cpu = Cpu.detect()
        self.modes = self.build.modes(self.cpu)  # in order; only builds this CPU can run (variants.py)
        self.busy = threading.RLock()  # one request at a time in the engine process
        self._loaded: LoadedModel | None = None

    # -- loading -------------------------------------------------------------------------------------------
    def load(self, name: str | None = None, progress: Progress | None = None, context: int | None = None,
             threads: int | None = None) -> LoadedModel:
        with self.busy:
            entry = self.models.resolve(name, self.config.model.default)
            loaded = self._loaded
            if loaded and loaded.entry.name == entry.name and loaded.alive and context in (None, loaded.context):
                # In memory, from descriptors verified when it was loaded. Other threads (the power source changed)
                # are set in place: no file hashed again, the conversation's cache kept.
                if threads in (None, loaded.threads) or loaded.set_threads(threads):
                    return loaded
            if not entry.available:
                missing = next(path for path, _, _ in entry.files if not path.exists())
                raise IntegrityError(f"model {entry.name!r}: file {missing} is missing (drive unplugged or file moved)")
            if entry.role != "model":
                raise ApplianceError(f"{entry.name!r} is a {entry.role}, not a model that can answer on its own")
            self.unload()
            mode = self._start_mode(entry)
            process = self._spawn(mode, entry)  # starts while the files are hashed
            try:
                loaded = self._prepare(entry, progress, context, threads)
            except BaseException:
                process.close()
                raise
            try:
                self._bring_up(loaded, process, mode)
            except BaseException:
                loaded.files.close()
                raise
            self._loaded = loaded
            return loaded

    def _prepare(self, entry: ModelEntry, progress: Progress | None, context: int | None,
                 threads: int | None) -> LoadedModel:
        started = time.perf_counter()
        files = self.models.open_verified(entry, progress)  # size and sha256 of every shard, sidecar, signature
        try:
            info = read_gguf(files.fd_path(0))
            if info.chat_template_sha256 != entry.record.get("gguf", {}).get("chat_template_sha256"):
                raise IntegrityError(f"model {entry.name!r}: chat template differs from the manifest; not loaded")
            verify_s = time.perf_counter() - started
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
            hardware = Hardware.detect()  # once per load: the RAM check and, when the caller did not decide, threads
            check_fits(
                estimate_model_ram(entry.total_size, n_ctx, n_layer, n_embd),
                f"model {entry.name!r} with a {n_ctx}-token context",
                self.config.hardware.ram_limit_mb,
                hardware,
            )
            count = hardware.threads(threads or self.config.model.threads)
            loaded = LoadedModel(self, entry, files, n_ctx, verify_s, info.chat_template, count)
            # With an output layer of its own, the embedding table is only looked up, a few rows per prompt: the
            # engine process does not keep its pages (child.py, mapped_pages.py). A tied table is read whole.
            embeddings = info.tensors.get("token_embd.weight")
            if embeddings and "output.weight" in info.tensors:
                loaded.lookup_ranges = [(embeddings[0], embeddings[0] + embeddings[1])]
            return loaded
        except BaseException:
            files.close()
            raise

    def _start_mode(self, entry: ModelEntry) -> str:
        configured = self.config.engine.mode
        if configured in self.modes:
            return configured
        remembered = self.state.mode(self._key(entry))
        if remembered and remembered["mode"] in self.modes:
            return remembered["mode"]
        return self.modes[0]

    def _key(self, entry: ModelEntry) -> str:
        return EngineState.key(self.cpu, self.build, entry.sha256)

    def _spawn(self, mode: str, entry: ModelEntry) -> EngineProcess:
        return EngineProcess(self.log_file, lib_path=self.build.lib_path(mode),
                             hang_timeout=self.config.engine.hang_timeout_s, label=f"model {entry.name!r}")

    def _load_into(self, loaded: LoadedModel, process: EngineProcess, mode: str) -> None:
        stage = "loading"
        process.send_fds(list(loaded.files.fds), stage)
        event = process.request("load", stage, "loaded", n_fds=len(loaded.files.fds), n_ctx=loaded.context,
                                threads=loaded.threads, safe=self.build.safe(mode), template=loaded.template,
                                lookup_ranges=loaded.lookup_ranges,
                                prefix_dir=str(self.prefix_dir) if self.prefix_dir else None,
                                prefix_key=f"{self._key(loaded.entry)}|{mode}|{loaded.context}")
        loaded.process, loaded.mode = process, mode
        loaded.context = int(event["n_ctx"])
        loaded.load_s = float(event.get("load_s") or 0.0)
        loaded.n_ctx_train = int(event.get("n_ctx_train") or 0)
        loaded.n_params = int(event.get("n_params") or 0)

    def _bring_up(self, loaded: LoadedModel, process: EngineProcess | None, mode: str,
                  failure: EngineCrashed | None = None) -> None:
        """Load in `mode`; if the engine dies, try each safer mode in turn. Raises when none works."""
        modes = self.modes
        order = modes[modes.index(mode):] if mode in modes else [mode]
        if self.config.engine.mode in modes:
            order = [self.config.engine.mode]  # the owner chose a mode: no fallback behind their back
        for index, current in enumerate(order):
            if index > 0 or process is None:
                process = self._spawn(current, loaded.entry)
            try:
                self._load_into(loaded, process, current)
            except EngineError as exc:
                process.close()
                process = None
                if not isinstance(exc, EngineCrashed):
                    raise self.error_from(exc.details, loaded.entry) from None
                failure = failure or exc
                continue
            if failure is not None:
                self._fell_back(loaded, failure, current)
            return
        tried = " and ".join(order)
        raise EngineCrashed(f"{failure} (tried {tried} mode{'s' if len(order) > 1 else ''})",
                            signal_name=failure.signal_name if failure else "", stage="loading")

    def recover(self, loaded: LoadedModel, failure: EngineCrashed) -> None:
        """The engine died before the first token: reload the same verified files in the next safer mode."""
        with self.busy:
            modes = self.modes
            if loaded.mode not in modes or modes.index(loaded.mode) + 1 >= len(modes) \
                    or self.config.engine.mode in modes:
                raise failure
            if loaded.process is not None:
                loaded.process.close()
            self._bring_up(loaded, None, modes[modes.index(loaded.mode) + 1], failure)

    def _fell_back(self, loaded: LoadedModel, failure: EngineCrashed, mode: str) -> None:
        reason = f"{failure.signal_name} while {failure.stage}"
        self.state.remember(self._key(loaded.entry), mode, reason)
        how = MODE_NOTES.get(mode, mode).format(variant=self.build.describe(mode))
        loaded.notice = (f"llama.cpp crashed on this CPU ({reason}); model {loaded.entry.name!r} now runs in "
                         f"{how}. Remembered for this CPU and model "
                         f"(forget it: appliance doctor --reset-engine).")

    def error_from(self, event: dict, entry: ModelEntry) -> ApplianceError:
        kind = event.get("kind", "")
        message = event.get("message", "the engine reported an error")
        if kind == "template":
            return IntegrityError(f"model {entry.name!r}: {message}; refused")
        if kind == "too_long":
            return EngineError(f"the question and its passages are {event.get('n_prompt')} tokens; "
                               f"model {entry.name!r} reads at most {event.get('n_ctx')} here; ask something shorter",
                               kind=kind, details=event)
        return EngineError(f"model {entry.name!r}: {message} (details in {self.log_file})", kind=kind, details=event)

    def canary(self, name: str | None = None, tokens: int = 16) -> dict:
        """Load a model (the default) and generate a few tokens greedily; what ran, how, and how fast."""
        loaded = self.load(name)
        generation = loaded.generate([{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": "Count from one to ten."}], tokens, temperature=0.0)
        text = "".join(generation.tokens())
        info = loaded.process.info if loaded.process else {}
        features = [part.split("=")[0].strip() for part in info.get("system_info", "").replace("CPU :", "").split("|")
                    if part.strip().endswith("= 1")]
        remembered = self.state.mode(self._key(loaded.entry))
        reason = self.build.reason(loaded.mode, self.cpu)
        if remembered and remembered["mode"] == loaded.mode and loaded.mode != self.modes[0]:
            reason += f"; remembered since {remembered.get('when', '?')}: {remembered.get('reason', '?')}"
        return {"model": loaded.entry.name, "mode": loaded.mode, "variant": loaded.variant, "reason": reason,
                "build_recorded": self.build.recorded, "features": features, "cpu": self.cpu.model,
                "cpu_flags": self.cpu.notable, "threads": loaded.threads, "tokens": generation.timings.tokens,
                "tokens_per_s": generation.timings.tokens_per_s, "text": text,
                "notice": loaded.notice or generation.notice}

    def forget_modes(self) -> None:
        """Forget every remembered safe mode (after a llama.cpp upgrade, say)."""
        self.state.clear()

    def unload(self) -> None:
        with self.busy:
            loaded, self._loaded = self._loaded, None
            if loaded is not None:
                if loaded.process is not None:
                    loaded.process.close()
                    loaded.process = None
                loaded.files.close()

    close = unload
