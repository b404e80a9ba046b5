"""The engine process: the only code in the appliance that calls into llama.cpp.

Started by `appliance.engine.process` as `python -m appliance.engine.child CHANNEL_FD FD_SOCKET`, never forked
from a process with threads. Its stdout and stderr are `logs/llama.log`, so nothing llama.cpp prints can reach the
user's terminal. Requests and events are JSON frames over one socket (see protocol.py); model files arrive as
descriptors the parent opened and hashed (SCM_RIGHTS on a second socket), and are opened again through
/proc/self/fd, so the bytes llama.cpp maps are the bytes that were verified.

If llama.cpp crashes (SIGSEGV, SIGILL, SIGBUS) only this process dies; the parent turns that into one message.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib.util
import os
import queue
import resource
import signal
import socket
import sys
import threading
import time

import appliance  # noqa: F401 - the offline guards, before llama_cpp is imported
from appliance.engine import protocol
from appliance.engine.mapped_pages import MappedPages
from appliance.engine.prefix_state import PrefixStates
from appliance.models.chat_template import ChatTemplate, TemplateRefused, memory_cap

FAULT_ENV = "APPLIANCE_ENGINE_FAULT"  # test-only: make this process crash or hang at a named stage

N_BATCH = 512
FLUSH_S = 0.05  # token pieces are sent in frames at most this often (each frame wakes the parent)
HEARTBEAT_S = 1.0


def load_bindings():
    """llama-cpp-python's ctypes bindings alone (`llama_cpp.llama_cpp`). Importing the package itself runs its
    __init__, which also imports the high-level Llama class and with it numpy and the chat formats: 22 MiB of this
    process's peak RSS and 65 ms of its start, for code the engine never calls."""
    if "llama_cpp" not in sys.modules:
        spec = importlib.util.find_spec("llama_cpp")
        if spec is not None and spec.submodule_search_locations is not None:
            sys.modules["llama_cpp"] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    import llama_cpp.llama_cpp as bindings

    return bindings


