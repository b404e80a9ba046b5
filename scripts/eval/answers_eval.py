"""Answer evaluation: does an answer carry the key fact, cite the right document, and stay free of loops?

The set (scripts/eval/answers/): 14 documents and 85 questions written for this project (70 answerable, each with
the document and the short key fact a correct answer must contain; 15 it cannot answer). The documents are added to
a fresh knowledge base together with a distractor corpus someone else wrote (Debian's python3.11-doc, about 1,700
chunks), then every question is asked through the same core as `appliance ask` (Conversation.ask), per model.

Figures per model, over answerable questions:
  fact: the key fact appears in the answer as shown (the library's quoted sentences count)
  fact (model): ... in the model's own text alone
  cited: the right document is marked cited (it backs the answer: quoted, or supporting a sentence)
  marked (model): the model itself typed [n] for the right document
  retrieved: the right document was among the passages
  loops: answers whose shown text holds a loop (a sentence or word 8-gram three times); stopped: the guard cut them
  tok/s, first token (median), quotes and support-check time (median)
And over off-topic questions: abstained (no passage passed the relevance floor).

And two checks on what the model itself wrote: copied (half or more of its 20-word windows stand word for word in
the passages it was shown) and scaffolding (a "[Passage" or "Passage N (" header reached the answer).

--set unseen takes the second set instead (scripts/eval/unseen/: 58 questions on real manuals the project never
used, among 20,000+ chunks, split into a tuning half and a held-back half that is never tuned on; --half picks one).

  ./scripts/eval_answers [--set own|unseen] [--half tuning|heldback|both] [--models a,b] [--limit N]
                         [--plan PASSAGES,WORDS,best-last|best-first] [--repeat-penalty X] [--max-tokens N]
                         [--json FILE] [--rows FILE] [--summarize ROWS] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
SET = HERE / "answers"
UNSEEN = HERE / "unseen"
sys.path.insert(0, str(UNSEEN))

import corpus  # noqa: E402 - the unseen set's library and questions, beside this file once it is on sys.path

DISTRACTORS = Path("/usr/share/doc/python3.11/html")
WINDOW = 20  # words: a model sentence run this long found verbatim in a passage is copied, not written
# "[Passage", "Passage N (", and a header the scaffolding filter rewrote but kept: "Source [1] (git-gc(1) > ...)"
_SCAFFOLD = re.compile(r"\[\s*passages?\b|\bpassages?\s+\d+\s*\(|\bsource\s+\[\d+\]\s*\(", re.IGNORECASE)


def has_loop(text: str) -> bool:
    words = re.findall(r"\w+", text.lower())
    grams = Counter(tuple(words[i:i + 8]) for i in range(len(words) - 7))
    if grams and grams.most_common(1)[0][1] >= 3:
        return True
    sentences = Counter(" ".join(re.findall(r"\w+", s.lower())) for s in re.split(r"[.!?\n]+", text))
    return any(count >= 3 for sentence, count in sentences.items() if len(sentence) > 10)


def contains(text: str, facts: list[str]) -> bool:
    folded = " ".join(text.lower().split())
    return any(" ".join(fact.lower().split()) in folded for fact in facts)


def mostly_copied(answer: str, passages: list[str]) -> bool:
    """Half or more of the answer's 20-word windows stand word for word in the passages (False when shorter)."""
    words = re.findall(r"\w+", answer.lower())
    if len(words) < WINDOW:
        return False
    source = " " + " ".join(re.findall(r"\w+", " ".join(passages).lower())) + " "
    windows = [" " + " ".join(words[i:i + WINDOW]) + " " for i in range(len(words) - WINDOW + 1)]
    return sum(w in source for w in windows) * 2 >= len(windows)


def has_scaffolding(answer: str) -> bool:
    return bool(_SCAFFOLD.search(answer))


def is_right(path: str, docs: list[str]) -> bool:
    """A source is the right document when its file name is one the question names (the project's own set) or
    its path ends with one (the unseen set names `bash/bashref.html`, `git-doc/git-gc.html`)."""
    posix = Path(path).as_posix()
    return any(Path(posix).name == d or posix.endswith("/" + d) for d in docs)


def load_questions(args) -> list[dict]:
    if args.set == "own":
        questions = json.loads((SET / "questions.json").read_text())
        for q in questions:
            q["docs"] = [q["doc"]] if q["doc"] else []
        return questions
    return corpus.questions(args.half)


def build_library(home: Path, verbose: bool) -> None:
    from appliance.services import Services

    services = Services.create()
    paths = [SET / "docs"]
    if DISTRACTORS.is_dir():
        paths += [DISTRACTORS / name for name in ("tutorial", "howto", "faq", "using", "installing")
                  if (DISTRACTORS / name).is_dir()]
    else:
        print(f"   (no distractor corpus at {DISTRACTORS}: only the set's own documents)")
    started = time.perf_counter()
    report = services.kb.add(paths)
    print(f"   library: {services.kb.stats()['chunks']} chunks ({report.added} files) in "
          f"{time.perf_counter() - started:.0f} s")


