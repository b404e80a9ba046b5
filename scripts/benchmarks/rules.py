"""Owner's rules and the answer log: 100 rules on a question (goal < 5 ms), one log append (goal < 2 ms).

Rules: 100 rules of 3 words/phrases and 1 pattern each, checked against a typical question that matches none
(every rule is tried) and one that the last rule matches; the median of many checks. The similar-to-a-phrase
kind is measured apart, with the real embedder (one question embedded; the phrases are embedded once and kept).
Log: History.record_exchange on a real history.sqlite (WAL, one transaction: two messages, the record, the
chain entry) with and without the chain step, so the chain's own cost shows, after 1000 earlier exchanges.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

RULES = 100
CHECKS = 400
APPENDS = 300
QUESTION = "How long should I boil water from the river before drinking it, and should I filter it first?"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _rules() -> None:
    from appliance.answering.rules import Rule, RuleBook

    rules = [Rule(name=f"rule-{n}", action="refuse", words=(f"forbidden{n}", f"two words {n}", f"banned-{n}x"),
                  patterns=(rf"\bmake\s+\w+\s+thing{n}\b",)) for n in range(RULES)]
    book = RuleBook(rules)
    for label, question in (("no rule matches", QUESTION), ("the last rule matches", QUESTION + " two words 99")):
        samples = []
        for _ in range(CHECKS):
            started = time.perf_counter()
            decision = book.check("question", question)
            samples.append(time.perf_counter() - started)
        median, p95 = _median_ms(samples), sorted(samples)[int(len(samples) * 0.95)] * 1000
        print(f"   {RULES} rules, {label}: median {median:.3f} ms, p95 {p95:.3f} ms "
              f"({len(decision.matches)} matched; goal < 5 ms: {'ok' if p95 < 5 else 'MISSED'})")
    catastrophic = RuleBook([Rule(name="slow", action="refuse", patterns=(r"(a|aa)+$",))])
    started = time.perf_counter()
    decision = catastrophic.check("question", "a" * 60 + "b")
    print(f"   a catastrophic pattern: stopped after {(time.perf_counter() - started) * 1000:.0f} ms "
          f"(limit {catastrophic.timeout_ms} ms; {'counted as a match' if decision.refusal else 'NOT STOPPED'})")


def _similar() -> None:
    from appliance.answering.knowledge import KnowledgeHandle
    from appliance.answering.rules import Rule, RuleBook

    with tempfile.TemporaryDirectory() as tmp:
        handle = KnowledgeHandle(Path(tmp) / "kb")

        def embed(texts):
            return handle.open().embedder.embed(texts)

        started = time.perf_counter()
        book = RuleBook([Rule(name=f"s{n}", action="warn", similar=(f"how do I make weapon number {n}",))
                         for n in range(10)], embed=embed)
        book.check("question", QUESTION)
        first = time.perf_counter() - started
        samples = []
        for _ in range(30):
            started = time.perf_counter()
            book.check("question", QUESTION)
            samples.append(time.perf_counter() - started)
        print(f"   10 similar-to rules: first check {first * 1000:.0f} ms (opens the embedder, embeds the phrases), "
              f"then median {_median_ms(samples):.1f} ms (one question embedded)")
        handle.open().close()


def _log() -> None:
    from appliance.records import answer_log
    from appliance.records.history import History

    result = {"answer": "Boil it for one minute [1]. Let it cool covered [2].",
              "model": {"name": "qwen2.5-coder-0.5b", "sha256": "a" * 64, "license": "Apache-2.0"},
              "sources": [{"number": n, "path": f"/library/doc{n}.md", "section": "Water > Boiling", "page": n,
                           "chunk_sha256": "b" * 64, "cited": True} for n in (1, 2, 3)],
              "rules": [], "settings": {"max_tokens": 512, "temperature": 0.2}}
    with tempfile.TemporaryDirectory() as tmp:
        history = History(Path(tmp) / "history.sqlite")
        conversation = None
        for n in range(1000):
            conversation = history.record_exchange(f"Question {n}?", result, conversation)
        started = time.perf_counter()
        report = history.verify_log()
        verified = (f"   history verify over {report.entries} entries: {(time.perf_counter() - started) * 1000:.0f} ms "
                    f"({'ok' if report.ok else 'FAILED'})")
        timed = {}
        for label in ("with the chain", "without the chain (same transaction, chain step skipped)"):
            real = answer_log.append_exchange
            if label.startswith("without"):
                answer_log.append_exchange = lambda *a, **k: 0
            try:
                samples = []
                for n in range(APPENDS):
                    started = time.perf_counter()
                    conversation = history.record_exchange(f"Timed question {n}?", result, conversation)
                    samples.append(time.perf_counter() - started)
            finally:
                answer_log.append_exchange = real
            timed[label] = _median_ms(samples)
        db = history.db
        samples = []
        for n in range(APPENDS):
            db.execute("BEGIN IMMEDIATE")
            started = time.perf_counter()
            answer_log.append(db, "exchange", {"n": n})
            samples.append(time.perf_counter() - started)
            db.execute("ROLLBACK")
        for label, value in timed.items():
            print(f"   record_exchange {label}: median {value:.3f} ms")
        chain = timed["with the chain"] - timed["without the chain (same transaction, chain step skipped)"]
        append = _median_ms(samples)
        print(f"   the chain's own cost per exchange: {chain:.3f} ms (record + entry); one entry appended: "
              f"{append:.3f} ms (goal < 2 ms: {'ok' if max(chain, append) < 2 else 'MISSED'})")
        print(verified)
        history.close()


def run() -> None:
    _rules()
    _log()
    _similar()
