"""The knowledge base as the appliance opens it: once, lazily, with the embedder files checked against their pins.

`KnowledgeHandle.open()` is what the retriever and the CLI's `kb` commands use; nothing is opened (and no embedder
is hashed) until a question or command actually needs the library, so `ask --no-kb` never touches it. Opening it
registers the shipped field guide in a library that has never had it (appliance.answering.field_guide).
"""

from __future__ import annotations

import threading
from pathlib import Path

from appliance.answering.field_guide import FieldGuide, GuideState
from appliance.errors import ApplianceError, IntegrityError
from appliance.models import packs
from appliance.models.verify import check_file


def reranker_files(enabled: bool = True):
    """The reranker pack's files with their pins (kb.reranker.RerankerFiles; the KnowledgeBase hashes them when it
    first reads them), or None when it is turned off ([kb] rerank = false) or not installed."""
    if not enabled or not packs.RERANKER.installed:
        return None
    from kb.reranker import RerankerFiles

    weights, tokenizer = packs.RERANKER.member("weights"), packs.RERANKER.member("tokenizer")
    return RerankerFiles(packs.RERANKER.locate("weights"), packs.RERANKER.locate("tokenizer"),
                         weights.sha256, tokenizer.sha256)


class KnowledgeHandle:
    def __init__(self, directory: Path, guide: bool = True, rerank: bool = True):
        self.directory = directory
        self.rerank = rerank  # [kb] rerank: read the best candidates again with the reranker pack, when installed
        self.guide = guide  # register the shipped field guide when the library is first opened
        self.guide_state: GuideState | None = None
        self._kb = None
        self._lock = threading.Lock()

    def open(self):
        """The kb.KnowledgeBase at `directory` (opened on first call; the same object afterwards)."""
        with self._lock:
            if self._kb is None:
                self._kb = self._open()
            return self._kb

    def _open(self):
        from kb import KBError, KnowledgeBase

        files = []
        for pin in (packs.EMBEDDER_ONNX, packs.EMBEDDER_TOKENIZER):
            path = pin.locate()
            try:
                check_file(path, pin.size, pin.sha256)
            except IntegrityError as exc:
                raise IntegrityError(f"embedder file does not match its pin: {exc}") from None
            files.append(path)
        try:
            knowledge = KnowledgeBase(self.directory, files[0], files[1], reranker_files(self.rerank))
        except KBError as exc:
            raise ApplianceError(str(exc)) from None
        if self.guide:
            self.guide_state = FieldGuide(knowledge).ensure()  # the shipped guide, on a library's first use
        return knowledge
