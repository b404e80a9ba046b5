"""`appliance serve`: shelter mode, one laptop answering every phone in the room; `serve keys ...`: device keys.

Exit codes: 0 ok (stopped with Ctrl-C), 1 failure, 2 usage (a public address, a port in use).
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import click

from appliance.cli.support import Context, dumps, pass_ctx
from appliance.sanitize import clean_line


@click.group(invoke_without_command=True)
@click.option("--lan", is_flag=True, help="Listen on this machine's private network address (Wi-Fi, hotspot).")
@click.option("--bind", "bind_address", metavar="ADDR", help="Listen on this address (loopback or private only).")
@click.option("--port", type=click.IntRange(1, 65535), default=8737, show_default=True)
@click.option("--tls", is_flag=True, help="HTTPS with a certificate made once on this machine (fingerprint shown).")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), help="Your own certificate (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="Its private key (PEM).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Another name clients reach this server by (e.g. a router in front of several laptops).")
@click.option("--queue", "queue_limit", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Questions that may wait; past this, clients are told to retry (503).")
@click.option("--no-qr", is_flag=True, help="Print the join link without a QR code.")
@click.pass_context
def serve(ctx: click.Context, lan: bool, bind_address: str | None, port: int, tls: bool, tls_cert: Path | None,
          tls_key: Path | None, allow_hosts: tuple[str, ...], queue_limit: int, no_qr: bool) -> None:
    """Answer phones and OpenAI clients on this machine or its local network (shelter mode).

    Loopback only unless --lan or --bind. Phones join by the QR code's one-time link, or with a key you issue.
    The network lock stays on: the server accepts connections, it can open none.

    \b
    Examples:
      appliance serve                      # http://127.0.0.1:8737 on this laptop
      appliance serve --lan                # every phone on this Wi-Fi / hotspot
      appliance serve --lan --tls          # HTTPS, a certificate made here (check its fingerprint)
      appliance serve keys add kitchen-tablet
    """
    if ctx.invoked_subcommand is not None:
        return
    from appliance.config import Config
    from appliance.paths import Paths
    from appliance.serve.server import Options
    from appliance.serve.server import serve as run
    from appliance.system import netlock

    obj: Context = ctx.obj
    paths = Paths.default().ensure()

    def lock() -> str:
        try:
            config_lock = Config.load(paths.config).airgap.lock
        except Exception:  # noqa: BLE001 - a broken config is reported by the server's own load; the lock stays on
            config_lock = True
        state = netlock.apply_for("serve", config_lock, when="after binding the listener")
        if state.locked:
            return "network lock in force: it can accept connections and open none"
        return f"network lock NOT in force: {state.reason}"

    def say(line: str) -> None:
        if not obj.quiet or line.startswith("  "):
            click.echo(clean_line(line) if "\n" not in line else line)
            sys.stdout.flush()  # a pipe (a service manager, a test) sees each line as it is said

    run(paths, Options(lan=lan, bind=bind_address, port=port, tls=tls, tls_cert=tls_cert, tls_key=tls_key,
                       allow_hosts=allow_hosts, queue_limit=queue_limit, qr=not no_qr), say, lock)


@serve.group()
def keys() -> None:
    """Device keys: a key lets one device (a phone, a tablet, an OpenAI client) ask this appliance.

    \b
    Examples:
      appliance serve keys add kitchen-tablet
      appliance serve keys list
      appliance serve keys revoke kitchen-tablet
    """


def _keys(obj: Context):
    from appliance.serve.devices import DeviceKeys

    return DeviceKeys(obj.services.paths.home / "serve" / "devices.json")


@keys.command("add")
@click.argument("name")
@pass_ctx
def keys_add(obj: Context, name: str) -> None:
    """Issue a key for device NAME (shown once; only its hash is kept). Give it as `Authorization: Bearer KEY`
    (OpenAI clients: api_key=KEY) or type it on the page."""
    key = _keys(obj).add(name)
    click.echo(key)
    if not obj.quiet:
        click.echo(f"key for {name}: shown once, kept only as its hash; revoke it with "
                   f"`appliance serve keys revoke {name}`", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def keys_list(obj: Context, as_json: bool) -> None:
    """The devices that have (or had) a key, and how they got it."""
    devices = _keys(obj).list()
    if as_json:
        click.echo(dumps([{k: v for k, v in d.as_dict().items() if k != "key_sha256"} for d in devices]))
        return
    if not devices:
        click.echo("no device keys yet: `appliance serve keys add NAME`, or a phone joins by the QR code")
        return
    for device in devices:
        made = datetime.datetime.fromtimestamp(device.created).strftime("%Y-%m-%d %H:%M")
        state = "revoked " + datetime.datetime.fromtimestamp(device.revoked).strftime("%Y-%m-%d %H:%M") \
            if device.revoked else "in force"
        how = "joined by link" if device.via == "join" else "issued"
        click.echo(f"{clean_line(device.name):24} {how:15} {made}  {state}")


@keys.command("revoke")
@click.argument("name")
@pass_ctx
def keys_revoke(obj: Context, name: str) -> None:
    """Revoke device NAME's key (a running server refuses it from its next request)."""
    _keys(obj).revoke(name)
    click.echo(f"revoked the key of {name}")
