"""The package's imports point one way (docs/architecture.md): each package imports only the layers below it,
and no module reaches itself through its imports.

Read from the source, not by importing it: an edge for every `import`/`from … import` in a module (at the
top, inside a function, or under `if TYPE_CHECKING:`: a cycle in the types is one in the design too), to
the module it names or,
for `from package import name` where `name` is not a module, to the package. Importing `a.b.c` also runs
`a/__init__` and `a/b/__init__`, so those count too, except a module's own enclosing packages (Python runs
them before the module itself, whatever it imports).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "charnn"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}

    def add(source: str, target: str) -> None:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in mods and prefix != source and not source.startswith(prefix + "."):
                graph[source].add(prefix)

    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(name, alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    add(name, f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base)
    return graph


# The house, bottom to top (docs/architecture.md). A module may import its own package and anything in a lower
# layer; packages that share a layer (the ways to use a run) may not import each other.
LAYERS: list[set[str]] = [
    {"errors"}, {"capability"}, {"distributed"}, {"device"},
    {"text"}, {"page"}, {"model"}, {"sample"}, {"run"}, {"recipe"}, {"training"}, {"insight"}, {"api"},
    {"write", "serve", "export", "base"},
    {"cli"}, {"__main__"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit(module: str) -> str:
    """The package (or loose module) a module belongs to: `charnn.run.config` -> `run`."""
    return module.split(".")[1] if "." in module else module


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import against the order, as 'importer -> imported'. The package root (`charnn`) may import
    only the front door (`api`), which it loads on first use."""
    wrong = []
    for source, targets in graph.items():
        for target in targets:
            if target == "charnn":
                wrong.append(f"{source} -> {target}")  # the root loads the whole library: below nothing
                continue
            if source == "charnn":
                if unit(target) != "api":
                    wrong.append(f"{source} -> {target}")
                continue
            a, b = unit(source), unit(target)
            if a != b and RANK[b] >= RANK[a]:
                wrong.append(f"{source} -> {target}")
    return sorted(wrong)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_package_and_loose_module_has_a_layer() -> None:
    assert {unit(m) for m in modules() if m != "charnn"} <= set(RANK), "a new package needs its place in LAYERS"


def test_the_walk_sees_an_upward_import_and_a_cycle() -> None:
    graph = import_graph()
    assert "charnn.training.loop" in graph["charnn.training.session"]  # it reads real edges
    graph["charnn.model.network"] = graph["charnn.model.network"] | {"charnn.training.session"}  # a made-up import up the stack
    assert upward(graph) == ["charnn.model.network -> charnn.training.session"]
    assert any({"charnn.model.network", "charnn.training.session"} <= set(c) for c in cycles(graph))
    graph["charnn.serve.app"] = graph["charnn.serve.app"] | {"charnn.export.web"}  # peers may not import each other
    assert "charnn.serve.app -> charnn.export.web" in upward(graph)


def test_imports_follow_the_layers() -> None:
    assert upward(import_graph()) == []


def test_no_import_cycles_in_the_package() -> None:
    assert cycles(import_graph()) == []


def test_importing_one_module_does_not_import_the_library() -> None:
    """`charnn/__init__` loads the front door on first use, so a leaf module stays a leaf."""
    code = "import sys, charnn.text.tokenizer; print('charnn.api' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    code = "import charnn; print(charnn.CharModel.__module__, charnn.load_run.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["charnn.api", "load_run"]
