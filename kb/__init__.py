"""The knowledge base: the user's offline library, searchable by meaning and by words, with sources.

kb knows nothing of models or UI and imports nothing from appliance/ or tui/. It sets the offline guards it depends
on itself (kb.offline, imported first), so an entry point may import kb before anything else.
"""

import kb.offline  # noqa: F401 - first: telemetry off before chromadb or onnxruntime can load

_HOMES = {"KnowledgeBase": "kb.knowledge_base", "IngestProgress": "kb.ingest", "IngestReport": "kb.ingest",
          "Hit": "kb.search", "KBError": "kb.errors", "KBUsageError": "kb.errors", "ReadError": "kb.errors",
          "Source": "kb.source"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    """The package's names, imported when first asked for: a command that only needs `kb.errors` or `kb.source`
    (`appliance ask --no-kb`, `appliance models ...`) does not pay for numpy and the ingest and search code."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
