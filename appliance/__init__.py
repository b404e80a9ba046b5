"""The appliance: an offline local LLM answering from the user's own library.

The only thing this module does at import is set the environment guards below, before anything can import
onnxruntime, chromadb or huggingface_hub. Those libraries read these variables once, at their own import, and
some of them (onnxruntime) send telemetry from native code that no Python socket patch can stop.
"""

import os

__version__ = "0.1.0"

_OFFLINE_ENV = {
    # huggingface_hub / transformers: never look anything up on the hub unless `online()` lifts it.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
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
    # tokenizers: no fork warnings in worker threads.
    "TOKENIZERS_PARALLELISM": "false",
}

for _key, _value in _OFFLINE_ENV.items():
    os.environ[_key] = _value
del _key, _value