def shared_start(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` have in common."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


class Faults:
    """`APPLIANCE_ENGINE_FAULT=kind:stage[:arg][,...]`; kind segv|ill|kill|hang; stage load|prefill|token; a
    `:normal` arg applies the fault only outside safe mode, `:primary` only with the main build (not a variant
    from LLAMA_CPP_LIB_PATH), `:nonbaseline` with any build but a baseline one, a number N (for token) after the
    Nth token."""

    def __init__(self, spec: str):
        self.rules = [part.split(":") for part in spec.split(",") if part.strip()]

    def hit(self, stage: str, safe: bool, count: int = 0) -> None:
        for rule in self.rules:
            kind, where, arg = rule[0], rule[1] if len(rule) > 1 else "", rule[2] if len(rule) > 2 else ""
            if where != stage or (arg == "normal" and safe) or (arg.isdigit() and count != int(arg)) \
                    or (arg == "primary" and os.environ.get("LLAMA_CPP_LIB_PATH")) \
                    or (arg == "nonbaseline" and "baseline" in os.environ.get("LLAMA_CPP_LIB_PATH", "")):
                continue
            if kind == "hang":
                while True:
                    time.sleep(3600)
            sig = {"segv": signal.SIGSEGV, "ill": signal.SIGILL, "kill": signal.SIGKILL, "bus": signal.SIGBUS}[kind]
            if sig != signal.SIGKILL:
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            time.sleep(5)


class LlamaRunner:
    """The engine process's side (Ollama's "runner"): one llama.cpp model and context, serving the requests of the
    client (appliance.engine.client.Engine) over the socket until told to stop or the parent dies."""

    def __init__(self, channel: protocol.Channel, fd_socket: socket.socket):
        llama_cpp = load_bindings()
        self.L = llama_cpp
        self.channel = channel
        self.fd_socket = fd_socket
        self.inbox: queue.Queue = queue.Queue()
        self.cancel_id = -1
        self.current_id = -2
        self.faults = Faults(os.environ.get(FAULT_ENV, ""))
        self.model = None
        self.ctx = None
        self.vocab = None
        self.template: ChatTemplate | None = None
        self.prefixes = PrefixStates(None, None, None)
        self._fixed: dict[str, list[int]] = {}  # system message -> the tokens every prompt with it starts with
        self.safe = False
        self.pages: MappedPages | None = None  # the loaded model's looked-up table, given back after each answer
        self.cached: list[int] = []
        self.n_ctx = 0
        self.last_beat = 0.0
        self._keep: list = []  # ctypes callbacks that native code holds pointers to
        self._abort_cb = llama_cpp.ggml_abort_callback(self._abort)
        self._no_abort = llama_cpp.ggml_abort_callback()  # a NULL function pointer: no abort callback
        self._piece = ctypes.create_string_buffer(256)
        self._one = (llama_cpp.llama_token * 1)()

    # -- plumbing ------------------------------------------------------------------------------------------
    def send(self, **event) -> None:
        self.channel.send(event)

    def read_requests(self) -> None:
        """Reader thread: a cancel takes effect at once; anything else is queued. EOF means the parent is gone."""
        while True:
            try:
                request = self.channel.recv()
            except (EOFError, OSError, ValueError):
                os._exit(0)
            if request.get("op") == "cancel":
                self.cancel_id = request.get("id", -1)
            elif request.get("op") == "quit":
                os._exit(0)
            else:
                self.inbox.put(request)

    def cancelled(self) -> bool:
        return self.cancel_id == self.current_id

    def _abort(self, _data) -> bool:
        """Called by ggml between graph nodes while a prompt is processed: cancel, and prove we are alive."""
        now = time.monotonic()
        if now - self.last_beat > HEARTBEAT_S:
            self.last_beat = now
            self.send(ev="alive", id=self.current_id)
        return self.cancelled()

    def serve(self) -> None:
        threading.Thread(target=self.read_requests, daemon=True, name="requests").start()
        info = self.L.llama_print_system_info().decode("utf-8", "replace").strip()
        self.send(ev="ready", pid=os.getpid(), system_info=info, lib_path=os.environ.get("LLAMA_CPP_LIB_PATH"))
        handlers = {"load": self.load, "generate": self.generate, "count": self.count, "unload": self.unload,
                    "threads": self.set_threads}
        while True:
            request = self.inbox.get()
            self.current_id = request.get("id", -1)
            handler = handlers.get(request.get("op"))
            try:
                if handler is None:
                    raise ValueError(f"unknown request {request.get('op')!r}")
                handler(request)
            except TemplateRefused as exc:
                self.send(ev="error", id=self.current_id, kind="template", message=str(exc))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it as one line
                self.send(ev="error", id=self.current_id, kind="engine", message=f"{type(exc).__name__}: {exc}")
            if request.get("op") == "generate" and self.pages:
                self.pages.release()  # the table's rows this answer looked up: a conversation never brings it back

    # -- load ----------------------------------------------------------------------------------------------
    def load(self, request: dict) -> None:
        L = self.L
        self.unload({})
        fds = protocol.recv_fds(self.fd_socket, request["n_fds"])
        self.safe = bool(request.get("safe"))
        self.faults.hit("load", self.safe)
        started = time.perf_counter()
        params = L.llama_model_default_params()
        params.n_gpu_layers = 0
        params.use_extra_bufts = not self.safe  # safe mode: no repacked or AMX weight layouts
        last = [0.0]
        pages = MappedPages(fds[0], request.get("lookup_ranges") or []) if fds else None
        released = [False]

        def progress(fraction, _data):
            if pages and not released[0]:  # the file is mapped and populated whole by now
                released[0] = True
                pages.release()
            now = time.monotonic()
            if now - last[0] > 0.2 or fraction >= 1.0:
                last[0] = now
                self.send(ev="progress", id=self.current_id, stage="load", fraction=round(float(fraction), 3))
            return True

        callback = L.llama_progress_callback(progress)
        self._keep = [callback]
        params.progress_callback = callback
        paths = [f"/proc/self/fd/{fd}".encode() for fd in fds]
        try:
            if len(paths) == 1:
                model = L.llama_model_load_from_file(paths[0], params)
            else:
                array = (ctypes.c_char_p * len(paths))(*paths)
                model = L.llama_model_load_from_splits(array, len(paths), params)
        finally:
            for fd in fds:
                os.close(fd)  # llama.cpp holds its own descriptors (and mappings) now
        if not model:
            raise RuntimeError("llama.cpp could not load the model (details in the log)")
        self.model = model
        if pages:
            pages.release()  # again: a repacked copy of a tied output layer read the table back while loading
        self.pages = pages
        self.vocab = L.llama_model_get_vocab(model)
        n_ctx = int(request["n_ctx"])
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = min(N_BATCH, n_ctx)
        cparams.n_ubatch = min(N_BATCH, n_ctx)
        cparams.n_threads = cparams.n_threads_batch = int(request["threads"])
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a {n_ctx}-token context (details in the log)")
        self.ctx = ctx
        self.n_ctx = L.llama_n_ctx(ctx)
        self.cached = []
        template = request.get("template")
        self.template = ChatTemplate(template, self.token_text(L.llama_vocab_bos(self.vocab)),
                                     self.token_text(L.llama_vocab_eos(self.vocab))) if template else None
        self.prefixes = PrefixStates(L, request.get("prefix_dir"), request.get("prefix_key"))
        self._fixed = {}
        self.send(ev="loaded", id=self.current_id, n_ctx=self.n_ctx, n_ctx_train=L.llama_model_n_ctx_train(model),
                  n_params=L.llama_model_n_params(model), safe=self.safe,
                  load_s=round(time.perf_counter() - started, 4))

    def set_threads(self, request: dict) -> None:
        """Threads for the next answers (unplugged, plugged in): the context, its KV cache and the model stay."""
        if not self.ctx:
            raise RuntimeError("no model is loaded")
        threads = int(request["threads"])
        self.L.llama_set_n_threads(self.ctx, threads, threads)
        self.send(ev="threads", id=self.current_id, threads=self.L.llama_n_threads(self.ctx),
                  threads_batch=self.L.llama_n_threads_batch(self.ctx))

    def unload(self, _request: dict) -> None:
        if self.ctx:
            self.L.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.L.llama_model_free(self.model)
            self.model = None
        self.pages = None
        self.cached = []
        if _request:
            self.send(ev="unloaded", id=self.current_id)

    # -- text <-> tokens -----------------------------------------------------------------------------------
    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.piece(token, special=True).decode("utf-8", "replace")

    def piece(self, token: int, special: bool = False) -> bytes:
        n = self.L.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self.L.llama_token_to_piece(self.vocab, token, buffer, -n, 0, special)
            return buffer.raw[:n]
        return self._piece.raw[:n]

    def tokenize(self, text: str, special: bool) -> list[int]:
        data = text.encode("utf-8", "replace")
        capacity = len(data) + 8
        tokens = (self.L.llama_token * capacity)()
        n = self.L.llama_tokenize(self.vocab, data, len(data), tokens, capacity, False, special)
        if n < 0:
            capacity = -n
            tokens = (self.L.llama_token * capacity)()
            n = self.L.llama_tokenize(self.vocab, data, len(data), tokens, capacity, False, special)
        return list(tokens[:n])

    def render(self, messages: list[dict]) -> list[int]:
        if self.template is not None:
            with memory_cap():
                text = self.template.render(messages)
        else:  # no template in the file: a plain transcript
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        tokens = self.tokenize(text, special=True)
        bos = self.L.llama_vocab_bos(self.vocab)
        if self.L.llama_vocab_get_add_bos(self.vocab) and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def fixed_prefix(self, messages: list[dict], tokens: list[int]) -> int:
        """How many leading tokens of `tokens` every prompt with this system message starts with (the template's
        start and the system message: the common start of it rendered with two different questions)."""
        if self.template is None or not messages or messages[0].get("role") != "system":
            return 0
        system = messages[0].get("content", "")
        fixed = self._fixed.get(system)
        if fixed is None:
            a = self.render([messages[0], {"role": "user", "content": "a"}])
            b = self.render([messages[0], {"role": "user", "content": "b"}])
            fixed = a[:shared_start(a, b)]
            if len(self._fixed) >= 8:
                self._fixed.clear()
            self._fixed[system] = fixed
        return shared_start(fixed, tokens)

    def count(self, request: dict) -> None:
        if "messages" in request:
            counts = [len(self.render(request["messages"]))]
        else:
            special = bool(request.get("special"))
            counts = [len(self.tokenize(text, special=special)) for text in request["texts"]]
        self.send(ev="counted", id=self.current_id, counts=counts)

    # -- generate ------------------------------------------------------------------------------------------
    def sampler(self, options: dict):
        """The sampling chain. Top-k comes first: the penalties sampler looks every candidate up in its table of
        recent tokens, so after top-k it does 40 look-ups a token instead of one per vocabulary entry (49k for
        SmolLM2, 152k for Qwen). Penalties only ever lower a logit, and min-p then drops what falls far below the
        best, so the tokens that can be drawn are the same in practice."""
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        temperature = float(options.get("temperature", 0.2))
        repeat = float(options.get("repeat_penalty", 1.0))
        if temperature > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(int(options.get("top_k", 40))))
        if repeat != 1.0 or options.get("frequency_penalty") or options.get("presence_penalty"):
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(
                L.llama_vocab_n_tokens(self.vocab), int(options.get("repeat_last_n", 64)), repeat,
                float(options.get("frequency_penalty", 0.0)), float(options.get("presence_penalty", 0.0))))
        if temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(float(options.get("top_p", 0.95)), 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(float(options.get("min_p", 0.05)), 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temperature))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(int(options.get("seed", 42)) & 0xFFFFFFFF))
        return chain

    def generate(self, request: dict) -> None:
        L = self.L
        if not self.ctx:
            raise RuntimeError("no model is loaded")
        rid = self.current_id
        received = time.perf_counter()
        tokens = self.render(request["messages"])
        max_tokens = int(request.get("max_tokens", 256))
        if len(tokens) >= self.n_ctx:
            self.send(ev="error", id=rid, kind="too_long", n_prompt=len(tokens), n_ctx=self.n_ctx,
                      message=f"the prompt is {len(tokens)} tokens; this model reads at most {self.n_ctx}")
            return
        memory = L.llama_get_memory(self.ctx)
        common = min(shared_start(self.cached, tokens), len(tokens) - 1)  # at least one decoded, for fresh logits
        if common < len(self.cached) and not L.llama_memory_seq_rm(memory, 0, common, -1):
            L.llama_memory_clear(memory, True)
            common = 0
        self.cached = tokens[:common]
        # The prompt's fixed start (template and system message): from disk when a process before this one read
        # it, else read here and kept (reading it as a batch of its own, so both ways give the same numbers).
        fixed, save_at = self.fixed_prefix(request["messages"], tokens), 0
        if common < fixed < len(tokens):
            if self.prefixes.restore(self.ctx, tokens[:fixed]):
                common = fixed
            else:
                L.llama_memory_clear(memory, True)
                common, save_at = 0, fixed
            self.cached = tokens[:common]
        self.faults.hit("prefill", self.safe)
        # Prompt processing, in batches; ggml calls _abort between graph nodes (cancel + heartbeat).
        self.last_beat = time.monotonic()
        L.llama_set_abort_callback(self.ctx, self._abort_cb, None)
        try:
            start = common
            while start < len(tokens):
                end = min(start + N_BATCH, len(tokens))
                if start < save_at < end:
                    end = save_at
                chunk = tokens[start:end]
                array = (L.llama_token * len(chunk))(*chunk)
                status = L.llama_decode(self.ctx, L.llama_batch_get_one(array, len(chunk)))
                if status != 0:
                    kept = L.llama_memory_seq_pos_max(memory, 0) + 1
                    self.cached = tokens[:max(0, kept)]
                    if status == 2 or self.cancelled():
                        self.send(ev="done", id=rid, finish="cancelled", n_prompt=len(tokens), n_cached=common,
                                  tokens=0, prompt_s=round(time.perf_counter() - received, 4))
                        return
                    raise RuntimeError(f"llama_decode failed with status {status} while reading the prompt")
                self.cached = tokens[:end]
                if end == save_at:
                    self.prefixes.save(self.ctx, self.cached)
                start = end
        finally:
            L.llama_set_abort_callback(self.ctx, self._no_abort, None)
        prompt_done = time.perf_counter()
        chain = self.sampler(request.get("sampling", {}))
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        finish, produced, first = "length", 0, None
        one = self._one
        pending: list[str] = []
        flushed = float("-inf")
        try:
            while produced < max_tokens:
                if self.cancelled():
                    finish = "cancelled"
                    break
                if len(self.cached) >= self.n_ctx:
                    finish = "context"
                    break
                token = L.llama_sampler_sample(chain, self.ctx, -1)
                if L.llama_vocab_is_eog(self.vocab, token):
                    finish = "stop"
                    break
                produced += 1
                text = decoder.decode(self.piece(token))
                if first is None:
                    first = time.perf_counter()
                if text:
                    pending.append(text)
                    now = time.perf_counter()
                    if now - flushed >= FLUSH_S:  # the first piece at once, then at most one frame per FLUSH_S
                        self.channel.send({"ev": "token", "id": rid, "text": "".join(pending)})
                        pending.clear()
                        flushed = now
                self.faults.hit("token", self.safe, produced)
                if produced >= max_tokens:
                    break  # nothing is sampled after the last token, so it is not decoded (a follow-up reads it)
                one[0] = token
                status = L.llama_decode(self.ctx, L.llama_batch_get_one(one, 1))
                if status != 0:
                    raise RuntimeError(f"llama_decode failed with status {status} while generating")
                self.cached.append(token)
            pending.append(decoder.decode(b"", final=True))
            if "".join(pending):
                self.channel.send({"ev": "token", "id": rid, "text": "".join(pending)})
        finally:
            L.llama_sampler_free(chain)
        ended = time.perf_counter()
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.send(ev="done", id=rid, finish=finish, n_prompt=len(tokens), n_cached=common, tokens=produced,
                  peak_rss_mb=round(peak_kb / 1024, 1),
                  prompt_s=round(prompt_done - received, 4),
                  first_token_s=None if first is None else round(first - received, 4),
                  gen_s=None if first is None else round(ended - first, 4))


def main(argv: list[str]) -> int:
    # A crash must not leave a core file the size of the model in the user's folder, and Ctrl+C in the terminal
    # is the parent's to handle (it cancels through the channel).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = protocol.Channel(int(argv[0]))
    fd_socket = socket.socket(fileno=int(argv[1]))
    LlamaRunner(channel, fd_socket).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
