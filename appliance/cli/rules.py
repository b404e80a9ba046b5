"""`appliance rules ...`: the owner's rules (rules.toml), and the pieces `ask` uses to apply them."""

from __future__ import annotations

import contextlib
import sys

import click

from appliance.answering.rules import (
    ACTIONS,
    DEFAULT_THRESHOLD,
    PLACES,
    Decision,
    Rule,
    RuleBook,
    add_rule,
    remove_rule,
)
from appliance.cli.support import Context, diag, dumps, pass_ctx
from appliance.errors import ConfirmationNeeded, RuleRefusal, UsageError
from appliance.sanitize import clean_line


@click.group()
def rules() -> None:
    """The owner's rules, checked before the model sees a question.

    \b
    The appliance ships with none. Each rule matches words or phrases (whole words, any case), regular
    expressions (time-limited) or questions similar in meaning to a phrase, and then refuses (exit 4, with
    your message), warns, or asks for a confirmation. They live in rules.toml in the data directory; edit it by
    hand or with these commands.
    Examples:
      appliance rules add no-weapons --word "pipe bomb" --word explosive --message "Not on this appliance."
      appliance rules add dosage --pattern '\\b\\d+\\s*mg\\b' --action warn --place answer
      appliance rules add self-harm --similar "how can I hurt myself" --threshold 0.75 --action confirm
      appliance rules test "how do I make a pipe bomb"
      appliance rules list
      appliance rules remove dosage
    """


def _book(obj: Context) -> RuleBook:
    return obj.services.rules()  # the file as it is now (read again when it changed), errors said


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def rules_list(obj: Context, as_json: bool) -> None:
    """List the rules, in the order they are checked.

    \b
    Examples:
      appliance rules list
      appliance rules list --json
    """
    book = _book(obj)
    if as_json:
        click.echo(dumps({"path": str(obj.services.paths.rules), "rules": [r.as_dict() for r in book.rules]}))
        return
    if not book.rules:
        diag(f"no rules ({obj.services.paths.rules} does not hold any); add one with `appliance rules add`",
             obj.quiet)
        return
    for rule in book.rules:
        what = [f"words {', '.join(repr(w) for w in rule.words)}" if rule.words else "",
                f"patterns {', '.join(repr(p) for p in rule.patterns)}" if rule.patterns else "",
                f"similar to {', '.join(repr(s) for s in rule.similar)} (>= {rule.threshold:.2f})"
                if rule.similar else ""]
        click.echo(clean_line(f"{rule.name}: {rule.action} on {', '.join(rule.places)}: "
                              f"{'; '.join(w for w in what if w)}" + (f" - {rule.message!r}" if rule.message else "")))


@rules.command("add")
@click.argument("name")
@click.option("--word", "words", multiple=True, metavar="TEXT", help="A word or phrase (whole words, any case).")
@click.option("--pattern", "patterns", multiple=True, metavar="REGEX",
              help="A regular expression (case-insensitive, time-limited).")
@click.option("--similar", multiple=True, metavar="TEXT", help="Match texts close in meaning to this phrase.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=DEFAULT_THRESHOLD,
              show_default=True, help="Cosine needed for --similar.")
@click.option("--action", type=click.Choice(ACTIONS), default="refuse", show_default=True,
              help="refuse: stop with your message (exit 4); warn: go on and say so; confirm: ask first.")
@click.option("--message", default="", help="What the user reads when the rule matches.")
@click.option("--place", "places", multiple=True, type=click.Choice(PLACES),
              help="Where it applies: question (default), passages (from the library), answer.")
@pass_ctx
def rules_add(obj: Context, name: str, words: tuple[str, ...], patterns: tuple[str, ...], similar: tuple[str, ...],
              threshold: float, action: str, message: str, places: tuple[str, ...]) -> None:
    """Add a rule (appended to rules.toml; your comments in the file are kept).

    \b
    Examples:
      appliance rules add no-weapons --word "pipe bomb" --message "Not on this appliance."
      appliance rules add ids --pattern '\\b\\d{3}-\\d{2}-\\d{4}\\b' --place passages --place answer
    """
    rule = Rule(name=name, action=action, message=message, words=words, patterns=patterns, similar=similar,
                threshold=threshold, places=tuple(dict.fromkeys(places)) or ("question",))
    add_rule(obj.services.paths.rules, rule)
    diag(clean_line(f"added rule {name!r} ({action} on {', '.join(rule.places)}) to {obj.services.paths.rules}"),
         obj.quiet)


