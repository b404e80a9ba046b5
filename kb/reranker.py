"""A second, stronger reading of the nearest passages: all-mpnet-base-v2 in numpy, no PyTorch, no network.

The library's embedder (MiniLM-L6, int8) ranks every chunk cheaply; this model (12 layers of 768, 110 M weights,
fp32 safetensors) is about eight times the work per token, too slow to embed a library (a few chunks a second on two
cores) but fast enough to read again the 20 best candidates of one question, each cut to 128 tokens. Its cosine
between the question and each candidate orders them.

The forward pass is the one transformers' MPNetModel runs (embeddings with positions counted from the padding id,
one relative-position bias shared by all layers, post-LayerNorm blocks, erf GELU), then mean pooling over the mask
and L2 normalisation, as sentence-transformers does for this model. The weights are memory-mapped from the
safetensors file (read in place, never copied or unpickled): its header is JSON, its tensors raw little-endian
arrays, so nothing in the file can run code.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb import files
from kb.errors import KBError, ReadError

MAX_TOKENS = 64  # a passage's heading and first 40-odd words; 96 and 128 found the right file no more often on the
# tuning half (MRR a little higher) at 1.4 and 1.8 times the time (docs/knowledge-base.md)
HEADS = 12
HIDDEN = 768
INNER = 3072
LAYERS = 12
PAD_ID = 1
EPS = 1e-5
BUCKETS = 32
MAX_DISTANCE = 128
TOKENIZER_MAX = 1 << 24  # bytes
HEADER_MAX = 1 << 24  # a safetensors header beyond 16 MiB is not this model's
DTYPES = {"F32": np.float32, "I64": np.int64}


def read_safetensors(path: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as read-only arrays over one memory map. With `sha256`, the bytes are
    hashed through the descriptor that is then mapped, and a mismatch is a KBError before any tensor is read. A
    header or an offset that does not fit the file is a KBError (a truncated download), never an exception from
    numpy."""
    try:
        with files.open_regular(path) as handle:
            fd = handle.fileno()
            size = os.fstat(fd).st_size
            if sha256 is not None and files.sha256_fd(fd) != sha256:
                raise KBError(f"reranker file {path} does not match its pin (sha256); reinstall the reranker pack")
            os.lseek(fd, 0, os.SEEK_SET)
            head = os.read(fd, 8)
            if len(head) != 8:
                raise KBError(f"{path} is not a safetensors file (too short)")
            length = int.from_bytes(head, "little")
            if not 0 < length <= min(HEADER_MAX, size - 8):
                raise KBError(f"{path} is not a safetensors file (header length {length})")
            raw = b""
            while len(raw) < length and (piece := os.read(fd, length - len(raw))):
                raw += piece
            try:
                header = json.loads(raw)
            except (UnicodeDecodeError, ValueError):
                raise KBError(f"{path} is not a safetensors file (its header is not JSON)") from None
            if not isinstance(header, dict):
                raise KBError(f"{path} is not a safetensors file (its header is not a table)")
            mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except ReadError as exc:
        raise KBError(f"reranker file {path}: {exc}") from None
    except OSError as exc:
        raise KBError(f"reranker file {path} cannot be read ({exc.strerror or exc})") from None
    data = np.frombuffer(mapped, dtype=np.uint8)
    base = 8 + length
    tensors = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[spec["dtype"]]
            shape = tuple(int(n) for n in spec["shape"])
            start, end = (int(n) for n in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise KBError(f"{path}: tensor {name!r} is described in a way this reader does not know") from None
        want = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not (0 <= start <= end and end - start == want and base + end <= size):
            raise KBError(f"{path}: tensor {name!r} does not fit the file (truncated?)")
        tensors[name] = data[base + start:base + end].view(dtype).reshape(shape)
    return tensors


def _expect_shape(tensors: dict[str, np.ndarray], name: str, shape: tuple[int | None, ...]) -> None:
    have = tensors[name].shape
    if len(have) != len(shape) or any(want is not None and want != got for want, got in zip(shape, have, strict=False)):
        raise KBError(f"tensor {name!r} has the shape {have}, not all-mpnet-base-v2's {shape}")


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(var + EPS) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to within 1.5e-7 (Abramowitz and Stegun 7.1.26): numpy has none, and scipy is not a dependency."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _buckets(length: int) -> np.ndarray:
    """MPNet's relative-position buckets (bidirectional, 32 buckets, exact up to 8, logarithmic up to 128)."""
    context = np.arange(length)[:, None]
    memory = np.arange(length)[None, :]
    n = -(memory - context)
    half = BUCKETS // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    with np.errstate(divide="ignore"):
        large = exact + (np.log(np.maximum(n, 1) / exact) / math.log(MAX_DISTANCE / exact) * (half - exact))
    large = np.minimum(large.astype(np.int64), half - 1)
    return ret + np.where(n < exact, n, large)


@dataclass(frozen=True)
class RerankerFiles:
    """Where the reranker's files are, and the sha256 each must have (None: not checked, for experiments)."""

    weights: Path
    tokenizer: Path
    weights_sha256: str | None = None
    tokenizer_sha256: str | None = None


class Reranker:
    """Vectors from all-mpnet-base-v2 (`embed`) and question-passage cosines (`score`); thread-safe, one forward
    pass at a time. With pins, each file is hashed through the descriptor it is then read from."""

    def __init__(self, weights: Path, tokenizer: Path, max_tokens: int = MAX_TOKENS,
                 weights_sha256: str | None = None, tokenizer_sha256: str | None = None):
        self.weights_path, self.tokenizer_path = Path(weights), Path(tokenizer)
        self.max_tokens = max_tokens
        for path in (self.weights_path, self.tokenizer_path):
            if not path.is_file():
                raise KBError(f"reranker file {path} is missing")
        from tokenizers import Tokenizer

        w = read_safetensors(self.weights_path, weights_sha256)
        try:
            self._embed = (w["embeddings.word_embeddings.weight"], w["embeddings.position_embeddings.weight"],
                           w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
            self._bias = w["encoder.relative_attention_bias.weight"]
            _expect_shape(w, "embeddings.word_embeddings.weight", (None, HIDDEN))
            _expect_shape(w, "embeddings.position_embeddings.weight", (None, HIDDEN))
            _expect_shape(w, "encoder.relative_attention_bias.weight", (BUCKETS, HEADS))
            self._layers = []
            for i in range(LAYERS):
                p = f"encoder.layer.{i}."
                for name, shape in ((f"attention.attn.{n}.weight", (HIDDEN, HIDDEN)) for n in "qkvo"):
                    _expect_shape(w, p + name, shape)
                _expect_shape(w, p + "intermediate.dense.weight", (INNER, HIDDEN))
                _expect_shape(w, p + "output.dense.weight", (HIDDEN, INNER))
                qkv_w = np.concatenate([w[p + f"attention.attn.{n}.weight"] for n in "qkv"]).T.copy()
                qkv_b = np.concatenate([w[p + f"attention.attn.{n}.bias"] for n in "qkv"])
                self._layers.append((qkv_w, qkv_b, w[p + "attention.attn.o.weight"].T, w[p + "attention.attn.o.bias"],
                                     w[p + "attention.LayerNorm.weight"], w[p + "attention.LayerNorm.bias"],
                                     w[p + "intermediate.dense.weight"].T, w[p + "intermediate.dense.bias"],
                                     w[p + "output.dense.weight"].T, w[p + "output.dense.bias"],
                                     w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]))
        except KeyError as exc:
            raise KBError(f"{self.weights_path} is not all-mpnet-base-v2 (no tensor {exc})") from None
        except ValueError as exc:  # biases of the wrong length, caught when they are joined
            raise KBError(f"{self.weights_path} is not all-mpnet-base-v2 ({str(exc)[:120]})") from None
        try:
            with files.open_regular(self.tokenizer_path) as handle:
                raw = handle.read(TOKENIZER_MAX + 1)
        except ReadError as exc:
            raise KBError(f"reranker file {self.tokenizer_path}: {exc}") from None
        if tokenizer_sha256 is not None and hashlib.sha256(raw).hexdigest() != tokenizer_sha256:
            raise KBError(f"reranker file {self.tokenizer_path} does not match its pin (sha256); reinstall the "
                          "reranker pack")
        try:
            if len(raw) > TOKENIZER_MAX:
                raise ValueError("larger than any tokenizer of this model")
            self.tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises its own types: one KBError
            raise KBError(f"the reranker's tokenizer cannot be loaded ({str(exc)[:160]})") from None
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding(pad_id=PAD_ID, pad_token="<pad>")
        self._lock = threading.Lock()

    def embed(self, texts: list[str], batch_size: int = 4) -> np.ndarray:
        """One normalised vector per text (rows in the texts' order); texts of like length are run together."""
        out = np.zeros((len(texts), HIDDEN), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock:
            for start in range(0, len(order), batch_size):
                chosen = order[start:start + batch_size]
                out[chosen] = self._vectors([texts[i] for i in chosen])
        return out

    def score(self, query: str, texts: list[str]) -> list[float]:
        """The cosine between `query` and each text, in the texts' order."""
        if not texts:
            return []
        return [float(v) for v in self.embed(texts) @ self.embed([query])[0]]

    def _vectors(self, batch: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        hidden = self._forward(ids, mask)
        pooled = (hidden * mask[:, :, None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
        return (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        words, positions, norm_w, norm_b = self._embed
        batch, length = ids.shape
        position_ids = (np.cumsum(mask, 1) * mask).astype(np.int64) + PAD_ID
        x = _layer_norm(words[ids] + positions[position_ids], norm_w, norm_b).astype(np.float32)
        bias = self._bias[_buckets(length)].transpose(2, 0, 1)[None]  # (1, heads, q, k)
        bias = (bias + ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]).astype(np.float32)
        size = x.shape[-1] // HEADS
        scale = np.float32(1.0 / math.sqrt(size))
        for qkv_w, qkv_b, o_w, o_b, a_nw, a_nb, i_w, i_b, out_w, out_b, o_nw, o_nb in self._layers:
            qkv = (x @ qkv_w + qkv_b).reshape(batch, length, 3, HEADS, size).transpose(2, 0, 3, 1, 4)
            scores = (qkv[0] @ qkv[1].transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(batch, length, HEADS * size)
            attended = _layer_norm(context @ o_w + o_b + x, a_nw, a_nb)
            x = _layer_norm(_gelu(attended @ i_w + i_b) @ out_w + out_b + attended, o_nw, o_nb).astype(np.float32)
        return x
