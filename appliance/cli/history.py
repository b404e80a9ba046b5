"""`appliance history ...`: the local record of questions and answers (CLI and TUI share it)."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from appliance.cli.support import Context, diag, dumps, pass_ctx
from appliance.errors import ApplianceError, IntegrityError
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
      appliance history verify
      appliance history certify 12 --key clinic.pem
      appliance history check answer-12.cert.json --pubkey clinic.pem.pub
    """


@history.command("list")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many, newest first.")
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
        who = f"  [{clean_line(row['device'])}]" if row.get("device") else ""  # asked from a served device
        click.echo(f"{row['id']:5}  {when}  {row['messages']:3} msgs{who}  {clean_line(row['title'])}")


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


@history.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def history_verify(obj: Context, as_json: bool) -> None:
    """Check the answer log: every exchange is still as it was recorded.

    \b
    Walks the hash chain (each entry holds the sha256 of the one before) and checks every kept question and
    answer against it; names the first entry that was changed, removed or reordered (exit 3). A deletion made
    with the appliance is itself an entry, so deleted conversations do not break the chain. Note the head it
    prints: the newest entries removed together with their messages can only be seen against a head noted earlier.
    Examples:
      appliance history verify
      appliance history verify --json
    """
    report = obj.services.history.verify_log()
    if as_json:
        click.echo(dumps(report.as_dict()))
    elif report.ok:
        click.echo(f"ok: {report.entries} entries ({report.exchanges} exchanges, {report.deletions} deletions); "
                   f"head {report.head}")
    if not report.ok:
        more = f" ({len(report.problems) - 1} more problem(s))" if len(report.problems) > 1 else ""
        raise IntegrityError(f"the answer log does not verify: {report.first}{more}")


@history.command("certify")
@click.argument("answer_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--key", "key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Ed25519 private key (PEM), e.g. made with `appliance models keygen`.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the certificate (default: answer-ID.cert.json here).")
@pass_ctx
def history_certify(obj: Context, answer_id: int, key: Path, output: Path | None) -> None:
    """Write a signed certificate for one answer: this model file, these passages, this time.

    \b
    ANSWER_ID is the answer's message id (`appliance history show N --format json` lists them). The answer log
    must verify first.
    Examples:
      appliance history certify 12 --key ~/keys/clinic.pem
      appliance history check answer-12.cert.json --pubkey ~/keys/clinic.pem.pub
    """
    from appliance.records.certificates import certify

    target = output or Path(f"answer-{answer_id}.cert.json")
    document = certify(obj.services.history, answer_id, key, target)
    diag(f"certified answer {answer_id} (log entry {document['payload']['log']['entry']}) with key "
         f"{document['key_id']}: {target}", obj.quiet)


@history.command("check")
@click.argument("certificate", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pubkey", type=click.Path(dir_okay=False, path_type=Path),
              help="The signer's public key (PEM): the certificate must be signed by it.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@pass_ctx
def history_check(obj: Context, certificate: Path, pubkey: Path | None, as_json: bool) -> None:
    """Verify an answer certificate offline, and whether this machine's model file and library still match it.

    \b
    Exit 0 when every check that can be made here passes (a model or library not on this machine is said, not
    failed), 3 when the signature does not match or a file on this machine differs.
    Example:
      appliance history check answer-12.cert.json --pubkey clinic.pem.pub
    """
    from appliance.records.certificates import check

    checks = check(certificate, obj.services, pubkey)
    if as_json:
        click.echo(dumps([c.as_dict() for c in checks]))
    else:
        for item in checks:
            click.echo(clean_line(item.line()))
    failed = [c for c in checks if c.ok is False]
    if failed:
        raise IntegrityError(f"certificate check failed: {failed[0].name}: {failed[0].detail}")
