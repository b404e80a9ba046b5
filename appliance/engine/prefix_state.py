"""The KV state of the fixed start of every prompt (the chat template's system part), kept on disk so a new process
(each `appliance ask`) does not read it again.

Runs inside the engine process. A state is written as `<name>.state` with a `<name>.json` beside it holding its
sha256; `<name>` is a hash of the key the parent gives (model sha256, llama.cpp build and mode, context) and the
prefix's tokens, so a state is only ever offered to the model, build and tokens that made it. Before llama.cpp sees
the bytes they are read into memory and hashed (llama.cpp is never given a path). While they are being loaded the
file is renamed `.loading`: if llama.cpp crashes on them, the state is not offered again. Only a cache: anything
that fails (a full disk, a damaged file) means reading the prefix as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
from pathlib import Path

from appliance.paths import atomic_write_bytes, atomic_write_text

MAX_FILES = 8  # states kept (one per model, build and system prompt in use); the oldest go first


class PrefixStates:
    def __init__(self, L, folder: str | None, key: str | None):
        self.L = L
        self.folder = Path(folder) if folder and key else None
        self.key = key or ""

    def _name(self, tokens: list[int]) -> str:
        digest = hashlib.sha256(self.key.encode())
        digest.update(",".join(map(str, tokens)).encode())
        return digest.hexdigest()[:32]

    def restore(self, ctx, tokens: list[int]) -> bool:
        """Put the stored state for `tokens` into sequence 0 of `ctx` (which is cleared first). True when done."""
        if self.folder is None or not tokens:
            return False
        L = self.L
        name = self._name(tokens)
        state, meta = self.folder / f"{name}.state", self.folder / f"{name}.json"
        loading = state.with_suffix(".loading")
        try:
            expected = json.loads(meta.read_text())["sha256"]
            data = state.read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if hashlib.sha256(data).hexdigest() != expected:
            self._drop(state, meta)
            return False
        try:
            os.replace(state, loading)  # a crash inside llama.cpp leaves it here, never offered again
        except OSError:
            return False
        memory = L.llama_get_memory(ctx)
        L.llama_memory_clear(memory, True)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        loaded = L.llama_state_seq_set_data(ctx, buffer, len(data), 0)
        if not loaded or L.llama_memory_seq_pos_max(memory, 0) + 1 != len(tokens):
            L.llama_memory_clear(memory, True)
            self._drop(loading, meta)
            return False
        try:
            os.replace(loading, state)
        except OSError:
            pass
        return True

    def save(self, ctx, tokens: list[int]) -> None:
        """Store sequence 0 of `ctx`, which holds exactly `tokens`."""
        if self.folder is None or not tokens:
            return
        L = self.L
        name = self._name(tokens)
        state, meta = self.folder / f"{name}.state", self.folder / f"{name}.json"
        try:
            size = L.llama_state_seq_get_size(ctx, 0)
            buffer = (ctypes.c_uint8 * size)()
            written = L.llama_state_seq_get_data(ctx, buffer, size, 0)
            if not written:
                return
            data = bytes(buffer)[:written]
            atomic_write_bytes(state, data)
            atomic_write_text(meta, json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "tokens": len(tokens)}))
            self._trim(self.folder)
        except OSError:  # a full disk or a read-only folder: the prefix is read again next time
            self._drop(state, meta)

    def _trim(self, folder: Path) -> None:
        states = sorted(folder.glob("*.state"), key=lambda p: p.stat().st_mtime)
        for old in states[:-MAX_FILES]:
            self._drop(old, old.with_suffix(".json"))
        for stale in folder.glob("*.loading"):  # a load that crashed: never offered again
            self._drop(stale)
            if not stale.with_suffix(".state").exists():  # (its name's .json may be a fresh state's by now)
                self._drop(stale.with_suffix(".json"))

    @staticmethod
    def _drop(*paths: Path) -> None:
        for path in paths:
            try:
                path.unlink()
            except OSError:
                pass
