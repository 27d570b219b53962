"""The architecture, held by the imports: no cycles among the project's modules, `engine/` in rooms
whose arrows point one way (cli -> daemon / dryrun -> runtime -> store -> core -> models -> the language),
and nothing outside the command line importing it.

Imports are read from the source (module level, inside functions and under TYPE_CHECKING alike),
so an import that only runs on some path still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("journeys", "engine", "connectors")

# What each room may import besides itself (the standard library and third parties always).
ALLOWED = {
    "journeys": set(),
    "connectors": {"journeys"},
    "engine": set(),  # engine/__init__.py: a docstring
    "engine.models": {"journeys"},  # features and models: pure, below the core that scores with them
    "engine.core": {"engine.models", "journeys"},
    "engine.store": {"engine.core", "engine.models", "journeys"},
    "engine.runtime": {"engine.store", "engine.core", "engine.models", "journeys"},
    "engine.daemon": {"engine.runtime", "engine.store", "engine.core", "engine.models", "journeys", "connectors"},
    "engine.dryrun": {"engine.runtime", "engine.store", "engine.core", "engine.models", "journeys", "connectors"},
    "engine.cli": {"engine.daemon", "engine.dryrun", "engine.runtime", "engine.store", "engine.core", "engine.models",
                   "journeys", "connectors"},
}
TOP_LEVEL_MODULES = 8  # engine/'s own modules, besides its rooms
ROOM_MODULES = 15  # modules per room, __init__ not counted: a room that needs more is two rooms


def modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(root: Path, packages=PACKAGES) -> dict[str, dict[str, int]]:
    """module -> {imported project module: line of the first such import}."""
    mods = modules(root, packages)

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        out: dict[str, int] = {}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    package = package[:len(package) - node.level + 1]
                    base = ".".join(package + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from package import module` imports the module; `from module import name`, the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                found = known(target)
                if found is not None and found != name:
                    out.setdefault(found, node.lineno)
        graph[name] = out
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # iterative, so a deep graph never hits the recursion limit
        nonlocal counter
        work = [(v, iter(graph.get(v, ())))]
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def room_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "engine":
        return parts[0]
    return "engine" if len(parts) == 1 else f"engine.{parts[1]}"


def wrong_way(graph: dict[str, dict[str, int]], root: Path) -> list[str]:
    mods = modules(root)
    problems = []
    for module, imported in sorted(graph.items()):
        here = room_of(module)
        for target, line in sorted(imported.items()):
            there = room_of(target)
            if there != here and there not in ALLOWED.get(here, set()):
                problems.append(f"{mods[module].relative_to(root)}:{line}: {module} imports {target} "
                                f"({here} may import {sorted(ALLOWED.get(here, set())) or 'no other room'})")
    return problems


def test_no_import_cycles():
    found = cycles(import_graph(ROOT))
    assert found == [], "import cycles (imports inside functions count):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_point_one_way_between_rooms():
    problems = wrong_way(import_graph(ROOT), ROOT)
    assert problems == [], "imports against the arrows:\n" + "\n".join(problems)


def test_nothing_outside_the_command_line_imports_it():
    graph = import_graph(ROOT)
    outside = [f"{m} imports {t}" for m, imported in graph.items() if room_of(m) != "engine.cli"
               for t in imported if room_of(t) == "engine.cli"]
    assert outside == []


def test_every_room_is_a_room_and_none_is_crowded():
    engine = ROOT / "engine"
    top = sorted(p.name for p in engine.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= TOP_LEVEL_MODULES, f"engine/ has {len(top)} modules of its own: {top}"
    rooms = sorted(p for p in engine.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert {f"engine.{r.name}" for r in rooms} == {k for k in ALLOWED if k.startswith("engine.")}, \
        "a new room needs its arrows in ALLOWED"
    for room in rooms:
        assert (room / "__init__.py").is_file(), f"{room.name}/ has no __init__.py"
        doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"{room.name}/__init__.py: say what the room holds and what it may import"
        count = len([p for p in room.glob("*.py") if p.name not in ("__init__.py", "__main__.py")])
        assert count <= ROOM_MODULES, f"{room.name}/ has {count} modules: split it into rooms"


# The checks themselves, on a small tree made for them: each must catch what it is there for.


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    root = _tree(tmp_path, {
        "engine/__init__.py": "",
        "engine/store/__init__.py": "",
        "engine/store/a.py": "from . import b\n",
        "engine/store/b.py": "def later():\n    from .c import thing\n",
        "engine/store/c.py": "from engine.store.a import x\n",
        "engine/store/d.py": "from .a import x\n",
    })
    assert cycles(import_graph(root, ("engine",))) == [["engine.store.a", "engine.store.b", "engine.store.c"]]


def test_an_import_against_the_arrows_is_found(tmp_path):
    root = _tree(tmp_path, {
        "engine/__init__.py": "",
        "engine/core/__init__.py": "",
        "engine/core/step.py": "def f():\n    from ..daemon.worker import Worker\n",
        "engine/daemon/__init__.py": "",
        "engine/daemon/worker.py": "from ..core.step import f\nfrom engine.cli import app\n",
        "engine/cli/__init__.py": "",
        "journeys/__init__.py": "",
        "connectors/__init__.py": "",
    })
    graph = import_graph(root)
    problems = wrong_way(graph, root)
    assert len(problems) == 2
    assert problems[0].startswith("engine/core/step.py:2: engine.core.step imports engine.daemon.worker")
    assert problems[1].startswith("engine/daemon/worker.py:2: engine.daemon.worker imports engine.cli")

