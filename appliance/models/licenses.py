"""Offline license table: declared ids -> normalized id, family, commercial use.

Keys are the values people actually write: Hugging Face card ids (`license:`), `license_name:` values used with
`license: other`, SPDX ids, and the free text converters put in GGUF `general.license`. Lookup is exact after
lower-casing and trimming; a value we do not recognize maps to NOASSERTION / unknown, never to a guess.

`commercial_use` is one of permitted / restricted / conditional / unknown:
  permitted    the license allows commercial use (attribution or share-alike may still apply);
  restricted   commercial use is not allowed (non-commercial, research-only);
  conditional  allowed under extra terms (use-based restrictions, user-count thresholds, acceptable-use policies);
  unknown      nobody established it.
This is a summary for choosing models, not legal advice: the note says what to read.
"""

from __future__ import annotations

from dataclasses import dataclass

PERMITTED, RESTRICTED, CONDITIONAL, UNKNOWN = "permitted", "restricted", "conditional", "unknown"
COMMERCIAL_USE = (PERMITTED, RESTRICTED, CONDITIONAL, UNKNOWN)
NOASSERTION = "NOASSERTION"


@dataclass(frozen=True)
class LicenseInfo:
    id: str  # SPDX id where one exists, else LicenseRef-..., or NOASSERTION
    family: str
    commercial_use: str
    restricts_use: bool  # use-based restrictions beyond attribution/share-alike
    note: str = ""
    spdx: bool = False  # `id` is a real SPDX license id (the BOM then uses license.id, else license.name)

    @property
    def known(self) -> bool:
        """True when this is a specific license (not unknown, not a bare 'other')."""
        return self.id != NOASSERTION


_TABLE: dict[str, LicenseInfo] = {}


def _add(keys: list[str], info: LicenseInfo) -> None:
    for key in keys + [info.id]:
        _TABLE[key.lower()] = info


def _spdx(keys: list[str], spdx_id: str, family: str, commercial: str, note: str = "") -> None:
    _add(keys, LicenseInfo(spdx_id, family, commercial, False, note, spdx=True))


# Permissive.
_spdx(["apache-2.0", "apache 2.0", "apache2", "apache-2", "apache license 2.0", "apache license, version 2.0"],
      "Apache-2.0", "permissive", PERMITTED, "keep the license and NOTICE")
_spdx(["mit", "mit license"], "MIT", "permissive", PERMITTED, "keep the copyright notice")
_spdx(["bsd-2-clause"], "BSD-2-Clause", "bsd", PERMITTED, "keep the copyright notice")
_spdx(["bsd-3-clause", "bsd"], "BSD-3-Clause", "bsd", PERMITTED, "keep the copyright notice; no endorsement")
_spdx(["bsd-3-clause-clear"], "BSD-3-Clause-Clear", "bsd", PERMITTED, "no patent grant")
_spdx(["isc"], "ISC", "permissive", PERMITTED)
_spdx(["zlib"], "Zlib", "permissive", PERMITTED)
_spdx(["bsl-1.0"], "BSL-1.0", "permissive", PERMITTED)
_spdx(["unlicense"], "Unlicense", "public-domain", PERMITTED)
_spdx(["cc0-1.0", "cc0"], "CC0-1.0", "public-domain", PERMITTED)
_spdx(["wtfpl"], "WTFPL", "permissive", PERMITTED)
# Creative Commons.
for _ver in ("2.0", "3.0", "4.0"):
    _spdx([f"cc-by-{_ver}"], f"CC-BY-{_ver}", "cc-by", PERMITTED, "attribution required")
    _spdx([f"cc-by-sa-{_ver}"], f"CC-BY-SA-{_ver}", "cc-by-sa", PERMITTED, "attribution; share-alike")
    _spdx([f"cc-by-nc-{_ver}"], f"CC-BY-NC-{_ver}", "cc-by-nc", RESTRICTED, "no commercial use")
    _spdx([f"cc-by-nc-sa-{_ver}"], f"CC-BY-NC-SA-{_ver}", "cc-by-nc", RESTRICTED, "no commercial use; share-alike")
    _spdx([f"cc-by-nd-{_ver}"], f"CC-BY-ND-{_ver}", "cc-by-nd", PERMITTED, "no derivatives (no fine-tunes, no merges)")
    _spdx([f"cc-by-nc-nd-{_ver}"], f"CC-BY-NC-ND-{_ver}", "cc-by-nc", RESTRICTED, "no commercial use; no derivatives")
