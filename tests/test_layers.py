"""The import boundaries (docs/ARCHITECTURE.md, "Layers"): every import in the source, read from the code with ast
(function-level imports included), points down: tui -> appliance -> kb, and inside appliance/ from a folder to the
folders below it. Importing a module's name from its own layer is fine; a name above is a defect."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# appliance/'s layers, lowest first; a module may import its own layer and the ones below.
LAYERS = [
    {"appliance", "appliance.errors", "appliance.paths", "appliance.sanitize", "appliance.config"},
    {"appliance.system"},
    {"appliance.models"},
    {"appliance.engine"},
    {"appliance.records"},
    {"appliance.answering"},
    {"appliance.services"},
    {"appliance.serve"},
    {"appliance.doctor"},
    {"appliance.cli", "appliance.__main__"},
]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for size in (2, 1):
        name = ".".join(parts[:size])
        for rank, members in enumerate(LAYERS):
            if name in members:
                return rank
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from appliance import doctor` imports the module appliance.doctor
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def violations() -> list[str]:
    bad = []
    for top in ("appliance", "kb", "tui"):
        for path in sources(top):
            here = module_name(path)
            for line, target in imports(path):
                where = f"{path.relative_to(ROOT)}:{line} imports {target}"
                root = target.split(".")[0]
                if top == "kb" and root in ("appliance", "tui"):
                    bad.append(f"{where} (kb imports nothing from appliance/ or tui/)")
                if top == "appliance" and root == "tui" and not here.startswith("appliance.cli"):
                    bad.append(f"{where} (only appliance/cli/ may import tui)")
                if top == "appliance" and root == "appliance":
                    mine, theirs = layer_of(here), layer_of(target)
                    if mine is None or theirs is None:
                        bad.append(f"{where} (a module outside the layers: add it to LAYERS and the docs)")
                    elif theirs > mine:
                        bad.append(f"{where} (layer {theirs} above {mine})")
    return bad


def test_every_import_points_down():
    assert violations() == []


def test_the_checker_sees_an_import_that_points_up(tmp_path, monkeypatch):
    """The rule itself: a module of system/ importing the answering layer, or kb importing appliance, is caught."""
    fake = tmp_path / "appliance" / "system"
    fake.mkdir(parents=True)
    (tmp_path / "appliance" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "up.py").write_text("def f():\n    from appliance.answering import conversation\n")
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "bad.py").write_text("import appliance.errors\n")
    (tmp_path / "tui").mkdir()
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    found = violations()
    assert any("system/up.py:2 imports appliance.answering.conversation (layer 5 above 1)" in v for v in found)
    assert any("kb/bad.py:1 imports appliance.errors" in v for v in found)
