"""all-MiniLM-L6-v2 (int8 ONNX) through onnxruntime + tokenizers: no PyTorch, no network.

Texts are truncated at 256 tokens and padded to the longest in the batch (a query of 8 tokens runs as 8, not 256).
Vectors are mean-pooled over the attention mask and L2-normalised, so a dot product is the cosine similarity.

The model's weights are int8 with a Cast and a Mul in the graph; onnxruntime folds them into fp32 weights when it
builds a session, and while it does, the int8 and the fp32 copies are in memory together: 263 MiB peak for a 23 MB
file. With a cache folder, the folded graph is saved there once (`embedder-<model>-<onnxruntime>-<cpu>.onnx`, about
90 MB, its sha256 in a .json beside it) and later sessions load it with nothing left to fold: 189 MiB peak, the
same vectors to the bit, the same speed. The file is only a cache: it is hashed through the descriptor onnxruntime
then reads, and anything wrong with it (damaged, another onnxruntime, a full disk) means folding again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

from kb import files
from kb.diskspace import space
from kb.errors import KBError

MAX_TOKENS = 256
ROOM_FACTOR = 8  # the folded graph is kept only with this many times the model file's size usable on its disk
DIM = 384


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return files.sha256_fd(handle.fileno())


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _cpu_key() -> str:
    """The CPU's model name and flags, hashed: onnxruntime may fold the graph with kernels this CPU has."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features", "CPU part"))]
    except OSError:
        lines = []
    return hashlib.sha256("".join(sorted(set(lines))).encode()).hexdigest()[:12]


class Embedder:
    def __init__(self, model: Path, tokenizer: Path, threads: int | None = None, cache_dir: Path | None = None):
        self.model_path = Path(model)
        self.tokenizer_path = Path(tokenizer)
        for path in (self.model_path, self.tokenizer_path):
            if not path.is_file():
                raise KBError(f"embedder file {path} is missing")
        self._files: dict[str, str] | None = None
        from tokenizers import Tokenizer

        self.prepared = False  # True when the session came from the cache folder's folded graph
        try:
            self.session = self._session(threads, Path(cache_dir) if cache_dir else None)
            self.tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        except Exception as exc:  # noqa: BLE001 - onnxruntime and tokenizers raise their own types: one KBError
            raise KBError(f"the embedder cannot be loaded ({str(exc)[:160]})") from None
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._lock = threading.Lock()

    def _session(self, threads: int | None, cache_dir: Path | None):
        import onnxruntime as ort

        def options():
            made = ort.SessionOptions()
            made.intra_op_num_threads = threads or max(1, min(4, os.cpu_count() or 1))
            made.inter_op_num_threads = 1
            made.log_severity_level = 3
            return made

        providers = ["CPUExecutionProvider"]

        def plain():  # folded in memory, kept nowhere
            return ort.InferenceSession(str(self.model_path), options(), providers=providers)

        if cache_dir is None:
            return plain()
        name = f"embedder-{self.files()['model'][:16]}-ort{ort.__version__}-{_cpu_key()}"
        prepared, sidecar = cache_dir / f"{name}.onnx", cache_dir / f"{name}.json"
        try:
            fd = os.open(prepared, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            fd = None
        if fd is not None:
            try:
                expected = json.loads(sidecar.read_text()).get("sha256")
                if files.sha256_fd(fd) == expected:
                    ready = options()
                    ready.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                    session = ort.InferenceSession(f"/proc/self/fd/{fd}", ready, providers=providers)
                    self.prepared = True
                    return session
            except Exception:  # noqa: BLE001 - only a cache: fold again below
                pass
            finally:
                os.close(fd)
            _remove(prepared, sidecar)
        # Fold now, and keep the folded graph for the next session (written aside, hashed, then renamed into place),
        # unless that would eat into the room the library needs: the folded graph is about 4 times the model file.
        folding = options()
        partial = cache_dir / f".{name}.{os.getpid()}.partial"
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            if space(cache_dir).usable < ROOM_FACTOR * self.model_path.stat().st_size:
                return plain()
            folding.optimized_model_filepath = str(partial)
            session = ort.InferenceSession(str(self.model_path), folding, providers=providers)
            with open(partial, "rb") as handle:
                digest = files.sha256_fd(handle.fileno())
            sidecar.write_text(json.dumps({"sha256": digest, "model": self.files()["model"]}))
            os.replace(partial, prepared)
            _remove(*(other for other in cache_dir.glob("embedder-*") if other.stem != name))  # one per library
            return session
        except Exception:  # noqa: BLE001 - a cache folder that cannot take it (full disk, read-only): no cache
            _remove(partial)
            return plain()

    def files(self) -> dict[str, str]:
        """sha256 of the model and tokenizer files, recorded in the KB so its vectors stay tied to them (hashed once
        per embedder: the KB checks them at open, and the ZIM section cache is named by them)."""
        if self._files is None:
            self._files = {"model": sha256_of(self.model_path), "tokenizer": sha256_of(self.tokenizer_path)}
        return dict(self._files)

    def embed(self, texts: list[str], batch_size: int = 4) -> np.ndarray:
        """Vectors for texts, in batches of similar length. Small batches are faster on a 2-core laptop (16 passages
        of ~150 tokens: batches of 4 350 ms, 8 400-480 ms, 16 510-600 ms), which is what a ZIM search waits on."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        out = []
        # Sorting by length keeps padding small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            batch = [texts[i] for i in order[start:start + batch_size]]
            out.append(self._run(batch))
        vectors = np.concatenate(out)
        result = np.empty_like(vectors)
        result[order] = vectors
        return result

    def embed_query(self, text: str) -> np.ndarray:
        return self._run([text])[0]

    def _run(self, batch: list[str]) -> np.ndarray:
        with self._lock:
            encodings = self.tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
