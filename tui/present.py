"""How things are shown: plain functions with no Textual imports, so they have plain unit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.paths import atomic_write_text


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


def license_label(record: dict[str, Any]) -> str:
    """The license as the user should read it: an id only when it was established, otherwise plainly unknown."""
    lic = record.get("license") or {}
    status = lic.get("status", "unknown")
    if status == "confirmed" and lic.get("id") and lic.get("id") != "NOASSERTION":
        return str(lic["id"])
    if status == "user-asserted" and lic.get("id"):
        return f"{lic['id']} (yours)"
    if status == "conflict":
        return "CONFLICT"
    return "UNKNOWN"


def commercial_label(record: dict[str, Any]) -> str:
    return {"permitted": "yes", "restricted": "no", "conditional": "conditions"}.get(
        (record.get("license") or {}).get("commercial_use", "unknown"), "unknown")


def consent_reasons(record: dict[str, Any]) -> list[str]:
    """Why a model must be shown to the user before its first use; empty when nothing needs saying."""
    lic = record.get("license") or {}
    reasons = []
    status = lic.get("status", "unknown")
    if status == "conflict":
        declared = ", ".join(str(d.get("value")) for d in lic.get("declared", []))
        reasons.append(f"Its license is unclear: the file declares conflicting licenses ({declared}).")
    elif status == "user-asserted":
        if lic.get("restricts_use") or lic.get("commercial_use") != "permitted":
            reasons.append(f"Its license {lic.get('id')} (asserted by you, not by the file) restricts use; "
                           f"commercial use: {commercial_label(record)}.")
    elif status != "confirmed":
        reasons.append("Its license is UNKNOWN: nobody established under which terms you may use it.")
    elif lic.get("restricts_use") or lic.get("commercial_use") not in ("permitted",):
        note = f" ({lic['note']})" if lic.get("note") else ""
        reasons.append(f"Its license {lic.get('id')} restricts use; commercial use: "
                       f"{commercial_label(record)}{note}.")
    for warning in record.get("content_warnings") or []:
        text = warning.get("text") or warning.get("warning") or warning.get("note") if isinstance(warning, dict) else warning
        reasons.append(f"Content warning: {text}")
    return reasons


def verified_label(entry: Any) -> str:
    if entry.quarantined:
        return "QUARANTINED"
    if not entry.available:
        return "missing"
    checks = entry.record.get("verification") or []
    if not checks:
        return "never"
    result = checks[-1].get("result")
    return {"ok": "ok", "mismatch": "MISMATCH", "missing": "missing"}.get(result, str(result))


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


def source_label(source: Any) -> str:
    """One line for a cited passage: number, file, section, page."""
    get = (lambda key: source.get(key)) if isinstance(source, dict) else (lambda key: getattr(source, key, None))
    parts = [Path(str(get("path") or "?")).name]
    if get("section"):
        parts.append(str(get("section")))
    if get("page") is not None:
        parts.append(f"p. {get('page')}")
    return f"[{get('number')}] " + " · ".join(parts)


class Consents:
    """Which models the user has already been shown a license or content warning for (by sha256)."""

    def __init__(self, path: Path):
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def given(self, sha256: str) -> bool:
        return sha256 in self._load().get("acknowledged", {})

    def give(self, sha256: str, name: str) -> None:
        data = self._load()
        data.setdefault("acknowledged", {})[sha256] = name
        atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")
