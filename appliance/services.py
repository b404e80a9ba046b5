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
        return Engine(self.library, self.config, self.paths.llama_log)

    @cached_property
    def history(self) -> History:
        return History(self.paths.history)

    @cached_property
    def answerer(self) -> Answerer:
        return Answerer(self.engine, retriever=None)
