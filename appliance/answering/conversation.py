"""Ask within a conversation: the one path of a question, for the CLI and the TUI alike.

    Conversation.ask(question, confirm=...)
      -> validate the question (once)
      -> the owner's rules on the question         a refusal is raised here (RuleRefusal, exit 4); a "confirm" rule
                                                    asks the caller's `confirm` once (the CLI: --confirm or a y/n on
                                                    the terminal; the TUI: a dialog), before anything is loaded
      -> engine.load (verified)                     appliance.engine
      -> retriever.passages(question)               numbered passages from the knowledge base (Passage = Source + text)
      -> the owner's rules on the passages          before the model sees them
      -> build_prompt                               system, earlier turns, passages within the context budget
      -> no passages, a question that reads as an emergency: AnswerRun.emergency (answering.emergency), shown first
      -> model.generate                             AnswerRun: tokens(), cancel(), sources, cited, as_dict()
    Conversation.record(run)                        question + answer in history and the answer log, one transaction

Every part is handed in (engine, history, retriever, settings); nothing here reaches back to the composition root.
The earlier turns of the conversation come from history, so `appliance ask --continue` and the TUI continue the
same conversations.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Protocol

from appliance.answering.emergency import EmergencyNotice, read_as_emergency
from appliance.answering.evidence import CITATION, Claim, Evidence, Quote, content_terms
from appliance.answering.repetition import RepetitionGuard
from appliance.answering.rules import AnswerGate, Decision, Match, RuleBook, enforce
from appliance.answering.scaffolding import ScaffoldFilter
from appliance.config import ModelSettings
from appliance.engine import Engine, Generation, LoadedModel
from appliance.errors import ConfirmationNeeded, RuleRefusal, UsageError
from appliance.models.verify import Progress
from appliance.records.history import History
from kb.source import Source

SYSTEM_PROMPT = (
    "You are a careful assistant running offline on the user's own computer. "
    "Answer clearly and briefly, in the language of the question. If you are not sure, say so."
)
# Measured with scripts/eval_answers on Qwen2.5-Coder-0.5B (14 questions, one per document): an instruction in the
# system prompt to "put the number ... like [1]" made 7 of 14 answers a bare "[1]" and 3 of 14 carried the fact;
# passages headed "Passage N" with the instruction after the question: no bare citation, 9 of 14.
GROUNDED_PROMPT = (
    "You are a careful assistant running offline on the user's own computer. "
    "Answer the question from the passages from the user's library. "
    "If the passages do not answer the question, say so plainly. Be clear and brief, and answer in the language "
    "of the question."
)
# Measured on scripts/eval/unseen (RESULTS.md): an instruction for "one to three short sentences of your own ... the
# command, setting or number exactly as written" cut the answers mostly copied from passages (held back 17/28 -> 2/28)
# but lost facts on the project's own set (key fact in the model's words 46/70 -> 27/70, shown 64/70 -> 57/70): not
# taken. The instruction below keeps the facts.
ANSWER_INSTRUCTION = ("Answer in full sentences that say what to do. After each sentence, put the number of the "
                      "passage it comes from in square brackets.")
LEAD_INTRO = "The library's closest sentence:"
ABSTAIN_NOTICE = "The library has nothing on this; answering from the model alone."
UNSEARCHED_NOTICE = ("Nothing found in what the library could search ({count} not searched: named above); answering "
                     "from the model alone.")

# Retrieved for the quotes (and --quote-only); a model is shown the best PromptPlan.for_model(...).passages of them.
# Measured on the unseen set's tuning half (scripts/eval/unseen): the key fact stands in the best 3 passages for 10
# of 25 questions and in the best 8 for 17; quoting from all 8 showed it in 12 quotes instead of 7.
QUOTE_PASSAGES = 8
QUOTES = 3  # sentences from the library shown before the model's words
# Name the best quote to the model after the question (build_prompt's `lead`)? Measured on the unseen set's tuning
# half with the instruction below: with it the 0.5B often answered "The library's closest sentence is ..." and
# nothing more (key fact in its own words 6/25, mostly copied 7/30); without it 7/25 and 1/30. Off.
LEAD = False
HISTORY_MESSAGES = 6  # earlier messages of the conversation given to the model (3 exchanges)
RESERVE_TOKENS = 64  # chat-template overhead and a safety margin
MIN_PASSAGE_WORDS = 25  # a passage cut shorter than this is left out

# Asked when one of the owner's "confirm" rules matched the question: True goes on, False refuses ("not asked");
# it may raise (the CLI raises ConfirmationNeeded when nobody can be asked). Called once per question, from the
# thread that runs `ask`, before retrieval and before the model is loaded.
Confirm = Callable[[ConfirmationNeeded], bool]


@dataclass
class Passage:
    """A piece of the library shown to the model: where it came from, and its text."""

    source: Source
    text: str


class Retriever(Protocol):
    def passages(self, question: str, k: int) -> list[Passage]:
        """The passages most relevant to `question`, best first; empty when nothing passes the relevance floor."""


class KBRetriever:
    """Passages from the knowledge base, opened through its handle on first use."""

    def __init__(self, knowledge: Any):
        self.knowledge = knowledge  # appliance.answering.knowledge.KnowledgeHandle (or anything with open() -> kb)

    def passages(self, question: str, k: int) -> list[Passage]:
        """Each hit as a Passage whose Source carries what its file states (title, publisher, license) and the
        sha256 of its bytes; the sources the search named (a damaged archive not searched, a cited file changed)
        are kept for `take_problems`."""
        kb = self.knowledge.open()
        found = []
        for hit in kb.search(question, k=k):
            said = kb.described(hit.path)
            found.append(Passage(replace(hit.source(), work=said.get("title") or "",
                                         publisher=said.get("publisher") or "", license=said.get("license") or "",
                                         sha256=said.get("sha256") or ""), hit.text))
        self._problems = [state.as_dict() | {"line": state.line()} for state in kb.take_problems()]
        return found

    def take_problems(self) -> list[dict]:
        """The sources the last search named, once."""
        out, self._problems = getattr(self, "_problems", []), []
        return out


@dataclass
class Prompt:
    messages: list[dict]
    sources: list[Source]  # numbered as in the prompt


def _where(source: Source) -> str:
    title, section = source.title, source.section
    if title and section and section.split(" > ")[0] == title:
        title = ""  # the heading path starts with the title already
    return ", ".join(part for part in (title, section, f"page {source.page}" if source.page is not None else "")
                     if part)


def _block(number: int, source: Source, text: str) -> str:
    return f"Passage {number} ({_where(source)})\n{text}"


def build_prompt(model: LoadedModel, question: str, passages: list[Passage], earlier: list[dict],
                 max_tokens: int, best_last: bool = False, lead: str = "") -> Prompt:
    """System prompt, earlier turns and numbered passages, within the model's context minus the answer's room.

    Earlier turns get at most a third of what is left after the question (oldest dropped first), passages the
    rest, best first; a passage too long for what remains is cut at a word boundary, or left out (with all after
    it) when too little would fit. `best_last` puts the best passage nearest the question; `lead` (the best quote)
    is named after the question as the library's closest sentence.
    """
    system = GROUNDED_PROMPT if passages else SYSTEM_PROMPT
    budget = model.context - min(max_tokens, model.context // 2) - RESERVE_TOKENS
    after = _after_question(lead) if passages else ""
    instructions = system + after  # what the answer is told, counted once
    counts = model.token_counts([instructions, question] + [m["content"] for m in earlier])
    question_tokens = counts[1]
    budget -= counts[0]
    if question_tokens > budget:
        raise UsageError(f"the question is {question_tokens} tokens; model {model.entry.name!r} reads "
                         f"{max(budget, 0)} here (context {model.context}, {max_tokens} kept for the answer); "
                         "ask something shorter")
    budget -= question_tokens
    kept = _recent_turns(earlier, counts[2:], budget // 3)
    budget -= sum(cost + 4 for _, cost in kept)
    sources: list[Source] = []
    blocks: list[str] = []
    numbers = [p.source.number if p.source.number is not None else n for n, p in enumerate(passages, start=1)]
    candidates = [_block(n, p.source, p.text.strip()) for n, p in zip(numbers, passages, strict=True)]
    costs = model.token_counts(candidates) if candidates else []
    for number, passage, block, cost in zip(numbers, passages, candidates, costs, strict=True):
        cost += 4
        if cost > budget:  # too long for what is left: keep the start of the passage if a useful part fits
            words = passage.text.split()
            while words and cost > budget:
                words = words[: int(len(words) * 0.75)]
                block = _block(number, passage.source, " ".join(words) + " ...")
                cost = model.token_count(block) + 4
            if len(words) < MIN_PASSAGE_WORDS:
                break
        budget -= cost
        blocks.append(block)
        sources.append(replace(passage.source, number=number))
    if sources:
        ordered = blocks[::-1] if best_last else blocks
        user = "Passages from the user's library:\n\n" + "\n\n".join(ordered) + f"\n\nQuestion: {question}" + after
        system = GROUNDED_PROMPT
    else:
        user, system = question, SYSTEM_PROMPT
    turns = [message for message, _ in kept]
    return Prompt([{"role": "system", "content": system}, *turns, {"role": "user", "content": user}], sources)


def _after_question(lead: str) -> str:
    """What follows the question: the library's closest sentence (when there is one), then the instruction."""
    lead = " ".join(lead.split())
    return (f"\n\n{LEAD_INTRO} \"{lead}\"" if lead else "") + "\n\n" + ANSWER_INSTRUCTION


