"""The package's layers stack: each module imports only its own package and the layers below it,
no module-level import cycle exists, the library packages print nothing themselves (no typer, no
rich), function-local imports are rare and explained, and the torch-free paths stay torch-free."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "lmcli"
HELPERS = ["errors", "atomic", "workspace", "config_values", "toml_config", "parallel", "json_output", "progress", "readers",
           "memory_budget", "job", "allocator", "extras",
           "peak_memory", "configs"]
# The stack, bottom to top: a module may import modules of its own unit and of units of a lower rank.
RANKS = {
    "lmcli": 0, **{f"lmcli.{name}": 0 for name in HELPERS},
    "lmcli.tokenizer": 1,
    "lmcli.data": 2,
    "lmcli.model": 3,
    "lmcli.accounting": 4,
    "lmcli.training": 5,
    "lmcli.generation": 5, "lmcli.generate": 5,  # the CS336 name of lmcli.generation's API
    "lmcli.experiments": 6, "lmcli.interop": 6,
    "lmcli.ui": 7,
    "lmcli.commands": 8,
    "lmcli.cli": 9,
    "lmcli.__main__": 10,  # `python -m lmcli`
}
SAME_UNIT = {"lmcli.generate": "lmcli.generation"}
LIBRARY_RANK = 6  # up to lmcli.experiments: usable from Python, printing nothing
FUNCTION_LEVEL_OK = {"lmcli.cli", "lmcli.__main__"}  # cli: each command's module when it runs; __main__: the app after a worker follows its launcher


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """The layer unit a module belongs to: its top-level package or helper module under lmcli."""
    top = ".".join(module.split(".")[:2])
    return SAME_UNIT.get(top, top)


def lazy_exports(package: str) -> dict[str, str]:
    """A package's lazily imported names (its ``_EXPORTS``: name -> module)."""
    return getattr(importlib.import_module(package), "_EXPORTS", {}) if package in MODULES else {}


def imported_modules(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The lmcli modules an import statement loads (lazy package exports resolved to their module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("lmcli")]
    base = node.module or ""
    if node.level:  # relative import
        base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
    if not base.startswith("lmcli"):
        return []
    found = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        found.append(candidate if candidate in MODULES else lazy_exports(base).get(alias.name, base))
    return found


def in_type_checking(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (never executed)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def imports_of(module: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]], list[ast.stmt]]:
    """(module-level lmcli imports, function-level lmcli imports, every function-level import statement)."""
    tree = ast.parse(MODULES[module].read_text())
    skipped = in_type_checking(tree)
    function_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                      for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    top, local, local_statements = [], [], []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skipped:
            continue
        targets = [(node.lineno, m) for m in imported_modules(node, module)]
        if id(node) in function_nodes:
            local += targets
            local_statements.append(node)
        else:
            top += targets
    return top, local, local_statements


def third_party(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_has_a_layer():
    assert {m for m in MODULES if unit(m) not in RANKS} == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_stack(module):
    top, local, _ = imports_of(module)
    for line, target in top + local:
        if unit(target) == unit(module):
            continue
        assert RANKS[unit(target)] < RANKS[unit(module)] or RANKS[unit(target)] == RANKS[unit(module)] == 0, (
            f"{module}:{line} imports {target}, which is not below it in the stack"
        )


def test_no_module_level_import_cycle():
    graph = {m: {t for _, t in imports_of(m)[0] if t in MODULES and t != m} for m in MODULES}
    # A package's own __init__ imported by its modules is not a cycle worth reporting unless it imports them back.
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if RANKS[unit(m)] <= LIBRARY_RANK))
def test_library_packages_print_nothing_themselves(module):
    assert third_party(module).isdisjoint({"typer", "rich"}), f"{module} imports typer or rich"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_function_level_imports_are_few_and_explained(module):
    _, local, statements = imports_of(module)
    if module not in FUNCTION_LEVEL_OK:
        assert not local, f"{module} imports lmcli modules inside functions: {local}"
    lines = MODULES[module].read_text().splitlines()
    for node in statements:
        first = node.lineno - 1
        while lines[first - 1].strip().startswith(("import ", "from ")):  # a block of imports shares one comment
            first -= 1
        explained = "#" in lines[node.lineno - 1] or lines[first - 1].strip().startswith("#")
        assert explained, f"{module}:{node.lineno}: say why this import is local"


@pytest.mark.parametrize(
    "code",
    [
        "import lmcli.training.config",
        "import lmcli.accounting; import lmcli.experiments.runs",
        "from lmcli.cli import app; app(['--help'], standalone_mode=False)",
        "from lmcli.cli import app; app(['runs', '--workspace', sys.argv[1]], standalone_mode=False)",
        "from lmcli.cli import app; app(['accounting', '--model', 'gpt2-xl', '--json'], standalone_mode=False)",
    ],
    ids=["training.config", "accounting, runs", "--help", "runs", "accounting"],
)
def test_paths_that_need_no_torch_do_not_import_it(code, tmp_path):
    check = f"import sys\n{code}\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    result = subprocess.run([sys.executable, "-c", check, str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
