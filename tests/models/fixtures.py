"""Tiny GGUF files written by the `gguf` package (the same writer llama.cpp's converters use), and hostile ones
written byte by byte."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"


def make_gguf(path: Path, metadata: dict[str, Any] | None = None, *, arch: str = "llama", tensors: int = 2,
              split_max_tensors: int = 0, template: str | None = TEMPLATE) -> Path:
    """Write a small valid GGUF; metadata values become typed KV pairs (str, int -> uint32, list[str], bool)."""
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    writer.add_name(path.stem)
    writer.add_context_length(256)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    if template is not None:
        writer.add_chat_template(template)
    for key, value in (metadata or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_string(key, value)
    for index in range(tensors):
        writer.add_tensor(f"blk.{index}.weight", np.full((8, 8), index, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def raw_header(tensor_count: int = 0, kv: list[bytes] | None = None, kv_count: int | None = None,
               version: int = 3, magic: bytes = b"GGUF") -> bytes:
    """A GGUF header written by hand, for the shapes no honest writer produces."""
    kv = kv or []
    count = len(kv) if kv_count is None else kv_count
    return magic + struct.pack("<IQQ", version, tensor_count, count) + b"".join(kv)


def kv_string(key: bytes, value: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def catalog_entry(path: Path, **facts: Any) -> dict[str, Any]:
    """A catalog entry naming `path`'s bytes as a release (override any field with keyword arguments)."""
    entry = {
        "id": f"test-{Path(path).stem}",
        "sha256": sha256_of(path),
        "size": Path(path).stat().st_size,
        "file_name": Path(path).name,
        "release": {"repo": "acme/tiny-GGUF", "revision": "0123456789abcdef0123456789abcdef01234567", "official": True},
        "license": {"id": "Apache-2.0", "text": "https://example.invalid/acme/tiny-GGUF/LICENSE"},
        "lineage": {"base_model": "acme/tiny", "fine_tune": "acme/tiny-instruct", "quantization": "F32",
                    "from": "the test's own words"},
        "chat_template_family": "test",
        "evidence": [{"source": "https://example.invalid/pins/tiny", "says": "pins this sha256 for acme/tiny-GGUF"}],
    }
    entry.update(facts)
    return entry


def write_catalog(path: Path, entries: list[dict[str, Any]], **top: Any) -> Path:
    import json

    document = {"schema": "appliance.model-catalog", "version": 1, "entries": entries}
    document.update(top)
    Path(path).write_text(json.dumps(document, indent=2))
    return Path(path)