@rules.command("remove")
@click.argument("name")
@pass_ctx
def rules_remove(obj: Context, name: str) -> None:
    """Remove the rule with this name.

    \b
    Example:
      appliance rules remove no-weapons
    """
    remove_rule(obj.services.paths.rules, name)
    diag(clean_line(f"removed rule {name!r}"), obj.quiet)


@rules.command("test")
@click.argument("text")
@click.option("--place", type=click.Choice(PLACES), default="question", show_default=True,
              help="Check TEXT as a question, a passage or an answer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def rules_test(obj: Context, text: str, place: str, as_json: bool) -> None:
    """Show which rules match TEXT and why, without asking the model.

    \b
    Examples:
      appliance rules test "how do I make a pipe bomb"
      appliance rules test --place answer "Take 400 mg every hour."
    """
    book = _book(obj)
    text = text.strip()
    if not text:
        raise UsageError('give a text to test, e.g. appliance rules test "how do I make a pipe bomb"')
    decision = book.check(place, text)
    scores = book.scores(text) if any(place in r.places and r.similar for r in book.rules) else []
    outcome = ("refused" if decision.refusal else "needs a confirmation" if decision.confirmations
               else "allowed, with a warning" if decision.warnings else "allowed")
    if as_json:
        click.echo(dumps({"text": text, "place": place, "outcome": outcome, "matches": decision.as_list(),
                          "similarity": [{"rule": r, "phrase": p, "cosine": round(c, 4)} for r, p, c in scores],
                          "rules": len(book)}))
        return
    for match in decision.matches:
        click.echo(clean_line(f"{match.rule}: {match.action} - {match.why}"
                              + (f" - {match.message!r}" if match.message else "")))
    for rule, phrase, cosine in scores:
        if not any(m.rule == rule for m in decision.matches):
            click.echo(clean_line(f"{rule}: no match - similar to {phrase!r}: cosine {cosine:.2f}"))
    click.echo(f"{outcome} ({len(decision.matches)} of {len(book)} rules matched)")


# -- used by `appliance ask` -----------------------------------------------------------------------------------
def confirmer(confirm: bool, as_json: bool, bar=None):
    """The CLI's answer when a "confirm" rule matches (Conversation.ask calls it once): --confirm says yes; on a
    terminal the owner is asked (the progress bar paused meanwhile); else ConfirmationNeeded, naming the flag."""

    def ask_owner(exc: ConfirmationNeeded) -> bool:
        if confirm:
            return True
        if not as_json and sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty():
            pause = getattr(bar, "stop", None)
            if pause is not None:
                pause()
            try:
                return click.confirm(clean_line(f"{exc}. Ask anyway?"), default=False, err=True)
            finally:
                if pause is not None:
                    bar.start()
        raise ConfirmationNeeded(f"{exc}; add --confirm to ask anyway", rule=exc.rule, decision=exc.decision)

    return ask_owner


@contextlib.contextmanager
def refusal_json(question: str | None, as_json: bool):
    """With --json, a refusal is still one JSON object on stdout (with the rule's name) before exit 4."""
    try:
        yield
    except RuleRefusal as exc:
        if as_json:
            decision = exc.decision or Decision()
            match = decision.refusal or (decision.confirmations[0] if decision.confirmations else None)
            click.echo(dumps({"question": question, "answer": None, "refused": match.as_dict() if match else
                              {"rule": exc.rule, "message": str(exc)}, "rule": exc.rule,
                              "needs_confirmation": isinstance(exc, ConfirmationNeeded),
                              "rules": decision.as_list()}))
        raise


def rule_notes(run, quiet: bool, after: bool = False) -> None:
    """The rules that warned, one line each on stderr: on the question and passages (before the answer), or on
    the answer (`after`)."""
    for match in run.decision.warnings:
        if (match.place == "answer") == after:
            diag(clean_line(f"note: {match.said()}" + (f" [{match.where}]" if match.where else "")), quiet)
