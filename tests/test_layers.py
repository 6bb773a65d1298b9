"""No import circles between the modules of one package.

Every package under pipeline/ and models/ (and those two themselves) is read
with `ast`: every import counts, including those under `if TYPE_CHECKING:`
and inside functions, because a circle hidden that way is still a circle in
the design (two modules that cannot be understood, or changed, one without
the other). The nodes of a package's graph are its direct children, modules
and subpackages (an import from anywhere inside a subpackage is the
subpackage's), plus `__init__` when a module imports a name from the
package itself. The layers between packages are `.importlinter`'s business.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("pipeline", "models")
INIT = "__init__"

Edges = dict[str, dict[str, str]]  # child: imported child: where ("path:line")


def packages() -> list[Path]:
    return sorted(init.parent for root in ROOTS for init in (REPO / root).rglob(f"{INIT}.py"))


def dotted(directory: Path) -> str:
    return ".".join(directory.relative_to(REPO).parts)


def children(package: Path) -> set[str]:
    names = {p.stem for p in package.glob("*.py")}
    names |= {p.name for p in package.iterdir() if (p / f"{INIT}.py").is_file()}
    return names


def imported(path: Path, package: str = "") -> Iterator[tuple[str, str | None, int]]:
    """(module, name or None, line) of every import in the file, wherever it is; relative
    imports resolved against `package` (by default the file's own)."""
    parts = (package or dotted(path.parent)).split(".")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                yield module, alias.name, node.lineno


def graph(package: Path) -> Edges:
    """The package's children and which of them each imports (see the module docstring)."""
    name, kids = dotted(package), children(package)
    edges: Edges = {kid: {} for kid in kids}
    for path in sorted(package.rglob("*.py")):
        inside = path.relative_to(package).parts
        source = Path(inside[0]).stem if len(inside) == 1 else inside[0]
        if source not in kids:  # a folder without __init__.py: not part of the package
            continue
        for module, member, line in imported(path):
            if module == name:
                target = member if member in kids else INIT
            elif module.startswith(f"{name}."):
                target = module[len(name) + 1 :].split(".")[0]
            else:
                continue
            if target != source and target in kids:
                edges[source].setdefault(target, f"{path.relative_to(REPO)}:{line}")
    return edges


def cycles(edges: Edges) -> list[tuple[list[str], list[str]]]:
    """Per strongly connected component of more than one node (Tarjan): a shortest circle
    through it, and all its members (every one of them is on some circle)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[tuple[list[str], list[str]]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append((circle(edges, set(component)), sorted(component)))

    for node in sorted(edges):
        if node not in order:
            visit(node)
    return found


def circle(edges: Edges, component: set[str]) -> list[str]:
    """A shortest path from the component's first node back to itself (breadth first)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node]):
                if nxt not in component or nxt in came_from:
                    continue
                came_from[nxt] = node
                if nxt == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(nxt)
        frontier = following
    raise AssertionError(f"no circle through {start} in {sorted(component)}")


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """TYPE_CHECKING and function-level imports count; circles are found and shown."""
    edges: Edges = {
        "a": {"b": "a.py:1"},
        "b": {"c": "b.py:9"},
        "c": {"a": "c.py:3"},
        "d": {"a": "d.py:1"},
    }
    assert cycles(edges) == [(["a", "b", "c", "a"], ["a", "b", "c"])]
    assert cycles({"a": {"b": ""}, "b": {}}) == []
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from x.y import Z\n"
        "def f():\n    import p.q\n    from . import r\n"
    )
    seen = {(m, n) for m, n, _ in imported(source, "pkg")}
    assert {("x.y", "Z"), ("p.q", None), ("pkg", "r")} <= seen
    recommender = graph(REPO / "pipeline" / "recommender")  # the graph is read, not empty
    assert {"common", "duplicates", "prompts"} <= set(recommender["engine"])
    assert "recommender" in graph(REPO / "pipeline")["wiring"]


def test_no_import_cycles_inside_packages() -> None:
    problems = []
    for package in packages():
        edges = graph(package)
        for loop, members in cycles(edges):
            steps = [f"  {a} -> {b}  ({edges[a][b]})" for a, b in itertools.pairwise(loop)]
            problems.append(
                f"{dotted(package)}: {' -> '.join(loop)}\n"
                + "\n".join(steps)
                + f"\n  all modules on circles here: {', '.join(members)}"
            )
    assert not problems, "import circles between sibling modules:\n" + "\n".join(problems)
