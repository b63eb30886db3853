import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_tasks_never_import_ray():
    offenders = [
        str(p.relative_to(REPO)) for p in (REPO / "tasks").rglob("*.py") if "ray" in _imports(p)
    ]
    assert offenders == []


def test_required_top_level_exists():
    required = (
        "orchestrator",
        "tasks",
        "serve",
        "configs",
        "tests",
        "pyproject.toml",
        "cluster.yaml",
    )
    for name in required:
        assert (REPO / name).exists(), name


PROJECT = ("config", "tasks", "serve", "orchestrator")
#: Which project packages each may import: config <- tasks <- serve <- orchestrator.
ALLOWED = {
    "config": set(),
    "tasks": {"config"},
    "serve": {"config", "tasks"},
    "orchestrator": {"config", "tasks", "serve"},
}


def _package_imports(package: str) -> dict[str, set[str]]:
    """Each module of a package -> the other project packages it imports (function-local too)."""
    out = {}
    for p in (REPO / package).rglob("*.py"):
        mine = {n for n in _imports(p) if n in PROJECT and n != package}
        if mine:
            out[str(p.relative_to(REPO))] = mine
    return out


def test_packages_import_only_the_layers_below_them():
    offenders = {
        module: sorted(imported - ALLOWED[package])
        for package in PROJECT
        for module, imported in _package_imports(package).items()
        if imported - ALLOWED[package]
    }
    assert offenders == {}


def test_the_config_package_imports_only_pydantic_and_yaml():
    import sys

    allowed = {"pydantic", "pydantic_core", "yaml", "config", "__future__"}
    offenders = {
        str(p.relative_to(REPO)): sorted(
            n for n in _imports(p) - allowed if n not in sys.stdlib_module_names
        )
        for p in (REPO / "config").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


#: What a unit run loads from the test tree: tests/unit and the helpers beside tests/conftest.py.
UNIT_FILES = (
    *sorted((REPO / "tests" / "unit").glob("*.py")),
    *sorted((REPO / "tests").glob("*.py")),
)


def _project_import_statements(path: Path) -> list[str]:
    """The import statements of a file (function-local too) that name a project package."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n.split(".")[0] in PROJECT for n in names):
            out.append(ast.unparse(node))
    return out


def test_unit_tests_do_not_import_ray():
    """tests/unit runs without Ray: no unit test imports it, nor does any project module a unit
    test imports (checked in a fresh interpreter). Ray's tests belong in tests/integration."""
    import subprocess
    import sys

    direct = [str(p.relative_to(REPO)) for p in UNIT_FILES if "ray" in _imports(p)]
    statements = sorted({s for p in UNIT_FILES for s in _project_import_statements(p)})
    assert len(statements) > 20  # the check reads what the unit tests import
    code = (
        "import sys\n"
        f"for s in {statements!r}:\n"
        "    exec(s, {})\n"
        "    if 'ray' in sys.modules:\n"
        "        sys.exit('ray imported by: ' + s)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    through = (out.stdout + out.stderr).strip() if out.returncode else ""
    assert {"import ray": direct, "through": through} == {"import ray": [], "through": ""}


def test_serve_reads_only_the_artifacts_and_the_classifier_loader():
    import ast

    allowed = {"tasks.artifacts", "tasks.checkpoint", "tasks.files", "tasks.storage", "tasks.net"}
    allowed.add("tasks.export")  # the loader of exported folders (`synthpat export`)
    used = set()
    for p in (REPO / "serve").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tasks"):
                used.add(node.module)
    assert used and used <= allowed, sorted(used - allowed)
