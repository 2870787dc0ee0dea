"""The house plan holds: imports go one way, and nothing below the runner (and the report) imports them."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "avalanche_lpa"

# Each room and the rooms it may import from (data and layers depend on no other room but compat, the fixes of
# other libraries, which every room may use and which imports no room).
ALLOWED = {
    "compat": set(),
    "errors": set(),
    "version": set(),
    "names": set(),
    "layers": set(),
    "files": {"errors"},
    "data": {"errors"},
    "timing": set(),
    "models": {"layers", "data", "names"},
    "plugins": {"layers", "models", "data", "timing"},
    "metrics": {"layers", "models", "data", "timing"},
    "distributed": set(),
    "training": {"layers", "models", "plugins", "metrics", "data"},
    "config": {"models", "training", "data", "errors", "names"},
    "report": {"metrics", "files", "errors", "version"},
    "runner": {"layers", "models", "plugins", "metrics", "training", "data", "distributed", "files", "config", "timing",
               "report", "errors"},
    # the command line: argument parsing over everything below, imported lazily (tests/test_cli_speed.py)
    "cli": {"config", "runner", "data", "plugins", "distributed", "files", "errors", "names", "version"},
    "__main__": {"cli"},  # python -m avalanche_lpa: the top of the stack, like the scripts
}
ALLOWED = {room: rooms | ({"compat"} if room != "compat" else set()) for room, rooms in ALLOWED.items()}


def _room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0][:-3] if parts[0].endswith(".py") else parts[0]


def _package_imports(path: Path):
    """Rooms of avalanche_lpa that the module at ``path`` imports (absolute and relative imports)."""
    tree = ast.parse(path.read_text())
    inside = PACKAGE in path.parents
    depth = len(path.relative_to(PACKAGE).parts) - 1 if inside else 0  # folders below the package
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level and not inside:  # a script's relative import cannot reach the package
                continue
            if node.level:  # relative: climb `level - 1` folders from the module's folder
                up = node.level - 1
                if up >= depth + 1 or (up == depth and not node.module):
                    continue
                parts = list(path.relative_to(PACKAGE).parts[:-1])
                base = parts[: len(parts) - up]
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    yield target[0]
                continue
            if node.module and node.module.startswith("avalanche_lpa."):
                yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("avalanche_lpa."):
                    yield alias.name.split(".")[1]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    room = _room(path)
    allowed = ALLOWED[room] | {room}
    used = set(_package_imports(path))
    assert used <= allowed, f"{path.relative_to(ROOT)} ({room}) imports {sorted(used - allowed)}"


# Benchmarks of the runner itself (its checkpoints, a whole run's phases) sit at the top of the stack, like scripts.
RUNNER_BENCHMARKS = {"checkpoint_cost.py", "run_cost.py", "input_pipeline.py", "config_trace.py"}


def test_only_the_runner_the_command_line_and_scripts_import_the_runner():
    # Scripts at the top of the stack (experiments/, docs/figures/, python -m avalanche_lpa, the runner's
    # benchmarks) may; the package below it and the benchmarks that measure the library may not.
    benchmarks = [p for p in sorted((ROOT / "benchmarks").glob("*.py")) if p.name not in RUNNER_BENCHMARKS]
    outside = [p for p in MODULES if _room(p) not in ("runner", "cli", "__main__")] + benchmarks
    offenders = [str(p.relative_to(ROOT)) for p in outside if {"runner", "cli"} & set(_package_imports(p))]
    assert offenders == []


def test_one_public_name_means_one_thing():
    # A name exported by two rooms must be the same object (a re-export), never two functions that differ
    # (e.g. our layers' finder of PatchAttention layers and the adapters' finder of every attention family).
    import importlib

    owners = {}
    for room in sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        module = importlib.import_module(f"avalanche_lpa.{room}")
        for name in getattr(module, "__all__", []):
            owners.setdefault(name, {})[room] = getattr(module, name)
    clashes = {name: sorted(found) for name, found in owners.items() if len({id(obj) for obj in found.values()}) > 1}
    assert clashes == {}
