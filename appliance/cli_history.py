"""`appliance history ...`: the local record of questions and answers (CLI and TUI share it)."""

from __future__ import annotations

import datetime

import click

from appliance.cli_support import Context, dumps, pass_ctx
from appliance.errors import ApplianceError
from appliance.sanitize import clean, clean_line


def _conversation_or_fail(obj: Context, conversation_id: int) -> dict:
    conversation = obj.services.history.conversation(conversation_id)
    if conversation is None:
        raise ApplianceError(f"no conversation {conversation_id}; see `appliance history list`")
    return conversation


@click.group()
def history() -> None:
    """Past questions and answers, kept on this machine only.

    \b
    Examples:
      appliance history list
      appliance history show 3
      appliance history show 3 > water.md
    """


@history.command("list")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def history_list(obj: Context, limit: int, as_json: bool) -> None:
    """List conversations, newest first.

    \b
    Example:
      appliance history list -n 5 --json
    """
    rows = obj.services.history.conversations(limit)
    if as_json:
        click.echo(dumps(rows))
        return
    for row in rows:
        when = datetime.datetime.fromtimestamp(row["updated"]).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{row['id']:5}  {when}  {row['messages']:3} msgs  {clean_line(row['title'])}")


@history.command("show")
@click.argument("conversation_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True,
              help="Markdown (readable, and what you export) or JSON (messages with sources and timings).")
@pass_ctx
def history_show(obj: Context, conversation_id: int, fmt: str) -> None:
    """Show one conversation, or export it by redirecting stdout.

    \b
    Examples:
      appliance history show 3
      appliance history show 3 --format json > water.json
    """
    conversation = _conversation_or_fail(obj, conversation_id)
    if fmt == "json":
        click.echo(dumps(conversation | {"messages": obj.services.history.messages(conversation_id)}))
    else:
        click.echo(clean(obj.services.history.export_markdown(conversation_id)))
