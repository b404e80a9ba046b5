"""How things are shown: plain functions with no Textual imports, so they have plain unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.models.record import ModelRecord


def short_path(path: str | Path) -> str:
    """A path with the user's home shown as ~ (shorter on an 80-column terminal, and the same on every machine)."""
    text = str(path)
    try:
        home = str(Path.home())
    except RuntimeError:
        return text
    if home not in ("", "/") and (text == home or text.startswith(home + "/")):
        return "~" + text[len(home):]
    return text


def human_size(size: int | float | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def license_label(record: ModelRecord | dict[str, Any]) -> str:
    """The license as the user should read it (the one rule, in appliance.models.record)."""
    return ModelRecord.of(record).license.label


def commercial_label(record: ModelRecord | dict[str, Any]) -> str:
    return ModelRecord.of(record).license.commercial


def consent_reasons(record: ModelRecord | dict[str, Any]) -> list[str]:
    """Why a model must be shown to the user before its first use (the rule lives in appliance.models.record)."""
    return ModelRecord.of(record).consent_reasons()


def verified_label(entry: Any) -> str:
    if entry.quarantined:
        return "QUARANTINED"
    if not entry.available:
        return "missing"
    last = entry.info.last_check
    if last is None:
        return "never"
    return {"ok": "ok", "mismatch": "MISMATCH", "missing": "missing", "refused": "REFUSED"}.get(last.result,
                                                                                               last.result)


def location_label(entry: Any, width: int = 28) -> str:
    """Where the file is: bundled with the appliance, copied into the data folder, or used in place."""
    if entry.mode == "pack":
        return "bundled"
    if entry.mode == "copy":
        return "data folder"
    folder = short_path(Path(entry.path).parent)
    if len(folder) > width:
        folder = "…" + folder[-(width - 1):]
    return folder


def tokens_label(rate: float | None) -> str:
    return "– tok/s" if not rate else f"{rate:.1f} tok/s"


def kb_label(stats: dict | None) -> str:
    if stats is None:
        return "KB –"
    docs = stats.get("documents", 0)
    zims = stats.get("zims", 0)
    label = f"KB {docs} doc{'s' if docs != 1 else ''}"
    if zims:
        label += f" + {zims} ZIM"
    return label


def guide_text(listing: dict) -> str:
    """The field guide's lines on the library screen: version, provenance, each section with its sources."""
    lines = [f"Field guide {listing.get('version', '')} ({listing.get('date', '')}), shipped with the appliance: "
             f"{listing.get('provenance', '')}"]
    for chapter in listing.get("sections") or []:
        lines.append(f"  {chapter.get('title', '')}: {'; '.join(chapter.get('sources') or [])}")
    from appliance.sanitize import clean_line

    return "\n".join(clean_line(line) for line in lines)


def source_label(source: Any) -> str:
    """One line for a cited passage: number, file, section, page, and what its file states of itself (the work's
    title, publisher, license where known); safe to show: control characters escaped."""
    from appliance.sanitize import clean_line
    from kb.source import Source

    source = source if isinstance(source, Source) else Source.from_dict(source)
    said = source.provenance()  # what its file states: title of the work, publisher, license (only those known)
    return clean_line(source.cite(short=True) + (f" · {said}" if said else ""))


def power_label(profile: Any) -> str:
    """The low-power profile in one line ("" when it is off), e.g. "low power: on battery (BAT1, 17%,
    discharging) · 1 thread · answers ≤ 256 tokens". The reason can name a battery (a name read from /sys), so
    the line is cleaned; shown as a rich Text, never parsed as markup."""
    if profile is None or not profile.low_power:
        return ""
    from appliance.sanitize import clean_line

    threads, max_tokens = profile.limits()
    return clean_line(f"low power: {profile.reason} · {threads} thread{'s' if threads != 1 else ''} · answers ≤ "
                      f"{max_tokens} tokens")