def _recent_turns(earlier: list[dict], costs: list[int], allowance: int) -> list[tuple[dict, int]]:
    """The most recent earlier messages that fit in `allowance` tokens, starting with a question."""
    kept: list[tuple[dict, int]] = []
    for message, cost in zip(reversed(earlier), reversed(costs), strict=True):
        if cost + 4 > allowance:
            break
        allowance -= cost + 4
        kept.insert(0, (message, cost))
    while kept and kept[0][0]["role"] != "user":
        kept.pop(0)
    return kept


class AnswerView(Protocol):
    """What a shell reads of a finished (or cancelled) answer: the TUI reads these, never `as_dict()`, which is the
    serializer for --json, the history and the answer log."""

    question: str
    sources: list[Source]
    quotes: list[Quote]
    notice: str
    stopped: str
    refused: Match | None
    emergency: EmergencyNotice | None

    @property
    def text(self) -> str: ...
    @property
    def cancelled(self) -> bool: ...
    @property
    def unsupported(self) -> list[str]: ...
    @property
    def misplaced(self) -> list[str]: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def timings(self) -> dict[str, Any]: ...
    @property
    def model_name(self) -> str: ...
    @property
    def engine_notice(self) -> str: ...


@dataclass
class AnswerRun:
    """One answer: the library's own words first (quotes), then the model's, guarded against loops, then its
    claims checked against the passages. `generation` is None for `--quote-only` (the model is never loaded)."""

    question: str
    model: LoadedModel | None
    generation: Generation | None
    sources: list[Source] = field(default_factory=list)
    notice: str = ""  # e.g. the library has nothing on this, shown before any model text
    conversation_id: int | None = None  # the conversation it continues (None: a new one)
    quotes: list[Quote] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)  # those in the prompt (or quoted from)
    evidence: Evidence | None = None
    claims: list[Claim] | None = None  # after the answer: each sentence, supported by the passages or not
    stopped: str = ""  # why the answer was stopped early (a loop, another language, no words of its own)
    timings_extra: dict = field(default_factory=dict)
    rules: Decision = field(default_factory=Decision)  # the owner's rules that matched the question and passages
    gate: AnswerGate | None = None  # the owner's rules on the answer, sentence by sentence (when there are any)
    refused: Match | None = None  # the rule that withheld the rest of the answer
    settings: dict = field(default_factory=dict)  # what shaped the answer (for the answer log)
    chunk_hashes: dict = field(default_factory=dict)  # source number -> sha256 of the stored passage text
    emergency: EmergencyNotice | None = None  # an emergency answered without passages: said before anything else
    # the sources the search named: a damaged archive not searched, a cited file changed since it was added
    # (kb.provenance.SourceState.as_dict() + "line"); said with the notice, in --json "source_problems"
    source_problems: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.guard = RepetitionGuard(self.question)

    def tokens(self) -> Iterator[str]:
        """The model's words as they may be shown (a loop is held back and stops the answer)."""
        if self.generation is None:
            return
        gate = self.gate
        # no "Passage N (...)" header or fragment reaches a person, anywhere
        for piece in ScaffoldFilter().stream(self.generation.tokens()):
            shown = self.guard.feed(piece)
            if shown and gate is not None:
                shown = gate.feed(shown)
            if shown:
                yield shown
            if self.guard.stopped and not self.stopped:
                self.stopped = self.guard.stopped
                self.generation.stop()  # the engine stops within a token; the rest is drained unseen
            if gate is not None and gate.refusal is not None and self.refused is None:
                self.refused = gate.refusal
                self.generation.stop()
        rest = self.guard.finish() if not self.generation.cancel.is_set() else ""
        if gate is not None:
            rest = gate.feed(rest) + gate.finish() if self.refused is None else ""
            self.refused = gate.refusal
        if rest:
            yield rest
        if not self.stopped and self.text and not CITATION.sub("", self.text).strip(" \n\t.,;:"):
            self.stopped = "the model gave only a citation, no answer of its own"
        self.check()

    def cancel(self) -> None:
        if self.generation is not None:
            self.generation.stop()

    @property
    def cancelled(self) -> bool:
        return bool(self.generation is not None and self.generation.cancelled and not self.stopped
                    and self.refused is None)

    @property
    def text(self) -> str:
        """The model's text as shown (empty for --quote-only); with rules on the answer, what they let through."""
        if self.generation is None:
            return ""
        return self.gate.released if self.gate is not None else self.guard.answer

    @property
    def unsupported(self) -> list[str]:
        """The model's sentences no passage supports (after the answer; empty before the check or without one)."""
        return [claim.text for claim in self.claims or [] if not claim.supported]

    @property
    def misplaced(self) -> list[str]:
        """The model's supported sentences marked [n] with a passage that does not say them, each with the marks
        and the passages that do (Claim.mark_note; empty before the check)."""
        return [claim.mark_note for claim in self.claims or [] if claim.wrong_marks]

    @property
    def timings(self) -> dict[str, Any]:
        """The engine's figures (load, first token, tokens, rate ...) and the question path's own (rules, quotes)."""
        return (self.generation.timings.as_dict() if self.generation is not None else {}) | self.timings_extra

    @property
    def model_name(self) -> str:
        return self.model.entry.name if self.model is not None else ""

    @property
    def engine_notice(self) -> str:
        """Said once when the engine fell back to a safer mode for this model on this CPU."""
        if self.generation is None:
            return ""
        return self.generation.notice or (self.model.notice if self.model is not None else "")

    @property
    def decision(self) -> Decision:
        """Every rule that matched: on the question, the passages, and the answer so far."""
        return Decision(self.rules.matches + (self.gate.decision.matches if self.gate is not None else []))

    def check(self) -> None:
        """Mark each sentence of the model's text as supported by the passages or not (once, after the answer)."""
        if self.claims is not None or self.evidence is None or not self.passages or self.cancelled:
            return
        started = time.perf_counter()
        self.claims = self.evidence.claims(self.text, self.passages, self.sources)
        self.timings_extra["claims_s"] = round(time.perf_counter() - started, 4)

    @property
    def cited(self) -> list[Source]:
        """The passages that really back the answer: quoted, or supporting one of its sentences. Without a check
        (no embedder), the [n] the model typed."""
        if self.claims is not None or self.quotes:
            numbers = {quote.source.number for quote in self.quotes}
            numbers |= {n for claim in self.claims or [] for n in claim.sources}
        else:
            numbers = {int(n) for n in CITATION.findall(self.text)}
        return [source for source in self.sources if source.number in numbers]

    def as_dict(self) -> dict[str, Any]:
        cited = self.cited
        typed = {int(n) for n in CITATION.findall(self.text)}
        model = None
        if self.model is not None:
            entry = self.model.entry
            model = {"name": entry.name, "sha256": entry.sha256, "license": entry.license_id}
        return {
            "question": self.question,
            "quotes": [quote.as_dict() for quote in self.quotes],
            "answer": self.text,
            "notice": self.notice or None,
            "source_problems": self.source_problems,
            "emergency": self.emergency.as_dict() if self.emergency is not None else None,
            "stopped": self.stopped or None,
            "engine_notice": self.engine_notice or None,
            "cancelled": self.cancelled,
            "conversation_id": self.conversation_id,
            "model": model,
            "engine": {"variant": self.model.variant, "mode": self.model.mode} if self.model is not None else None,
            "sources": [source.as_dict() | {"cited": source in cited, "marked": source.number in typed,
                                            "chunk_sha256": self.chunk_hashes.get(source.number)}
                        for source in self.sources],
            "claims": [claim.as_dict() for claim in self.claims] if self.claims is not None else None,
            "rules": self.decision.as_list(),
            "refused": self.refused.as_dict() if self.refused is not None else None,
            "settings": self.settings,
            "timings": self.timings,
        }


