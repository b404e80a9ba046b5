"""The appliance's services, built once and handed to the CLI or the TUI (never reached through globals).

The composition root: it builds each part and hands it what it needs; no part calls back into it. `ShellServices`
types what a shell (the TUI, the CLI) may use of it, so a test can hand the TUI another implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from appliance.answering.conversation import Conversation, KBRetriever
from appliance.answering.evidence import Evidence
from appliance.answering.knowledge import KnowledgeHandle
from appliance.answering.rules import RuleFile
from appliance.config import Config
from appliance.engine import Engine
from appliance.models import packs
from appliance.models.choice import Consents, DefaultChoice, set_default
from appliance.models.library import ModelLibrary
from appliance.paths import Paths
from appliance.records.history import History
from appliance.system.hardware import Hardware
from appliance.system.power import PowerProfile, profile
from kb.vector_cache import VectorCache


class ShellServices(Protocol):
    """What the TUI and the CLI use of the services (Services implements it; the TUI's tests hand in their own)."""

    paths: Paths
    config: Config

    @property
    def models(self) -> ModelLibrary: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def history(self) -> History: ...
    @property
    def kb(self) -> Any: ...
    @property
    def consents(self) -> Consents: ...
    @property
    def rules(self) -> RuleFile: ...
    def conversation(self, conversation_id: int | None = None) -> Conversation: ...
    def power_profile(self, hardware: Hardware | None = None) -> PowerProfile: ...
    def set_default_model(self, name: str) -> DefaultChoice: ...


@dataclass
class Services:
    paths: Paths
    config: Config

    @classmethod
    def create(cls, paths: Paths | None = None) -> "Services":
        paths = (paths or Paths.default()).ensure()
        return cls(paths=paths, config=Config.load(paths.config))

    @cached_property
    def models(self) -> ModelLibrary:
        return ModelLibrary(self.paths)

    @cached_property
    def engine(self) -> Engine:
        return Engine(self.models, self.config, self.paths.llama_log, self.paths.engine_state,
                      prefix_dir=self.paths.home / "cache" / "prompt-prefix")

    @cached_property
    def history(self) -> History:
        return History(self.paths.history)

    @cached_property
    def knowledge(self) -> KnowledgeHandle:
        return KnowledgeHandle(self.paths.kb, guide=self.config.kb.field_guide, rerank=self.config.kb.rerank)

    @cached_property
    def kb(self):
        """The knowledge base at paths.kb, its embedder files verified against their pins (opened on first use)."""
        return self.knowledge.open()

    @cached_property
    def evidence(self) -> Evidence:
        """Sentence-level quotes and support checks with the knowledge base's embedder (opened on first use)."""
        knowledge = self.knowledge
        cache = self.paths.home / "cache" / f"sentence-vectors-{packs.EMBEDDER_ONNX.sha256[:12]}.sqlite"
        return Evidence(VectorCache(lambda texts: knowledge.open().embedder.embed(texts), cache))

    @cached_property
    def rules(self) -> RuleFile:
        """The owner's rules (rules.toml, read again when it changes); the embedder only for `similar` rules."""
        knowledge = self.knowledge
        return RuleFile(self.paths.rules, lambda texts: knowledge.open().embedder.embed(texts))

    @cached_property
    def consents(self) -> Consents:
        """Which model files the owner accepted despite a license or content warning (`models accept`, the TUI)."""
        return Consents(self.paths.home)

    def set_default_model(self, name: str) -> DefaultChoice:
        """`models default NAME` and the TUI's models screen: config.toml's [model] default, the model checked."""
        return set_default(self.models, self.config, self.paths.config, name)

    def conversation(self, conversation_id: int | None = None) -> Conversation:
        """A new conversation, or the one with this id continued (its earlier turns come from history)."""
        return Conversation(self.engine, self.history, self.config.model, KBRetriever(self.knowledge),
                            conversation_id, self.evidence, self.rules)

    def power_profile(self, hardware: Hardware | None = None) -> PowerProfile:
        """The low-power profile as things stand now: the power source is read at every call (a few small sysfs
        reads; the machine can be unplugged while the TUI is open). `.limits()` gives a question's threads and
        max_tokens. `hardware`: the machine doctor examines (default: this one, detected)."""
        model = self.config.model
        threads = (hardware or Hardware.detect()).threads(model.threads)
        return profile(self.config.power, threads, usual_max_tokens=model.max_tokens)
