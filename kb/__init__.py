"""The knowledge base: the user's offline library, searchable by meaning and by words, with sources.

kb knows nothing of models or UI and imports nothing from appliance/ or tui/. Entry points import `appliance`
first so that the environment guards (telemetry off) are set before chromadb and onnxruntime load.
"""

from kb.base import IngestProgress, IngestReport, KnowledgeBase
from kb.errors import KBError, ReadError
from kb.search import Hit
from kb.source import Source

__all__ = ["KnowledgeBase", "IngestProgress", "IngestReport", "Hit", "KBError", "ReadError", "Source"]
