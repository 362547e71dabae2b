"""The library's layers: every import points down or sideways, never up, and none is circular.

Imports are read from the source (module level, inside functions and under ``TYPE_CHECKING``
alike), so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "anonymize"

# Lowest first. A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"anonymize", "anonymize.errors", "anonymize.layout", "anonymize.schemas",
              "anonymize.policies", "anonymize.flows"}),
    ("definitions", {"anonymize.contracts", "anonymize.keys", "anonymize.identifiers",
                     "anonymize.vocabulary"}),
    ("readers", {"anonymize.sources", "anonymize.sources.base", "anonymize.sources.csvfile",
                 "anonymize.sources.connect", "anonymize.sources.weblog", "anonymize.parse"}),
    ("transform", {"anonymize.web", "anonymize.operators", "anonymize.canaries",
                   "anonymize.perturbation",
                   "anonymize.statistics"}),
    # Compiled against the operator and statistic registries, so it sits above them.
    ("policy", {"anonymize.policy"}),
    # The data dictionary: the output schemas' docs with the policy's treatments.
    ("dictionary", {"anonymize.dictionary"}),
    ("stage", {"anonymize.plan", "anonymize.stage"}),
    ("releases", {"anonymize.releases", "anonymize.datasheet", "anonymize.tenants"}),
    ("gate", {"anonymize.gate"}),
    ("state", {"anonymize.publish", "anonymize.ledger", "anonymize.report",
               "anonymize.deliveries", "anonymize.subjects"}),
    ("run", {"anonymize.run", "anonymize.remote"}),
    ("tools", {"anonymize.synth", "anonymize.synth_sources", "anonymize.synth_web"}),
    # Prefect's side: the temporary server, the flow and its deployments.
    ("flows", {"anonymize.flows.server", "anonymize.flows.nightly", "anonymize.flows.deployments"}),
    ("entry", {"anonymize.cli", "anonymize.__main__"}),
]  # fmt: skip
RANK = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from anonymize.sources import base`` imports a module, not a name.
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()
            )
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(p) if m in modules} - {name} for name, p in modules.items()}


def test_every_module_of_the_library_has_a_layer():
    assert set(_graph()) == set(RANK), "add the new module to LAYERS (and to the README's layers)"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{module} ({LAYERS[RANK[module]][0]}) imports {dep} ({LAYERS[RANK[dep]][0]})"
        for module, deps in _graph().items()
        for dep in deps
        if RANK[dep] > RANK[module]
    ]
    assert upward == []


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_walk_sees_lazy_and_type_only_imports(tmp_path):
    # A circle hidden in a function body is a circle too: the walk must see such imports.
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import anonymize.gate\n"
        "def f():\n    from anonymize.run import Run\n    from anonymize.sources import base\n"
    )
    assert {"anonymize.gate", "anonymize.run", "anonymize.sources.base"} <= _imports(probe)


@pytest.mark.parametrize("module", sorted(RANK))
def test_the_library_never_imports_prefect_but_from_its_command_line(module):
    path = PACKAGE / (module.removeprefix("anonymize").lstrip(".").replace(".", "/") or "__init__")
    path = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    heavy = {m for m in _imports(path) if m.split(".")[0] in ("prefect", "prefect_dask")}
    heavy |= {m for m in _imports(path) if m.startswith("anonymize.flows.")} - {
        "anonymize.flows.server"  # starts a server without importing Prefect
    }
    prefect_side = module.startswith("anonymize.flows.") or module == "anonymize.cli"
    assert prefect_side or heavy == set()


def test_every_module_says_what_it_does_in_one_line():
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.relative_to(ROOT)} has no docstring"
        first, _, rest = doc.partition("\n")
        assert not rest or rest.startswith("\n"), f"{path.relative_to(ROOT)}: one line first"
        assert len(first) <= 100
