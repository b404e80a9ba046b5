"""Read a GGUF header and its metadata in Python, with hard limits, before llama.cpp ever sees the file.

GGUF metadata is a claim made by whoever converted the file; callers record it as such. A header that is
truncated, absurd or hostile raises GGUFError with a plain reason, and nothing more of the file is read.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import mmap
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from appliance.errors import ApplianceError
from appliance.models.verify import open_regular

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# Hard limits. Real models stay far below them (a 70B model has ~800 tensors and ~40 KV pairs; the largest
# vocabularies have ~260k tokens; chat templates are a few KiB).
MAX_TENSORS = 65_536
MAX_KV = 4_096
MAX_KEY_LEN = 1_024
MAX_STRING_LEN = 16 * 1024 * 1024
MAX_ARRAY_LEN = 16 * 1024 * 1024
MAX_DIMS = 4
MAX_HEADER_BYTES = 512 * 1024 * 1024
KEEP_ARRAY_ITEMS = 64  # arrays longer than this are summarized (the vocabulary is not kept in memory)

_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
T_STRING, T_ARRAY = 8, 9


class GGUFError(ApplianceError):
    """The file is not a GGUF we are willing to hand to llama.cpp."""


@dataclass
class ArraySummary:
    """An array too long to keep: its element type and length (and the first items)."""

    item_type: int
    length: int
    head: list = field(default_factory=list)


@dataclass
class GGUFInfo:
    path: Path
    version: int
    tensor_count: int
    metadata: dict[str, Any]
    data_offset: int
    data_size: int
    file_size: int
    tensors: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (offset in the file, bytes)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        return self.get("general.architecture")

    @property
    def chat_template(self) -> str | None:
        value = self.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def chat_template_sha256(self) -> str | None:
        template = self.chat_template
        return hashlib.sha256(template.encode("utf-8")).hexdigest() if template is not None else None

    def arch_value(self, name: str) -> Any:
        return self.get(f"{self.architecture}.{name}") if self.architecture else None

    @property
    def split(self) -> tuple[int, int] | None:
        """(shard index from 0, shard count) for one file of a split GGUF set, else None."""
        number, count = self.get("split.no"), self.get("split.count")
        if isinstance(number, int) and isinstance(count, int) and count > 1:
            return number, count
        return None


class _Reader:
    """Bounds-checked reads over the file mapped into memory (no system call per field: a vocabulary has
    ~100k strings)."""

    def __init__(self, handle: BinaryIO, file_size: int):
        self.file_size = file_size
        self.pos = 0
        self.buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if file_size else b""

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()

    def read(self, size: int) -> bytes:
        pos = self.pos
        if size < 0 or pos + size > self.file_size or pos + size > MAX_HEADER_BYTES:
            raise GGUFError(f"header is truncated or oversized (needs {size} bytes at offset {pos})")
        self.pos = pos + size
        return self.buf[pos:self.pos]

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self, limit: int = MAX_STRING_LEN) -> str:
        length = self.unpack("<Q")
        if length > limit:
            raise GGUFError(f"string of {length} bytes exceeds the limit of {limit}")
        return self.read(length).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, end = self.buf, self.pos, min(self.file_size, MAX_HEADER_BYTES)
        unpack_from = struct.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise GGUFError(f"header is truncated at offset {pos}")
            (length,) = unpack_from("<Q", buf, pos)
            if length > MAX_STRING_LEN:
                raise GGUFError(f"string of {length} bytes exceeds the limit of {MAX_STRING_LEN}")
            pos += 8 + length
            if pos > end:
                raise GGUFError(f"header is truncated (a string runs past the end of the file at offset {pos})")
        self.pos = pos

    def skip(self, size: int) -> None:
        pos = self.pos
        if pos + size > self.file_size:
            raise GGUFError(f"header is truncated (an array runs past the end of the file at offset {pos})")
        self.pos = pos + size

    def value(self, kind: int, depth: int = 0) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == T_STRING:
            return self.string()
        if kind == T_ARRAY:
            if depth > 1:
                raise GGUFError("nested arrays deeper than 2 levels are not allowed")
            item_type = self.unpack("<I")
            length = self.unpack("<Q")
            if length > MAX_ARRAY_LEN:
                raise GGUFError(f"array of {length} items exceeds the limit of {MAX_ARRAY_LEN}")
            # Each item takes at least this many bytes: an array longer than the rest of the file is refused at
            # once, not after millions of reads.
            least = (struct.calcsize(_SCALARS[item_type]) if item_type in _SCALARS
                     else (8 if item_type == T_STRING else 12))
            if length * least > self.file_size - self.pos:
                raise GGUFError(f"header is truncated (an array of {length} items runs past the end of the file)")
            if item_type in _SCALARS and length > KEEP_ARRAY_ITEMS:
                size = struct.calcsize(_SCALARS[item_type])
                head = [self.value(item_type, depth + 1) for _ in range(KEEP_ARRAY_ITEMS)]
                self.skip(size * (length - KEEP_ARRAY_ITEMS))
                return ArraySummary(item_type, length, head)
            items = [self.value(item_type, depth + 1) for _ in range(min(length, KEEP_ARRAY_ITEMS))]
            if length > KEEP_ARRAY_ITEMS:
                if item_type == T_STRING:
                    self.skip_strings(length - KEEP_ARRAY_ITEMS)  # the rest of a vocabulary: checked, not decoded
                else:
                    for _ in range(length - KEEP_ARRAY_ITEMS):
                        self.value(item_type, depth + 1)
            return items if length <= KEEP_ARRAY_ITEMS else ArraySummary(item_type, length, items)
        raise GGUFError(f"unknown metadata value type {kind}")


@functools.cache
def gguf_constants():
    """The gguf library's `constants` module (quantization block sizes, file types). Importing it as `gguf.constants`
    runs the gguf package's __init__ first, which imports numpy and the reader and writer: 15 MiB and 60 ms of every
    command that reads a model's header, `ask` included. The same file, loaded on its own (it imports only enum
    and typing); the package's module if something already imported it."""
    if "gguf.constants" in sys.modules:
        return sys.modules["gguf.constants"]
    spec = importlib.util.find_spec("gguf")
    origin = Path(spec.origin).with_name("constants.py") if spec is not None and spec.origin else None
    alone = importlib.util.spec_from_file_location("appliance_gguf_constants", origin) if origin else None
    if origin is None or not origin.is_file() or alone is None or alone.loader is None:
        import gguf.constants

        return gguf.constants
    module = importlib.util.module_from_spec(alone)
    alone.loader.exec_module(module)
    return module


