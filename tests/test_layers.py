"""The folders of lab/ are its layers: an import only ever goes down the list, inside a function too.

The order is the one in docs/architecture.md. ``evidence`` (paired statistics) sits below
``analysis`` and ``bias`` because the bias scores use its intervals, and it imports neither.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT

LAB = ROOT / "lab"
# top to bottom; names on one line are one layer and may import each other
LAYERS = [
    ("ui",),
    ("jobs",),
    ("sweep",),
    ("plots",),
    ("engine",),
    ("analysis", "bias"),
    ("evidence",),
    ("datasets", "models"),
    ("runs",),
    ("method",),
    ("config", "arms", "fields"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "lab" or len(parts) == 1:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute ``lab`` import in a file (module level and inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lab":
                found += [(node.lineno, f"lab.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 1:
            found.append((node.lineno, "relative import above its package"))
    return found


def upward_imports(root: Path = LAB) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        src = rel.parts[1].removesuffix(".py")
        if src in ("__init__", "__main__"):
            continue  # the package marker and the CLI dispatch sit above every layer
        for line, module in _imports(path):
            if module.startswith("relative"):
                bad.append(f"{rel}:{line} {module}")
                continue
            dst = _layer(module)
            if dst is None or dst == src:
                continue
            if dst == "__main__":
                bad.append(f"{rel}:{line} imports the CLI ({module})")
            elif src not in RANK or dst not in RANK:
                bad.append(f"{rel}:{line} {src} -> {module}: a layer docs/architecture.md lacks")
            elif RANK[dst] < RANK[src]:
                bad.append(f"{rel}:{line} {src} imports {module}, a higher layer")
    return bad


def test_no_import_runs_back_up():
    assert upward_imports() == []


def test_the_check_catches_an_upward_import_inside_a_function(tmp_path):
    pkg = tmp_path / "lab"
    (pkg / "method").mkdir(parents=True)
    (pkg / "method" / "bad.py").write_text(
        "def f():\n    from lab.engine.trainer import run\n    return run\n"
    )
    (pkg / "jobs").mkdir()
    (pkg / "jobs" / "ok.py").write_text("from lab.engine import trainer\n")
    (pkg / "models").mkdir()
    (pkg / "models" / "cli.py").write_text("import lab.__main__\n")
    bad = upward_imports(pkg)
    assert any("method/bad.py:2" in b and "lab.engine.trainer" in b for b in bad)
    assert any("models/cli.py" in b and "CLI" in b for b in bad)
    assert not any("jobs/ok.py" in b for b in bad)


def test_gradio_only_under_ui():
    offenders = [
        str(p.relative_to(ROOT))
        for p in LAB.rglob("*.py")
        if "ui" not in p.relative_to(LAB).parts[:1]
        and any(m.split(".")[0] == "gradio" for _, m in _imports(p))
    ]
    assert offenders == []


def _packages() -> set[str]:
    return {p.name for p in LAB.iterdir() if p.is_dir() and any(p.glob("*.py"))}


def _where_table() -> list[tuple[str, list[str]]]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Where does X live", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] and not set(cells[0]) <= set("-: "):
            paths = re.findall(r"`(lab/[^`]*)`", cells[1])
            if paths:
                rows.append((cells[0], paths))
    return rows


def test_where_does_x_live_names_real_places():
    rows = _where_table()
    assert len(rows) >= 15
    missing = [p for _, paths in rows for p in paths if not (ROOT / p.rstrip("/")).exists()]
    assert missing == []


def test_where_does_x_live_covers_every_package_and_top_module():
    named = {p.rstrip("/") for _, paths in _where_table() for p in paths}
    covered = {n if n.endswith(".py") else n for n in named}
    places = [f"lab/{name}" for name in _packages()]
    places += [f"lab/{p.name}" for p in LAB.glob("*.py") if p.name != "__init__.py"]
    for place in places:
        assert any(c == place or c.startswith(place + "/") for c in covered), place


def test_tests_mirror_the_packages():
    packages = _packages()
    folders = {
        p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))
    }
    assert folders <= packages, folders - packages
    assert {"method", "engine", "evidence", "runs", "jobs", "ui"} <= folders


@pytest.mark.parametrize("name", [n for names in LAYERS for n in names])
def test_every_layer_exists(name):
    assert (LAB / name).is_dir() or (LAB / f"{name}.py").is_file() or name == "sweep"