def evaluate(model: str, questions: list[dict], args) -> dict:
    from appliance.answering.conversation import PromptPlan
    from appliance.services import Services

    services = Services.create()
    if args.repeat_penalty is not None:
        services.config.model.repeat_penalty = args.repeat_penalty
    rows = []
    for question in questions:
        conversation = services.conversation()
        if args.plan:
            passages, words, order = args.plan.split(",")
            conversation.plan = PromptPlan(int(passages), int(words) if words != "none" else None,
                                           order == "best-last")
        asked = time.perf_counter()
        run = conversation.ask(question["q"], model=None if model == "quote-only" else model,
                               max_tokens=args.max_tokens, quote_only=args.quote_only)
        first_seen = None
        for _ in run.tokens():  # question to first token shown: search, quotes and prompt included
            first_seen = first_seen or time.perf_counter() - asked
        data = run.as_dict()
        raw = run.generation.text if run.generation is not None else ""
        right = [s for s in data["sources"] if is_right(s["path"], question["docs"])]
        quotes = " ".join(q["text"] for q in data["quotes"])
        passages = [p.text for p in run.passages]
        row = {
            "id": question["id"], "kind": question["kind"], "style": question.get("style"),
            "half": question.get("half"),
            "fact_passages": contains(" ".join(passages), question["facts"]) if question["facts"] else None,
            "copied": mostly_copied(data["answer"], passages) if run.generation is not None else False,
            "scaffold": has_scaffolding(data["answer"]),
            "fact": contains(quotes + " " + data["answer"], question["facts"]) if question["facts"] else None,
            "fact_model": contains(data["answer"], question["facts"]) if question["facts"] else None,
            "cited": any(s["cited"] for s in right), "marked": any(s["marked"] for s in right),
            "retrieved": bool(right), "abstained": not data["sources"],
            "loop_shown": has_loop(data["answer"]), "loop_raw": has_loop(raw), "stopped": data["stopped"],
            "tokens_per_s": data["timings"].get("tokens_per_s"), "first_token_s": data["timings"].get("first_token_s"),
            "asked_to_first_s": first_seen,
            "quotes_s": data["timings"].get("quotes_s"), "claims_s": data["timings"].get("claims_s"),
            "answer": data["answer"], "quotes": [q["text"] for q in data["quotes"]],
            "unsupported": sum(1 for c in data["claims"] or [] if not c["supported"]),
        }
        rows.append(row)
        if args.rows:  # one line per answer as it is done: a run cut short keeps what it measured
            with open(args.rows, "a", encoding="utf-8") as out:
                out.write(json.dumps({"model": model} | row, default=str) + "\n")
        if args.verbose:
            mark = ("ok " if row["fact"] else "-- " if row["fact"] is not None
                    else "ab " if row["abstained"] else "NA ")
            print(f"     {mark}{question['id']:<14} {row['answer'][:90]!r}", flush=True)
    services.engine.unload()
    return summarize(model, rows)


def summarize(model: str, rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["kind"] == "answerable"]
    offtopic = [r for r in rows if r["kind"] == "offtopic"]

    def rate(key, pool=answerable):
        return sum(1 for r in pool if r[key]), len(pool)

    def med(key):
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(values) if values else None

    def p90(key):
        values = sorted(r[key] for r in rows if r.get(key) is not None)
        return values[min(len(values) - 1, round(0.9 * (len(values) - 1)))] if values else None

    return {"model": model, "fact": rate("fact"), "fact_model": rate("fact_model"), "cited": rate("cited"),
            "marked": rate("marked"), "retrieved": rate("retrieved"), "loops_shown": rate("loop_shown", rows),
            "loops_raw": rate("loop_raw", rows), "stopped": rate("stopped", rows),
            "abstained": rate("abstained", offtopic), "tokens_per_s": med("tokens_per_s"),
            "fact_passages": rate("fact_passages"), "copied": rate("copied", rows), "scaffold": rate("scaffold", rows),
            "first_token_s": med("first_token_s"), "first_token_p90_s": p90("first_token_s"),
            "asked_to_first_s": med("asked_to_first_s"), "asked_to_first_p90_s": p90("asked_to_first_s"),
            "quotes_ms": (med("quotes_s") or 0) * 1000,
            "claims_ms": (med("claims_s") or 0) * 1000, "rows": rows}


