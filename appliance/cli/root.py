"""`appliance`: no arguments opens the terminal UI; subcommands run headless.

Answers go to stdout, diagnostics to stderr. User mistakes end with a one-line message and an exit code:
0 ok, 1 failure, 2 usage, 3 integrity check failed, 4 refused by one of the owner's rules.
"""

from __future__ import annotations

import errno
import os
import sys

import click

import appliance
from appliance.answering.evidence import MARKS_HEADING, UNSUPPORTED_HEADING
from appliance.cli.rules import confirmer, refusal_json, rule_notes
from appliance.cli.support import Context, diag, dumps, hash_progress, pass_ctx
from appliance.config import max_threads
from appliance.errors import EXIT_FAILURE, ApplianceError, RuleRefusal, UsageError
from appliance.sanitize import clean, clean_line
from kb.errors import KBError


def _say(message: str) -> None:
    """One line on stderr, whatever state stderr is in (a closed pipe must not turn an error into a traceback)."""
    try:
        click.echo(clean_line(message), err=True)
    except (OSError, ValueError):
        pass


def _disk_full(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "database or disk is full" in text \
        or "no space left" in text


def _unexpected(exc: BaseException) -> int:
    """Any exception nobody expected: one line, the traceback in a file (as pip does), exit 1."""
    if _disk_full(exc):
        _say("error: the disk is full (no space left on device); free some space and run the command again")
        return EXIT_FAILURE
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:  # `appliance ask ... | head`
        return EXIT_FAILURE
    where = crash_report(exc)
    detail = f"{type(exc).__name__}: {exc}"[:300]
    _say(f"error: unexpected failure ({detail}); " + (f"the full report is in {where}" if where else
                                                       "the report could not be written"))
    return EXIT_FAILURE


def crash_report(exc: BaseException) -> str | None:
    """Write the traceback under the data directory's logs/ (or the temp dir); never raises."""
    import os
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    home = os.environ.get("APPLIANCE_HOME")
    folders = [os.path.join(home, "logs")] if home else []
    try:
        from appliance.paths import Paths

        folders.append(str(Paths.default().logs))
    except Exception:  # noqa: BLE001 - a report must never fail the report
        pass
    folders.append(tempfile.gettempdir())
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in folders:
        try:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, name)
            with open(path, "w", encoding="utf-8", errors="replace") as handle:
                handle.write(f"appliance {appliance.__version__}, {' '.join(sys.argv)}\n\n{text}")
            return path
        except OSError:
            continue
    return None


class ApplianceGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ApplianceError as exc:
            _say(f"error: {exc}")
            ctx.exit(exc.exit_code)
        except KBError as exc:
            _say(f"error: {exc}")
            ctx.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            _say("interrupted")
            ctx.exit(130)


