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