def print_summary(result: dict) -> None:
    def pct(pair):
        done, total = pair
        return f"{done}/{total} ({100 * done / total:.0f}%)" if total else "-"

    print(f"   [{result['model']}]")
    print(f"     key fact in the answer (quotes count): {pct(result['fact'])};  in the model's own text: "
          f"{pct(result['fact_model'])}")
    print(f"     right document cited: {pct(result['cited'])};  marked [n] by the model: {pct(result['marked'])};  "
          f"retrieved: {pct(result['retrieved'])}")
    print(f"     loops shown: {pct(result['loops_shown'])} (in the raw model text: {pct(result['loops_raw'])}; "
          f"stopped by the guard: {pct(result['stopped'])})")
    print(f"     key fact in the passages shown to the model: {pct(result['fact_passages'])}")
    print(f"     model text mostly copied from the passages: {pct(result['copied'])};  passage scaffolding shown: "
          f"{pct(result['scaffold'])}")
    print(f"     off-topic questions abstained: {pct(result['abstained'])}")
    tps = result["tokens_per_s"]
    ftt = result["first_token_s"]
    print(f"     {tps or 0:.1f} tokens/s, first token {ftt or 0:.2f} s (p90 {result['first_token_p90_s'] or 0:.2f} s), "
          f"quotes {result['quotes_ms']:.0f} ms, support check {result['claims_ms']:.0f} ms (medians)")
    if result.get("asked_to_first_s") is not None:
        print(f"     question to first token shown: {result['asked_to_first_s']:.2f} s "
              f"(p90 {result['asked_to_first_p90_s']:.2f} s: retrieval, quotes and the prompt included)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    corpus.add_arguments(parser, own="the project's 85 questions")
    parser.add_argument("--models", help="comma-separated names (default: every installed model pack)")
    parser.add_argument("--limit", type=int, help="only the first N questions of each kind")
    parser.add_argument("--plan", help="PASSAGES,WORDS|none,best-last|best-first (default: sized to the model)")
    parser.add_argument("--repeat-penalty", type=float)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--quote-only", action="store_true", help="the library's sentences alone (no model)")
    parser.add_argument("--home", help="data dir to build (or reuse) the library in (default: a cached one)")
    parser.add_argument("--json", help="write every answer and figure to this file")
    parser.add_argument("--rows", help="append each answer's figures to this JSON-lines file as it is done")
    parser.add_argument("--summarize", metavar="ROWS",
                        help="print the figures of a --rows file (e.g. a run cut short) and exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.summarize:
        lines = [json.loads(line) for line in Path(args.summarize).read_text().splitlines() if line.strip()]
        for line in lines:  # the detector as it is now, on answers measured before it changed
            line["scaffold"] = has_scaffolding(line["answer"])
        for model in dict.fromkeys(line["model"] for line in lines):
            print_summary(summarize(model, [line for line in lines if line["model"] == model]))
        return 0
    if args.half != "both" and args.set != "unseen":
        parser.error("--half needs --set unseen")
    default_home = "eval-answers" if args.set == "own" else "eval-unseen"
    home = Path(args.home or os.path.expanduser(f"~/.cache/appliance/{default_home}"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["APPLIANCE_HOME"] = str(home)
    # The library is the eval's own documents: the shipped field guide (which covers the same ground) stays out.
    os.environ["APPLIANCE_KB_FIELD_GUIDE"] = "off"
    sys.path.insert(0, str(HERE.parent.parent))
    import appliance  # noqa: F401 - its environment guards, once APPLIANCE_HOME is set
    from appliance.models import packs
    from appliance.services import Services

    questions = load_questions(args)
    if args.limit:
        questions = ([q for q in questions if q["kind"] == "answerable"][: args.limit]
                     + [q for q in questions if q["kind"] == "offtopic"][: max(1, args.limit // 4)])
    if args.set == "unseen":
        if not corpus.prepare(home, questions, ingest=not args.no_ingest):
            return 1
        print(f"   questions: {args.half} half{'s' if args.half == 'both' else ''}, "
              f"{sum(q['kind'] == 'answerable' for q in questions)} answerable, "
              f"{sum(q['kind'] == 'offtopic' for q in questions)} the library cannot answer")
    else:
        build_library(home, args.verbose)
    library = Services.create().models
    for pack in packs.SPLIT_PACKS.values():
        if pack.installed:
            library.register_split_pack(pack)
    names = args.models.split(",") if args.models else [packs.SMOLLM2.name] + [
        p.name for p in packs.SPLIT_PACKS.values() if p.installed and "gemma" not in p.name]
    results = []
    if args.quote_only:
        names = ["quote-only"]
    for name in names:
        started = time.perf_counter()
        result = evaluate(name, questions, args)
        print_summary(result)
        print(f"     ({time.perf_counter() - started:.0f} s)", flush=True)
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
