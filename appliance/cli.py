"""`appliance`: no arguments opens the terminal UI; subcommands run headless.

Answers go to stdout, diagnostics to stderr. User mistakes end with a one-line message and an exit code:
0 ok, 1 failure, 2 usage, 3 integrity check failed.
"""

from __future__ import annotations

import sys

import click

import appliance
from appliance.cli_support import Context, diag, dumps, hash_progress, pass_ctx
from appliance.errors import EXIT_FAILURE, ApplianceError, IntegrityError
from kb.errors import KBError


class ApplianceGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ApplianceError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KBError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
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
@click.option("--model", "model_name", metavar="NAME", help="Model from `appliance models list` (default: the configured one).")
@click.option("--max-tokens", type=click.IntRange(1, 32768), help="Stop after this many generated tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object when done instead of streaming text.")
@click.option("--no-kb", is_flag=True, help="Do not search the knowledge base; the model answers alone.")
@click.option("--no-history", is_flag=True, help="Do not save this exchange in the local history.")
@click.option("--threads", type=click.IntRange(1, 1024), help="CPU threads for the model (default: one per physical core).")
@pass_ctx
def ask(obj: Context, question: str | None, model_name: str | None, max_tokens: int | None, as_json: bool,
        no_kb: bool, no_history: bool, threads: int | None) -> None:
    """Ask one question; the answer streams to stdout.

    \b
    The question comes from the argument, or from standard input when there is none.
    Examples:
      appliance ask "How do I purify water?"
      appliance ask --json --max-tokens 100 "What is hypothermia?"
      cat question.txt | appliance ask --model smollm2-135m-instruct
    """
    if question is None or question == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError('no question given; try: appliance ask "How do I purify water?"')
        question = sys.stdin.read()
    if not question.strip():
        raise click.UsageError('the question is empty; try: appliance ask "How do I purify water?"')
    services = obj.services
    update, bar = hash_progress("verifying model", obj.quiet)
    with bar:
        run = services.answerer.ask(question, model=model_name, max_tokens=max_tokens, use_kb=not no_kb, progress=update,
                                    threads=threads)
    if run.model.notice:
        diag(f"note: {run.model.notice}", obj.quiet)
    if run.notice:
        diag(run.notice, obj.quiet)
    try:
        for piece in run.tokens():
            if not as_json:
                click.echo(piece, nl=False)
                sys.stdout.flush()
    except KeyboardInterrupt:
        run.cancel()
        raise
    result = run.as_dict()
    if run.generation.notice:  # the engine fell back to a safer mode while answering
        diag(f"note: {run.generation.notice}", obj.quiet)
    if as_json:
        click.echo(dumps(result))
    else:
        click.echo()
        cited = run.cited
        if cited:
            click.echo("\nSources:")
        elif run.sources:
            click.echo("\nPassages given to the model (the answer cites none of them):")
        for source in cited or run.sources:
            click.echo(source.cite())
        timings = result["timings"]
        if timings["tokens_per_s"]:
            diag(f"[{result['model']['name']}: {timings['tokens']} tokens, {timings['tokens_per_s']} tokens/s]", obj.quiet)
    if not no_history:
        try:
            services.history.record_exchange(question.strip(), result)
        except Exception as exc:  # the answer was delivered; a history failure must not turn it into an error
            diag(f"warning: not saved to history ({exc})", obj.quiet)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--reset-engine", is_flag=True, help="Forget the safe modes remembered for this CPU, then check again.")
@pass_ctx
def doctor(obj: Context, as_json: bool, reset_engine: bool) -> None:
    """Self-check: offline guards, every reachable model verifies, the engine answers, no network used.

    \b
    The engine check loads the default model in the engine process and generates a few tokens: it reports the
    CPU features in use, the llama.cpp build, the mode (normal or safe) and tokens/s.
    Exit 0 when all is well, 3 when a model fails its integrity check, 1 for any other failure.
    Examples:
      appliance doctor
      appliance doctor --reset-engine
    """
    from appliance import airgap

    if reset_engine:
        obj.services.engine.forget_modes()
    update, bar = hash_progress("verifying models", obj.quiet)
    with bar:
        checks = airgap.doctor(obj.services.library, (lambda name: update) if update else None,
                               engine=obj.services.engine)
    if as_json:
        click.echo(dumps([check.as_dict() for check in checks]))
    else:
        for check in checks:
            mark = "ok  " if check.ok else ("skip" if check.ok is None else "FAIL")
            click.echo(f"{mark}  {check.name}: {check.detail}")
    failed = [check for check in checks if check.ok is False]
    if failed:
        code = max(check.exit_code or EXIT_FAILURE for check in failed)
        raise ApplianceError(f"{len(failed)} check(s) failed: {', '.join(check.name for check in failed)}") \
            if code == EXIT_FAILURE else IntegrityError(f"{len(failed)} check(s) failed: "
                                                         f"{', '.join(check.name for check in failed)}")


def _register_subcommands() -> None:
    from appliance.cli_history import history
    from appliance.cli_kb import kb
    from appliance.cli_models import models

    cli.add_command(models)
    cli.add_command(kb)
    cli.add_command(history)


_register_subcommands()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ApplianceError as exc:  # raised outside a command's invoke (rare)
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno == 32:  # broken pipe: `appliance ask ... | head`
            sys.exit(EXIT_FAILURE)
        raise
