"""`appliance models ...`: the model library from the command line."""

from __future__ import annotations

from typing import Any

import click

from appliance.cli_support import dumps, hash_progress, pass_ctx, Context
from appliance.errors import ApplianceError


@click.group()
def models() -> None:
    """The model library: list, import, verify.

    \b
    Examples:
      appliance models list
      appliance models import ~/Downloads/model.gguf --name my-model
      appliance models verify --all
    """


def _model_row(entry) -> dict[str, Any]:
    record = entry.record
    return {
        "name": entry.name,
        "path": str(entry.path),
        "mode": entry.mode,
        "size": record["file"]["size"],
        "sha256": record["file"]["sha256"],
        "quantization": record.get("lineage", {}).get("quantization"),
        "license": record["license"]["id"],
        "license_family": record["license"]["family"],
        "commercial_use": record["license"]["commercial_use"],
        "state": "quarantined" if entry.quarantined else ("offline" if not entry.available else "registered"),
    }


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def models_list(obj: Context, as_json: bool) -> None:
    """List registered models.

    \b
    Example:
      appliance models list --json
    """
    rows = [_model_row(entry) for entry in obj.services.library.entries()]
    if as_json:
        click.echo(dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['name']:32} {row['size'] / 1e6:8.1f} MB  {row['quantization'] or '?':8} "
                   f"{row['license']:14} commercial:{row['commercial_use']:11} {row['state']}")


@models.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", help="Name in the library (default: from the file name).")
@click.option("--copy/--in-place", default=False, help="Copy into the data dir, or use the file where it is (default).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def models_import(obj: Context, path: str, name: str | None, copy: bool, as_json: bool) -> None:
    """Register a GGUF file (hashed, header checked, manifest written).

    \b
    Example:
      appliance models import /media/usb/phi-3-mini.Q4_K_M.gguf --copy
    """
    update, bar = hash_progress("hashing", obj.quiet)
    with bar:
        entry = obj.services.library.register(path, name=name, mode="copy" if copy else "in-place", progress=update)
    row = _model_row(entry)
    click.echo(dumps(row) if as_json else f"registered {row['name']} ({row['license']}, sha256 {row['sha256'][:16]}...)")


@models.command("verify")
@click.argument("name", required=False)
@click.option("--all", "all_models", is_flag=True, help="Verify every registered model.")
@pass_ctx
def models_verify(obj: Context, name: str | None, all_models: bool) -> None:
    """Re-hash model files against their manifests (exit 3 on a mismatch).

    \b
    Examples:
      appliance models verify smollm2-135m-instruct
      appliance models verify --all
    """
    library = obj.services.library
    entries = library.entries() if all_models else [library.resolve(name, obj.services.config.model.default)]
    failed = []
    for entry in entries:
        update, bar = hash_progress(f"verifying {entry.name}", obj.quiet)
        try:
            with bar:
                library.verify(entry, update)
            click.echo(f"ok        {entry.name}")
        except ApplianceError as exc:
            failed.append(exc)
            click.echo(f"FAILED    {entry.name}: {exc}")
    if failed:
        raise failed[0].__class__(f"{len(failed)} of {len(entries)} model(s) failed verification")
