"""The offline guards kb depends on, set when `kb` is imported and before it imports chromadb or onnxruntime.

Those libraries read these variables once, at their own import (onnxruntime's telemetry lives in native code that no
Python socket patch can stop; chromadb's is posthog and opentelemetry). kb sets them itself, so any entry point may
import kb first. The values are forced, not defaulted: an inherited ANONYMIZED_TELEMETRY=True must not switch
telemetry on. This module imports nothing heavy, so anything may import it to reuse the list.
"""

from __future__ import annotations

import os

OFFLINE_ENV = {
    # onnxruntime: its native telemetry (Windows ETW) and any session-level reporting. The name is the one the
    # pinned build's native library reads (1.32.0; tests/test_telemetry_env.py reads its strings).
    "ORT_DISABLE_TELEMETRY": "1",
    # chromadb: posthog product telemetry.
    "ANONYMIZED_TELEMETRY": "False",
    "CHROMA_TELEMETRY_IMPL": "none",
    # opentelemetry (a chromadb dependency): no exporters.
    "OTEL_SDK_DISABLED": "true",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    # Generic opt-outs some libraries honour.
    "DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    # tokenizers: no fork warnings in worker threads.
    "TOKENIZERS_PARALLELISM": "false",
}


def apply() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


apply()
