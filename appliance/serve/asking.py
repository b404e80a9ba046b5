"""A served question, asked through the same path as `appliance ask` (Conversation.ask), on the queue's worker.

The job reports to its ticket: `start` (the library's quotes and the sources, known before the model's first
word), `token` (the model's words as the CLI would show them: scaffolding removed, loops stopped, the owner's
answer rules applied), then `done` (the whole answer as `ask --json` gives it, with each passage's text, so a
phone can show what a source said) or `refused` / `error`. A served question is held to the owner's rules exactly
as a local one; a "confirm" rule cannot be confirmed from a phone, so it refuses. Limits: the question's bytes,
max_tokens and the answer's wall time (past it, the answer is stopped and says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from appliance.errors import ApplianceError, ConfirmationNeeded, RuleRefusal, UsageError
from appliance.serve.queue import Ticket
from appliance.services import Services


@dataclass(frozen=True)
class Limits:
    question_bytes: int = 4000
    max_tokens: int = 512
    answer_s: float = 180.0
    body_bytes: int = 64 * 1024  # a request's body; an OpenAI client resends the whole conversation


@dataclass(frozen=True)
class Question:
    text: str
    device: str
    conversation_id: int | None = None  # continue this one (the device's own, checked before it is queued)
    earlier: list[dict] | None = None  # the turns a client resends (OpenAI route), instead of history
    max_tokens: int | None = None
    grounded: bool = True


class Asker:
    def __init__(self, services: Services, limits: Limits):
        self.services = services
        self.limits = limits

    def check(self, question: Question) -> Question:
        """What can be refused before the question is queued (UsageError: 400); the question as it will be asked:
        a conversation of this device's own goes on from its history (turns resent are not needed), one it does
        not have here goes on from the turns the page resent, as a new one (another replica's, or one gone)."""
        size = len(question.text.encode("utf-8", "replace"))
        if size > self.limits.question_bytes:
            raise UsageError(f"the question is {size} bytes; a served question may be at most "
                             f"{self.limits.question_bytes}")
        if not question.text.strip():
            raise UsageError("the question is empty")
        if question.conversation_id is None:
            return question
        if self.services.history.conversation(question.conversation_id, device=question.device) is not None:
            return replace(question, earlier=None)
        if question.earlier:
            return replace(question, conversation_id=None)
        raise UsageError(f"no conversation {question.conversation_id} for this device")

    def job(self, question: Question):
        def run(ticket: Ticket) -> None:
            self._answer(question, ticket)
        return run

    def _answer(self, question: Question, ticket: Ticket) -> None:
        services = self.services
        conversation = services.conversation(question.conversation_id)
        wanted = min(question.max_tokens or self.limits.max_tokens, self.limits.max_tokens)
        threads, max_tokens = services.power_profile().limits(None, wanted)
        try:
            run = conversation.ask(question.text, max_tokens=max_tokens, threads=threads, use_kb=question.grounded,
                                   earlier=question.earlier)
        except ConfirmationNeeded as exc:
            ticket.emit("refused", {"message": f"{exc}; it needs the owner's confirmation at the appliance itself",
                                    "rule": exc.rule})
            return
        except RuleRefusal as exc:
            ticket.emit("refused", {"message": str(exc), "rule": exc.rule})
            return
        except UsageError as exc:
            ticket.emit("error", {"message": str(exc), "status": 400})
            return
        except ApplianceError as exc:
            ticket.emit("error", {"message": str(exc), "status": 503})
            return
        ticket.on_cancel = run.cancel
        if ticket.cancelled.is_set():
            run.cancel()
        ticket.emit("start", {"quotes": [q.as_dict() for q in run.quotes],
                              "sources": [s.as_dict() for s in run.sources], "notice": run.notice or None,
                              "emergency": run.emergency.as_dict() if run.emergency is not None else None,
                              "model": run.model_name})
        started, overtime = time.monotonic(), False
        for piece in run.tokens():
            ticket.emit("token", piece)
            if not overtime and time.monotonic() - started > self.limits.answer_s:
                overtime = True
                run.cancel()
        ticket.on_cancel = None
        if overtime:
            run.stopped = run.stopped or f"stopped: a served answer may take at most {self.limits.answer_s:.0f} s"
        if ticket.cancelled.is_set() and not overtime:
            ticket.emit("cancelled", None)
            return
        result: dict[str, Any] = run.as_dict()
        try:
            result["conversation_id"] = conversation.record(run, device=question.device)
        except ApplianceError as exc:  # the answer stands; saving it failed (a full disk)
            result["history_error"] = str(exc)
        result["device"] = question.device
        result["finish_reason"] = run.generation.finish_reason if run.generation is not None else "stop"
        result["passages"] = {str(p.source.number): p.text for p in run.passages}
        ticket.emit("done", result)