def _tensor_nbytes(ggml_type: int, dims: list[int]) -> int:
    constants = gguf_constants()
    try:
        block_size, type_size = constants.GGML_QUANT_SIZES[constants.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise GGUFError(f"unknown tensor type {ggml_type}") from None
    elements = 1
    for dim in dims:
        elements *= dim
    if elements % block_size:
        raise GGUFError("tensor shape does not fit its quantization block size")
    return elements // block_size * type_size


def read_gguf(path: Path) -> GGUFInfo:
    """Parse and bound-check the header, metadata and tensor table of a GGUF file."""
    path = Path(path)
    try:
        fd = open_regular(path, missing_is_integrity=False)  # a FIFO named *.gguf is refused, never waited on
    except FileNotFoundError:
        raise GGUFError(f"{path}: file not found") from None
    except ApplianceError as exc:
        raise GGUFError(str(exc)) from None
    handle = os.fdopen(fd, "rb")
    with handle:
        file_size = os.fstat(fd).st_size
        try:
            reader = _Reader(handle, file_size)
        except (OSError, ValueError) as exc:
            raise GGUFError(f"{path.name}: cannot be mapped for reading ({exc})") from None
        try:
            return _parse(reader, path, file_size)
        except (GGUFError, struct.error) as exc:
            raise GGUFError(f"{path.name}: not a usable GGUF file: {exc}") from None
        finally:
            reader.close()


def _parse(reader: _Reader, path: Path, file_size: int) -> GGUFInfo:
    if file_size < 24 or reader.read(4) != MAGIC:
        raise GGUFError("missing GGUF magic bytes")
    version = reader.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"unsupported GGUF version {version}")
    tensor_count = reader.unpack("<Q")
    kv_count = reader.unpack("<Q")
    if tensor_count > MAX_TENSORS:
        raise GGUFError(f"{tensor_count} tensors exceeds the limit of {MAX_TENSORS}")
    if kv_count > MAX_KV:
        raise GGUFError(f"{kv_count} metadata entries exceeds the limit of {MAX_KV}")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string(MAX_KEY_LEN)
        kind = reader.unpack("<I")
        metadata[key] = reader.value(kind)
    tensors_end = 0
    tensors: dict[str, tuple[int, int]] = {}
    for _ in range(tensor_count):
        name = reader.string(MAX_KEY_LEN)
        n_dims = reader.unpack("<I")
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor with {n_dims} dimensions exceeds the limit of {MAX_DIMS}")
        dims = [reader.unpack("<Q") for _ in range(n_dims)]
        ggml_type = reader.unpack("<I")
        offset = reader.unpack("<Q")
        nbytes = _tensor_nbytes(ggml_type, dims)
        tensors[name] = (offset, nbytes)
        tensors_end = max(tensors_end, offset + nbytes)
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"invalid alignment {alignment!r}")
    header_end = reader.pos
    data_offset = (header_end + alignment - 1) // alignment * alignment
    if data_offset + tensors_end > file_size:
        raise GGUFError(
            f"file is truncated: tensor data needs {data_offset + tensors_end} bytes, the file has {file_size}"
        )
    placed = {name: (data_offset + offset, nbytes) for name, (offset, nbytes) in tensors.items()}
    return GGUFInfo(path, version, tensor_count, metadata, data_offset, tensors_end, file_size, placed)
