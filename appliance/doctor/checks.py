"""One result of `appliance doctor`: ok, warn, fail or skipped, with one line of detail and one of fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Check:
    name: str
    ok: bool | None  # True: ok (or warn, with warn=True), False: fail, None: skipped (a model on an unplugged drive)
    detail: str
    exit_code: int = 0  # for a failure: the exit code it stands for (3: integrity)
    fix: str = ""  # what to do about it, when there is something to do
    warn: bool = False
    section: str = ""  # air gap, integrity, engine, hardware, power

    @property
    def status(self) -> str:
        if self.ok is None:
            return "skipped"
        if not self.ok:
            return "fail"
        return "warn" if self.warn else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "section": self.section, "result": self.status, "detail": self.detail,
                "fix": self.fix}

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skipped": "skip"}[self.status]
        fix = f" (fix: {self.fix})" if self.fix and self.status != "ok" else ""
        return f"{mark}  {self.name}: {self.detail}{fix}"


def warning(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, True, detail, fix=fix, warn=True)
