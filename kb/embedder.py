"""all-MiniLM-L6-v2 (int8 ONNX) through onnxruntime + tokenizers: no PyTorch, no network.

Texts are truncated at 256 tokens and padded to the longest in the batch (a query of 8 tokens runs as 8, not 256).
Vectors are mean-pooled over the attention mask and L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from kb.errors import KBError

MAX_TOKENS = 256
DIM = 384


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Embedder:
    def __init__(self, model: Path, tokenizer: Path, threads: int | None = None):
        self.model_path = Path(model)
        self.tokenizer_path = Path(tokenizer)
        for path in (self.model_path, self.tokenizer_path):
            if not path.is_file():
                raise KBError(f"embedder file {path} is missing")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, min(4, os.cpu_count() or 1))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        except Exception as exc:
            raise KBError(f"the embedder cannot be loaded ({str(exc)[:160]})") from None
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._lock = threading.Lock()
        self._files: dict[str, str] | None = None

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