@dataclass(frozen=True)
class PromptPlan:
    """How much of the library a model is shown: fewer, shorter passages for a small model; the best passage
    nearest the question (last) when `best_last`."""

    passages: int
    words: int | None
    best_last: bool = True

    @classmethod
    def for_model(cls, n_params: int) -> "PromptPlan":
        if n_params and n_params < 1_000_000_000:
            return cls(passages=3, words=110)
        if n_params and n_params < 4_000_000_000:
            return cls(passages=5, words=180)
        return cls(passages=8, words=None)


def focus(text: str, terms: set[str], words: int | None) -> str:
    """At most `words` words of `text`, from the window that holds the most of the question's terms."""
    tokens = text.split()
    if words is None or len(tokens) <= words:
        return text.strip()
    hits = [1 if content_terms(token) & terms else 0 for token in tokens]
    best, best_start, window = -1, 0, sum(hits[:words])
    for start in range(0, len(tokens) - words + 1):
        if start:
            window += hits[start + words - 1] - hits[start - 1]
        if window > best:
            best, best_start = window, start
    cut = tokens[best_start:best_start + words]
    return ("... " if best_start else "") + " ".join(cut) + (" ..." if best_start + words < len(tokens) else "")


def _hashes(passages: list[Passage]) -> dict[int | None, str]:
    """Source number -> sha256 of the passage's stored text: what a certificate checks the library against."""
    return {p.source.number: hashlib.sha256(p.text.encode("utf-8", "surrogatepass")).hexdigest() for p in passages}


