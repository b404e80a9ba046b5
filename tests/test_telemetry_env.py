"""onnxruntime's native telemetry switch: the variable the pinned build reads is the one the appliance sets.

The name is read from the native library's own strings (1.32.0 reads ORT_DISABLE_TELEMETRY; newer code has been
seen reading ORT_TELEMETRY_DISABLED). When onnxruntime changes version, the first test fails on purpose: look at
the new library's strings, set what it reads in appliance/__init__.py and kb/offline.py, then move the pin.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import appliance
from kb import offline

CHECKED_VERSION = "1.32.0"
TELEMETRY_NAME = re.compile(rb"ORT_[A-Z_]*TELEMETRY[A-Z_]*")


def _native_names() -> set[str]:
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libraries = [p for p in capi.iterdir() if ".so" in p.name or p.suffix in (".dll", ".dylib", ".pyd")]
    assert libraries, f"no native library in {capi}"
    return {match.decode() for lib in libraries for match in TELEMETRY_NAME.findall(lib.read_bytes())}


def test_onnxruntime_is_the_version_whose_telemetry_variable_was_checked():
    assert importlib.metadata.version("onnxruntime") == CHECKED_VERSION, (
        "onnxruntime changed: check which telemetry variable its native library reads (this file's docstring)")


def test_every_telemetry_variable_the_native_library_reads_is_set_off():
    names = _native_names()
    assert names == {"ORT_DISABLE_TELEMETRY"}  # 1.32.0: this one, and no other
    for name in names:
        assert appliance._OFFLINE_ENV.get(name) == "1", name
        assert offline.OFFLINE_ENV.get(name) == "1", name