@click.group(cls=ApplianceGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(appliance.__version__, "--version", prog_name="appliance")
@click.option("-q", "--quiet", is_flag=True, help="Print only the answer (no diagnostics, no progress).")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """An offline local LLM that answers from your own library.

    \b
    Run without a command to open the terminal UI.
    Examples:
      appliance ask "How do I purify water?"
      echo "How do I splint a broken arm?" | appliance ask --json
      appliance models list
    """
    ctx.obj = Context(quiet=quiet)
    if ctx.invoked_subcommand is None:
        from tui.app import run_tui

        run_tui(ctx.obj.services)


@cli.command()
@click.argument("question", required=False)
@click.option("--model", "model_name", metavar="NAME",
              help="Model from `appliance models list` (default: the configured one).")
@click.option("--max-tokens", type=click.IntRange(1, 32768), help="Stop after this many generated tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object when done instead of streaming text.")
@click.option("--no-kb", is_flag=True, help="Do not search the knowledge base; the model answers alone.")
@click.option("--no-history", is_flag=True, help="Do not save this exchange in the local history.")
@click.option("--threads", type=click.IntRange(1, 1024),
              help="CPU threads for the model (default: one per physical core).")
@click.option("-c", "--continue", "continue_", is_flag=False, flag_value="last", default=None, metavar="[ID]",
              help="Continue a conversation: the most recent one, or the one with this id "
                   "(see `appliance history list`).")
@click.option("--quote-only", is_flag=True, help="Only the library's own sentences and their sources; the model is "
              "not loaded.")
@click.option("--confirm", is_flag=True, help="Go ahead when one of the owner's rules asks for a confirmation (on a "
              "terminal you are asked instead).")
@pass_ctx
def ask(obj: Context, question: str | None, model_name: str | None, max_tokens: int | None, as_json: bool,
        no_kb: bool, no_history: bool, threads: int | None, continue_: str | None, quote_only: bool,
        confirm: bool) -> None:
    """Ask one question; the answer streams to stdout.

    \b
    The question comes from the argument, or from standard input when there is none.
    Examples:
      appliance ask "How do I purify water?"
      appliance ask --json --max-tokens 100 "What is hypothermia?"
      cat question.txt | appliance ask --model smollm2-135m-instruct
      appliance ask -c "And at high altitude?"        # continues the most recent conversation
      appliance ask --continue 3 "What else?"          # continues conversation 3
      appliance ask --quote-only "How long do I boil water?"

    \b
    An answer starts with the sentences from your library that best answer the question (verbatim, with their
    source), then the model's own words; sentences of the model's that no passage supports are listed after it
    as not found in your library.
    """
    if threads is not None and threads > max_threads():
        raise UsageError(f"--threads {threads} is more than twice the CPUs this process may use ({max_threads()})")
    if continue_ is not None and continue_ != "last" and not continue_.isdigit():
        # `-c "question"`: click took the question as the option's value; it is the question.
        if question is not None:
            raise click.UsageError(f"--continue takes a conversation id (a number), not {continue_!r}")
        question, continue_ = continue_, "last"
    if question is None or question == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError('no question given; try: appliance ask "How do I purify water?"')
        question = sys.stdin.buffer.read().decode("utf-8", "replace")
    services = obj.services
    conversation_id = None
    if continue_ == "last":
        conversation_id = services.history.latest()
        if conversation_id is None:
            raise UsageError("there is no conversation to continue yet; ask without --continue first")
    elif continue_ is not None:
        conversation_id = int(continue_)
        if services.history.conversation(conversation_id) is None:
            raise UsageError(f"no conversation {conversation_id}; see `appliance history list`")
    conversation = services.conversation(conversation_id)
    # On battery: fewer threads and shorter answers, unless the command line says otherwise.
    power = services.power_profile()
    threads, max_tokens = power.limits(threads, max_tokens)
    with refusal_json(question, as_json):  # the owner's rules: a refusal is exit 4 (and JSON with --json)
        update, bar = hash_progress("verifying model", obj.quiet)
        with bar:
            run = conversation.ask(question, model=model_name, max_tokens=max_tokens, use_kb=not no_kb,
                                   progress=update, threads=threads, quote_only=quote_only,
                                   confirm=confirmer(confirm, as_json, bar))
    rule_notes(run, obj.quiet)
    if run.model is not None and run.model.notice:
        diag(f"note: {run.model.notice}", obj.quiet)
    if run.model is not None:
        _consent_note(services, run.model.entry, obj.quiet)
    if run.emergency is not None and not as_json:  # before anything else the answer says, even with --quiet
        _emergency(run.emergency.text)
    if run.notice:
        diag(run.notice, obj.quiet)
    if run.quotes and not as_json:
        click.echo("From your library:")
        for quote in run.quotes:
            click.echo(clean_line(f"  > {quote.line} [{quote.source.number}]"))
        click.echo()
    try:
        for piece in run.tokens():
            if not as_json:
                click.echo(clean(piece), nl=False)
                sys.stdout.flush()
    except KeyboardInterrupt:
        run.cancel()
        raise
    if run.stopped:
        diag(f"note: stopped: {run.stopped}", obj.quiet)
    if run.generation is not None and run.generation.notice:  # the engine fell back to a safer mode
        diag(f"note: {run.generation.notice}", obj.quiet)
    saved_error = ""
    if not no_history and not quote_only:
        try:
            conversation.record(run)
        except Exception as exc:  # noqa: BLE001 - the answer was delivered; a history failure must not undo it
            saved_error = str(exc)
    result = run.as_dict() | {"conversation_id": conversation.id if not no_history else run.conversation_id,
                              "power": power.as_dict()}
    if as_json:
        click.echo(dumps(result))
    else:
        if run.generation is not None:
            click.echo()
        unsupported = [claim for claim in run.claims or [] if not claim.supported]
        if unsupported:
            click.echo(f"\n{UNSUPPORTED_HEADING}")
            for claim in unsupported:
                names = f" (the library does not say {', '.join(claim.missing)})" if claim.missing else ""
                click.echo(clean_line(f"  - {claim.text}{names}"))
        if run.misplaced:
            click.echo(f"\n{MARKS_HEADING}")
            for note in run.misplaced:
                click.echo(clean_line(f"  - {note}"))
        cited = run.cited
        if cited:
            click.echo("\nSources:")
        elif run.sources:
            click.echo("\nPassages given to the model (none of them backs the answer):")
        for source in cited or run.sources:
            said = source.provenance()
            click.echo(clean_line(source.cite() + (f" ({said})" if said else "")))
        timings = result["timings"]
        if timings.get("tokens_per_s"):
            diag(f"[{result['model']['name']}: {timings['tokens']} tokens, {timings['tokens_per_s']} tokens/s]",
                 obj.quiet)
    if saved_error:
        diag(f"warning: not saved to history ({saved_error})", obj.quiet)
    rule_notes(run, obj.quiet, after=True)
    if run.refused is not None:  # an owner's rule withheld the rest of the answer
        raise RuleRefusal(run.refused.said(), rule=run.refused.rule, decision=run.decision)


def _emergency(text: str) -> None:
    """The emergency notice on stdout, where the answer is read: bold and red on a terminal (not with NO_COLOR),
    framed so it stands out in a pipe too."""
    styled = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    rule = "!" * 72
    for line in (rule, *text.splitlines(), rule):
        click.echo(click.style(clean_line(line), fg="red", bold=True) if styled else clean_line(line))
    click.echo()


def _consent_note(services, entry, quiet: bool) -> None:
    """What the TUI asks before a model's first use (an unknown or restrictive license, content warnings), said in
    one line on stderr: a script keeps working, and the owner silences it with `appliance models accept NAME`."""
    needed = services.consents.needed(entry.info, entry.sha256)
    if needed:
        diag(clean_line(f"note: model {entry.name}: {'; '.join(needed)} (`appliance models accept {entry.name}` "
                        "once you have read this)"), quiet)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--reset-engine", is_flag=True, help="Forget the safe modes remembered for this CPU, then check again.")
@pass_ctx
def doctor(obj: Context, as_json: bool, reset_engine: bool) -> None:
    """Self-check: air gap, integrity, engine, hardware fit, power; each ok / warn / fail with a fix.

    \b
    Air gap: the environment guards, the kernel lock (a deliberate socket is refused by the kernel), the one
    online door, and a self-test (load, retrieval, a short generation) in a child process watched from outside
    (strace, else a network namespace; "not proven" when neither exists). Integrity: every model, the embedder,
    the knowledge base, history.sqlite. Engine: a real load and a few tokens, with the CPU features, the
    llama.cpp build and the mode. Hardware: RAM, cores, CPU flags, free disk, which models fit and which sizes
    to look for. Power: mains or battery, and the low-power profile.
    Exit 0 when nothing fails (warnings included), 3 when a model or the embedder fails its integrity check, 1 for
    any other failure.
    Examples:
      appliance doctor
      appliance doctor --json
      appliance doctor --reset-engine
    """
    from appliance.doctor import checkup

    if reset_engine:
        obj.services.engine.forget_modes()
    update, bar = hash_progress("verifying models", obj.quiet)
    with bar:
        checks = checkup.run(obj.services, (lambda name: update) if update else None)
    if as_json:
        click.echo(dumps([check.as_dict() for check in checks]))
    else:
        for check in checks:
            click.echo(clean_line(check.line()))
    error = checkup.exit_error(checks)
    if error is not None:
        raise error


def _register_subcommands() -> None:
    from appliance.cli.history import history
    from appliance.cli.kb import kb
    from appliance.cli.models import models
    from appliance.cli.rules import rules
    from appliance.cli.serve import serve

    cli.add_command(models)
    cli.add_command(rules)
    cli.add_command(kb)
    cli.add_command(history)
    cli.add_command(serve)


_register_subcommands()


def _command_path(args: list[str]) -> str:
    """The subcommand names of a command line ("models download"), options skipped. Neither the top-level group
    nor `models` takes an option with a value, so the first two words are the path; a misread only ever locks."""
    path = " ".join([arg for arg in args if not arg.startswith("-")][:2])
    if path == "kb download" and any(arg == "--from" or arg.startswith("--from=") for arg in args):
        return "kb download --from"  # from a folder: no network at all, so the lock stays on
    return path


def _lock_network(args: list[str]) -> None:
    """The kernel-enforced air gap (appliance/system/netlock.py), decided per command before anything runs."""
    from appliance.config import Config
    from appliance.paths import Paths
    from appliance.system import netlock

    try:
        config_lock = Config.load(Paths.default().config).airgap.lock
    except Exception:  # noqa: BLE001 - a broken config is reported by the command itself; the lock stays on
        config_lock = True
    path = _command_path(args)
    if netlock.deferred(path):  # `appliance serve` binds its listener first, then locks (appliance.serve.server)
        return
    if netlock.lan_command(path, args):  # connects to the replicas on its command line only (serve.replicas)
        return
    netlock.apply_for(path, config_lock)


def main() -> None:
    """The one top-level handler: no traceback ever reaches the user."""
    try:
        _lock_network(sys.argv[1:])
        cli(standalone_mode=True)
    except SystemExit:
        raise
    except ApplianceError as exc:  # raised outside a command's invoke (rare)
        _say(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(130)
    except BaseException as exc:  # noqa: BLE001 - a bug or an environment failure: one line, report in a file
        code = _unexpected(exc)
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os._exit(code) if isinstance(exc, OSError) and exc.errno == errno.EPIPE else sys.exit(code)
