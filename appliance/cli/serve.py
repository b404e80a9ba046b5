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

    return DeviceKeys(obj.services.paths.devices)


@keys.command("add")
@click.argument("name")
@pass_ctx
def keys_add(obj: Context, name: str) -> None:
    """Issue a key for device NAME (shown once; only its hash is kept). Give it as `Authorization: Bearer KEY`
    (OpenAI clients: api_key=KEY) or type it on the page.

    \b
    Example:
      appliance serve keys add kitchen-tablet
    """
    key = _keys(obj).add(name)
    click.echo(key)
    if not obj.quiet:
        click.echo(f"key for {name}: shown once, kept only as its hash; revoke it with "
                   f"`appliance serve keys revoke {name}`", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def keys_list(obj: Context, as_json: bool) -> None:
    """The devices that have (or had) a key, and how they got it.

    \b
    Example:
      appliance serve keys list --json
    """
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


REPLICAS = click.option("--replica", "replicas", multiple=True, metavar="HOST:PORT",
                        help="A replica of this shelter (repeat for each); loopback or private addresses only.")


@keys.command("revoke")
@click.argument("name")
@REPLICAS
@pass_ctx
def keys_revoke(obj: Context, name: str, replicas: tuple[str, ...]) -> None:
    """Revoke device NAME's key (a running server refuses it from its next request). In a shelter of several
    laptops, --replica sends the revocation to each running replica at once (signed with the shelter's secret).

    \b
    Example:
      appliance serve keys revoke device-3f2a1c --replica 10.0.0.11:8737 --replica 10.0.0.12:8737
    """
    from appliance.errors import ApplianceError
    from appliance.serve import replicas as lan

    targets = [lan.parse(r) for r in replicas]
    keys = _keys(obj)
    keys.revoke(name)
    click.echo(f"revoked the key of {name}")
    if not targets:
        return
    if not keys.shelter.active:
        raise ApplianceError("--replica: this laptop is not in a shelter (`appliance serve shelter init`)")
    failed = 0
    for replica, result in lan.push_revocations(targets, keys.shelter.signed_revocations()):
        click.echo(f"  {replica}: {result}")
        failed += result != "ok"
    if failed:
        raise ApplianceError(f"{failed} replica(s) did not take the revocation; run this again when they are up")


@serve.group()
def shelter() -> None:
    """Several laptops serving one shelter: a shared secret, so a key made on one works on all of them.

    \b
    Examples:
      appliance serve shelter init                    # on the first laptop
      appliance serve shelter export /media/usb/shelter.json
      appliance serve shelter join /media/usb/shelter.json   # on each other laptop
    """


@shelter.command("init")
@pass_ctx
def shelter_init(obj: Context) -> None:
    """Make this laptop's shelter secret (once); keys made from now on are signed with it.

    \b
    Example:
      appliance serve shelter init
    """
    click.echo(f"shelter {_keys(obj).shelter.init()}: export it to the other laptops with "
               "`appliance serve shelter export FILE`")


@shelter.command("export")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@pass_ctx
def shelter_export(obj: Context, file: Path) -> None:
    """Write the shelter's secret and revocations to FILE (mode 600): carry it to the other laptops.

    \b
    Example:
      appliance serve shelter export /media/usb/shelter.json
    """
    import os

    text = _keys(obj).shelter.export()
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    click.echo(f"wrote {file}: anyone with it can make keys for this shelter; delete it once joined")


@shelter.command("join")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@pass_ctx
def shelter_join(obj: Context, file: Path) -> None:
    """Join the shelter whose secret FILE holds (made by `shelter export`).

    \b
    Example:
      appliance serve shelter join /media/usb/shelter.json
    """
    click.echo(f"joined shelter {_keys(obj).shelter.join(file.read_text(encoding='utf-8', errors='replace'))}")


@serve.command("status")
@REPLICAS
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def serve_status(obj: Context, replicas: tuple[str, ...], as_json: bool) -> None:
    """Each replica's health: ready, model, library content, queue; a replica that differs is named.

    \b
    Example:
      appliance serve status --replica 10.0.0.11:8737 --replica 10.0.0.12:8737
    """
    from appliance.errors import ApplianceError, UsageError
    from appliance.serve import replicas as lan

    if not replicas:
        raise UsageError("name the replicas: --replica HOST:PORT (repeat for each)")
    rows = lan.status([lan.parse(r) for r in replicas])
    if as_json:
        click.echo(dumps(rows))
    else:
        for row in rows:
            if "error" in row:
                click.echo(f"{row['replica']:24} DOWN  {clean_line(str(row['error']))}")
                continue
            model, library = row.get("model") or {}, row.get("library") or {}
            differs = f"  DIFFERS: {', '.join(row['differs'])}" if row.get("differs") else ""
            click.echo(f"{row['replica']:24} {'ready' if row.get('ready') else 'NOT READY':9} "
                       f"{clean_line(str(model.get('name')))} {str(model.get('sha256'))[:12]}  library "
                       f"{str(library.get('content_sha256'))[:12]}  queue {row.get('queue')}  answered "
                       f"{row.get('answered')}{differs}")
    if any("error" in row or not row.get("ready") or row.get("differs") for row in rows):
        raise ApplianceError("not every replica is ready and the same")


@serve.command("haproxy-config")
@REPLICAS
@click.option("--listen", default="0.0.0.0:8737", show_default=True, metavar="ADDR:PORT",
              help="Where HAProxy listens for the phones (the front laptop's address).")
@click.option("--check-interval", type=click.FloatRange(0.5, 60), default=2.0, show_default=True,
              help="Seconds between health checks of each replica.")
@pass_ctx
def haproxy_config(obj: Context, replicas: tuple[str, ...], listen: str, check_interval: float) -> None:
    """Print an HAProxy configuration for these replicas (health checks, queue, streaming timeouts).

    \b
    Example:
      appliance serve haproxy-config --listen 192.168.1.10:8737 \\
          --replica 192.168.1.11:8737 --replica 192.168.1.12:8737 > shelter.cfg
      haproxy -f shelter.cfg
    """
    from appliance.errors import UsageError
    from appliance.serve import replicas as lan

    if not replicas:
        raise UsageError("name the replicas: --replica HOST:PORT (repeat for each)")
    click.echo(lan.haproxy_config([lan.parse(r) for r in replicas], listen, check_interval), nl=False)