def clean_question(question: str | None) -> str:
    """The question as text: stripped, never empty; bytes that are not UTF-8 become U+FFFD (a question from a
    terminal or a file in another encoding must not fail later in the tokenizer, history or JSON)."""
    text = (question or "").encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()
    if not text:
        raise UsageError('the question is empty; ask something, e.g. appliance ask "How do I purify water?"')
    return text


class Conversation:
    """One conversation: its earlier turns (kept in history), and the next question asked within it."""

    def __init__(self, engine: Engine, history: History, settings: ModelSettings, retriever: Retriever | None = None,
                 conversation_id: int | None = None, evidence: Evidence | None = None,
                 rules: Callable[[], RuleBook] | None = None):
        self.engine = engine
        # the owner's rules (appliance.answering.rules.RuleFile: rules.toml, read again when it changes)
        self.rules = rules
        self.history = history
        self.settings = settings
        self.retriever = retriever
        self.evidence = evidence
        self.id = conversation_id
        self.plan: PromptPlan | None = None  # None: sized to the model (PromptPlan.for_model); the eval sets it
        self._named: list[dict] = []  # the sources the last search named (AnswerRun.source_problems)

    def earlier(self) -> list[dict]:
        return self.history.chat_messages(self.id, HISTORY_MESSAGES) if self.id is not None else []

    def _passages(self, question: str, k: int) -> list[Passage]:
        if self.retriever is None:
            return []
        found = self.retriever.passages(question, k)
        take = getattr(self.retriever, "take_problems", None)
        self._named = take() if take is not None else []
        return [Passage(replace(p.source, number=n), p.text) for n, p in enumerate(found, start=1)]

    def _notice(self, use_kb: bool, passages: list[Passage]) -> str:
        """What is said before the answer: each source the search named, then that the library had nothing."""
        named = self._named
        lines = [problem["line"] for problem in named]
        if use_kb and self.retriever is not None and not passages:
            unsearched = sum(1 for problem in named if not problem.get("searched", True))
            lines.append(UNSEARCHED_NOTICE.format(count=unsearched) if unsearched else ABSTAIN_NOTICE)
        return "\n".join(lines)

    def _quotes(self, question: str, passages: list[Passage], run_timings: dict) -> list[Quote]:
        if self.evidence is None or not passages:
            return []
        started = time.perf_counter()
        quotes = self.evidence.quotes(question, passages, [p.source for p in passages], k=QUOTES)
        run_timings["quotes_s"] = round(time.perf_counter() - started, 4)
        return quotes

    def _question_rules(self, question: str, decision: Decision, timings: dict,
                        confirm: Confirm | None) -> tuple[RuleBook | None, bool]:
        """The rules on the question, checked once: (the rule book, whether a confirmation was given). Without a
        `confirm` to ask, a confirmation rule raises ConfirmationNeeded; a no is a refusal."""
        try:
            return self.check_rules("question", [question], [], decision, timings), False
        except ConfirmationNeeded as exc:
            if confirm is None:
                raise
            if not confirm(exc):
                raise RuleRefusal(f"not asked ({exc})", rule=exc.rule, decision=exc.decision) from None
            return (self.rules() if self.rules is not None else None), True

    def check_rules(self, place: str, texts: list[str], where: list[str], decision: Decision, timings: dict,
                    confirmed: bool = False) -> RuleBook | None:
        """The owner's rules on one place; a refusal (or a confirmation not given) is raised, naming the rule."""
        book = self.rules() if self.rules is not None else None
        if book is None or not book.applies(place) or not texts:
            return book
        started = time.perf_counter()
        found = book.check(place, texts, where)
        timings[f"rules_{place}_s"] = round(time.perf_counter() - started, 5)
        decision.extend(found)
        enforce(Decision(list(decision.matches)), confirmed)
        return book

    def ask(self, question: str, *, model: str | None = None, max_tokens: int | None = None, use_kb: bool = True,
            threads: int | None = None, progress: Progress | None = None, quote_only: bool = False,
            confirm: Confirm | None = None, earlier: list[dict] | None = None) -> AnswerRun:
        """`earlier`: the conversation's earlier turns as the caller holds them (a served OpenAI client resends
        them), instead of those in history.

        Raises RuleRefusal (exit 4) when one of the owner's rules refuses the question or a passage, before the
        model sees either (a refused question: before retrieval and before the model is loaded). A "confirm" rule
        that matched asks `confirm` (see Confirm); without one, ConfirmationNeeded is raised."""
        question = clean_question(question)
        self._named = []
        timings: dict = {}
        decision = Decision()
        book, confirmed = self._question_rules(question, decision, timings, confirm)
        if quote_only:  # the library's own words alone: the model is never loaded
            passages = self._passages(question, QUOTE_PASSAGES) if use_kb else []
            self.check_rules("passages", [p.text for p in passages], [p.source.cite() for p in passages], decision,
                             timings, confirmed)
            quotes = self._quotes(question, passages, timings)
            notice = self._notice(use_kb, passages).replace("; answering from the model alone.", ".")
            return AnswerRun(question, None, None, [p.source for p in passages],
                             notice, self.id, quotes, passages, source_problems=self._named,
                             timings_extra=timings, rules=decision, settings={"quote_only": True, "use_kb": use_kb},
                             chunk_hashes=_hashes(passages),
                             emergency=read_as_emergency(question) if not passages else None)
        loaded = self.engine.load(model, progress=progress, threads=threads)
        limit = max_tokens or self.settings.max_tokens
        plan = self.plan or PromptPlan.for_model(loaded.n_params)
        passages = self._passages(question, max(plan.passages, QUOTE_PASSAGES)) if use_kb else []
        self.check_rules("passages", [p.text for p in passages], [p.source.cite() for p in passages], decision,
                         timings, confirmed)
        notice = self._notice(use_kb, passages)
        terms = content_terms(question)
        shown = [Passage(p.source, focus(p.text, terms, plan.words)) for p in passages[: plan.passages]]
        # Quotes come from every retrieved passage (verbatim, whole), the support check from what the model was
        # shown; a passage quoted but not shown to the model is a source too (numbered as retrieved).
        quotes = self._quotes(question, passages, timings)
        prompt = build_prompt(loaded, question, shown, self.earlier() if earlier is None else earlier, limit,
                              best_last=plan.best_last, lead=quotes[0].text if quotes and LEAD else "")
        in_prompt = shown[: len(prompt.sources)]
        quoted = {quote.source.number for quote in quotes}
        prompted = {source.number for source in prompt.sources}
        also_quoted = [p for p in passages if p.source.number in quoted - prompted]
        sources = prompt.sources + [p.source for p in also_quoted]
        generation = loaded.generate(prompt.messages, limit, repeat_penalty=self.settings.repeat_penalty)
        settings = {"max_tokens": limit, "context": loaded.context, "temperature": self.settings.temperature,
                    "repeat_penalty": self.settings.repeat_penalty, "seed": self.settings.seed, "use_kb": use_kb,
                    "passages": plan.passages, "passage_words": plan.words, "quote_passages": len(passages),
                    "earlier_messages": len(prompt.messages) - 2}
        # The claims are checked against the passages the model read and those the person is quoted from.
        return AnswerRun(question, loaded, generation, sources, notice, self.id, quotes, in_prompt + also_quoted,
                         self.evidence, timings_extra=timings, rules=decision,
                         gate=AnswerGate(book) if book is not None and book.applies("answer") else None,
                         settings=settings, chunk_hashes=_hashes(passages),
                         emergency=read_as_emergency(question) if not prompt.sources else None,
                         source_problems=self._named)

    def record(self, run: AnswerRun, device: str | None = None) -> int:
        """Save the question and its answer in one transaction; the conversation continues from here. `device`:
        the served device that asked (shelter mode), kept with the conversation and in the answer log."""
        result = run.as_dict() | ({"device": device} if device else {})
        self.id = self.history.record_exchange(run.question, result, self.id, device=device)
        return self.id
