"""The knowledge base: the user's offline library, searchable by meaning and by words, with sources.

kb knows nothing of models or UI and imports nothing from appliance/ or tui/. It sets the offline guards it depends
on itself (kb.offline, imported first), so an entry point may import kb before anything else.
"""

import kb.offline  # noqa: F401,I001  (first: telemetry off before chromadb or onnxruntime can load)
from kb.errors import KBError, KBUsageError, ReadError
from kb.ingest import IngestProgress, IngestReport
from kb.knowledge_base import KnowledgeBase
from kb.search import Hit
from kb.source import Source

__all__ = ["KnowledgeBase", "IngestProgress", "IngestReport", "Hit", "KBError", "KBUsageError", "ReadError", "Source"]
