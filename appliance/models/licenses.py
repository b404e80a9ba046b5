"""Offline license table: declared ids -> normalized SPDX-ish id, family, commercial use.

Unknown stays unknown: a value we do not recognize maps to NOASSERTION / unknown, never to a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

PERMITTED, RESTRICTED, CONDITIONAL, UNKNOWN = "permitted", "restricted", "conditional", "unknown"


@dataclass(frozen=True)
class LicenseInfo:
    id: str
    family: str
    commercial_use: str
    restricts_use: bool
    note: str = ""


_TABLE: dict[str, LicenseInfo] = {}


def _add(keys: list[str], info: LicenseInfo) -> None:
    for key in keys:
        _TABLE[key.lower()] = info


_add(["apache-2.0", "apache 2.0", "apache2", "apache license 2.0"], LicenseInfo("Apache-2.0", "permissive", PERMITTED, False))
_add(["mit"], LicenseInfo("MIT", "permissive", PERMITTED, False))
_add(["bsd-2-clause"], LicenseInfo("BSD-2-Clause", "permissive", PERMITTED, False))
_add(["bsd-3-clause", "bsd"], LicenseInfo("BSD-3-Clause", "permissive", PERMITTED, False))
_add(["cc-by-4.0"], LicenseInfo("CC-BY-4.0", "attribution", PERMITTED, False, "attribution required"))
_add(["cc-by-sa-4.0"], LicenseInfo("CC-BY-SA-4.0", "copyleft", PERMITTED, False, "share-alike"))
_add(["cc-by-nc-4.0"], LicenseInfo("CC-BY-NC-4.0", "non-commercial", RESTRICTED, True, "no commercial use"))
_add(["cc-by-nc-sa-4.0"], LicenseInfo("CC-BY-NC-SA-4.0", "non-commercial", RESTRICTED, True, "no commercial use; share-alike"))
_add(["openrail", "openrail++", "creativeml-openrail-m", "bigscience-openrail-m", "bigcode-openrail-m"],
     LicenseInfo("OpenRAIL", "responsible-ai", CONDITIONAL, True, "use restrictions in the license"))
for _v in ("llama2", "llama3", "llama3.1", "llama3.2", "llama3.3"):
    _add([_v], LicenseInfo(f"LicenseRef-{_v}-community", "llama-community", CONDITIONAL, True,
                           "acceptable use policy; extra terms above 700M monthly users"))
_add(["gemma"], LicenseInfo("LicenseRef-gemma", "gemma", CONDITIONAL, True, "Gemma prohibited use policy"))
_add(["qwen"], LicenseInfo("LicenseRef-qwen", "qwen", CONDITIONAL, True, "extra terms above 100M monthly users"))
_add(["qwen-research"], LicenseInfo("LicenseRef-qwen-research", "non-commercial", RESTRICTED, True, "research only"))
_add(["deepseek"], LicenseInfo("LicenseRef-deepseek", "deepseek", CONDITIONAL, True, "use restrictions in the license"))
_add(["other"], LicenseInfo("NOASSERTION", "other", UNKNOWN, False, "declared as 'other': read the model card"))

UNKNOWN_LICENSE = LicenseInfo("NOASSERTION", "unknown", UNKNOWN, False, "no license could be established")


def lookup(value: str | None) -> LicenseInfo:
    if not value or not isinstance(value, str):
        return UNKNOWN_LICENSE
    return _TABLE.get(value.strip().lower(), UNKNOWN_LICENSE)
