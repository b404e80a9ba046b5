"""The appliance's services, built once and handed to the CLI or the TUI (never reached through globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from appliance.answer import Answerer
from appliance.config import Config
from appliance.engine import Engine
from appliance.history import History
from appliance.models.library import ModelLibrary
from appliance.paths import Paths


@dataclass
class Services:
    paths: Paths
    config: Config = field(default=None)  # type: ignore[assignment]

    @classmethod
    def create(cls, paths: Paths | None = None) -> "Services":
        paths = (paths or Paths.default()).ensure()
        return cls(paths=paths, config=Config.load(paths.config))

    @cached_property
    def library(self) -> ModelLibrary:
        return ModelLibrary(self.paths)

    @cached_property
    def engine(self) -> Engine:
        return Engine(self.library, self.config, self.paths.llama_log, self.paths.engine_state)

    @cached_property
    def history(self) -> History:
        return History(self.paths.history)

    @cached_property
    def kb(self):
        """The knowledge base at paths.kb, its embedder files taken from their pinned wheels and verified first."""
        from appliance.errors import ApplianceError, IntegrityError
        from appliance.models import packs
        from appliance.models.verify import check_file
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
            return KnowledgeBase(self.paths.kb, files[0], files[1])
        except KBError as exc:
            raise ApplianceError(str(exc)) from None

    @cached_property
    def answerer(self) -> Answerer:
        return Answerer(self.engine, retriever=_LazyRetriever(self, self.config.model.max_tokens))


class _LazyRetriever:
    """Opens the knowledge base only when a question actually uses it (so `ask --no-kb` never touches it)."""

    def __init__(self, services: Services, max_tokens: int):
        self.services = services
        self.max_tokens = max_tokens

    def sources_for(self, question, model):
        from appliance.grounding import KBRetriever

        return KBRetriever(self.services.kb, self.max_tokens).sources_for(question, model)