# Copyleft.
_spdx(["gpl-2.0"], "GPL-2.0-only", "copyleft", PERMITTED, "copyleft")
_spdx(["gpl-3.0", "gpl"], "GPL-3.0-only", "copyleft", PERMITTED, "copyleft")
_spdx(["lgpl-2.1"], "LGPL-2.1-only", "copyleft", PERMITTED, "weak copyleft")
_spdx(["lgpl-3.0", "lgpl"], "LGPL-3.0-only", "copyleft", PERMITTED, "weak copyleft")
_spdx(["agpl-3.0"], "AGPL-3.0-only", "copyleft", PERMITTED, "network copyleft")
_spdx(["mpl-2.0"], "MPL-2.0", "copyleft", PERMITTED, "file-level copyleft")
_spdx(["epl-2.0"], "EPL-2.0", "copyleft", PERMITTED, "weak copyleft")
# Responsible-AI licenses: commercial use allowed, with use-based restrictions passed on to every user.
_OPENRAIL = "use-based restrictions (Attachment A) apply and must be passed on"
_add(["openrail"], LicenseInfo("LicenseRef-OpenRAIL", "openrail", CONDITIONAL, True, _OPENRAIL))
_add(["openrail++"], LicenseInfo("LicenseRef-OpenRAIL++", "openrail", CONDITIONAL, True, _OPENRAIL))
_add(["creativeml-openrail-m"],
     LicenseInfo("LicenseRef-CreativeML-OpenRAIL-M", "openrail", CONDITIONAL, True, _OPENRAIL))
_add(["bigscience-openrail-m"],
     LicenseInfo("LicenseRef-BigScience-OpenRAIL-M", "openrail", CONDITIONAL, True, _OPENRAIL))
_add(["bigcode-openrail-m"], LicenseInfo("LicenseRef-BigCode-OpenRAIL-M", "openrail", CONDITIONAL, True, _OPENRAIL))
_add(["bigscience-bloom-rail-1.0"], LicenseInfo("LicenseRef-BigScience-BLOOM-RAIL-1.0", "openrail", CONDITIONAL, True,
                                                _OPENRAIL))
# Llama community licenses.
_LLAMA = {
    "llama2": ("Llama 2 Community License", ["llama 2", "llama-2", "llama2-community"]),
    "llama3": ("Meta Llama 3 Community License", ["llama 3", "llama-3", "llama3-community"]),
    "llama3.1": ("Llama 3.1 Community License", ["llama 3.1", "llama-3.1", "llama3.1-community"]),
    "llama3.2": ("Llama 3.2 Community License", ["llama 3.2", "llama-3.2", "llama3.2-community"]),
    "llama3.3": ("Llama 3.3 Community License", ["llama 3.3", "llama-3.3", "llama3.3-community"]),
    "llama4": ("Llama 4 Community License", ["llama 4", "llama-4", "llama4-community"]),
}
for _key, (_title, _aliases) in _LLAMA.items():
    _add([_key, _title] + _aliases, LicenseInfo(
        f"LicenseRef-{_key}-community", "llama", CONDITIONAL, True,
        f"{_title}: acceptable use policy; a separate license above 700M monthly active users; "
        "'Built with Llama' attribution"))
_add(["gemma", "gemma terms of use"], LicenseInfo(
    "LicenseRef-gemma", "gemma", CONDITIONAL, True, "Gemma Terms of Use and prohibited use policy"))
_add(["qwen", "tongyi-qianwen", "tongyi qianwen license agreement"], LicenseInfo(
    "LicenseRef-qwen", "qwen", CONDITIONAL, True, "Qwen license: a separate license above 100M monthly active users"))
_add(["qwen-research", "tongyi-qianwen-research", "qwen research license agreement"], LicenseInfo(
    "LicenseRef-qwen-research", "qwen", RESTRICTED, True, "Qwen research license: non-commercial use only"))
_add(["deepseek", "deepseek-license", "deepseek license agreement"], LicenseInfo(
    "LicenseRef-deepseek", "deepseek", CONDITIONAL, True, "DeepSeek license: use-based restrictions (Attachment A)"))
_add(["fair-noncommercial-research-license"], LicenseInfo(
    "LicenseRef-fair-noncommercial-research", "research", RESTRICTED, True, "non-commercial research only"))
# Values that say nothing specific.
_add(["other"], LicenseInfo(NOASSERTION, "other", UNKNOWN, False, "declared as 'other': read the model card"))
UNKNOWN_LICENSE = LicenseInfo(NOASSERTION, "unknown", UNKNOWN, False, "no license could be established")
_add(["unknown", "none", "noassertion", "n/a"], UNKNOWN_LICENSE)


def lookup(value: object) -> LicenseInfo:
    """The table entry for a declared value, or UNKNOWN_LICENSE. Never guesses from a partial match."""
    if not value or not isinstance(value, str):
        return UNKNOWN_LICENSE
    return _TABLE.get(value.strip().lower(), UNKNOWN_LICENSE)


def known_ids() -> list[str]:
    """The ids a user may assert (every specific license in the table)."""
    return sorted({info.id for info in _TABLE.values() if info.known}, key=str.lower)


def is_spdx(license_id: str) -> bool:
    return lookup(license_id).spdx
