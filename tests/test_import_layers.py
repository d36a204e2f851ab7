"""rdist's packages form layers: no import cycle between them, not even one hidden in a
function, and only the store talks to Redis.

The import graph is read from the source with ``ast`` -- every import statement counts,
at module level, inside functions and under ``TYPE_CHECKING`` alike -- so a cycle is
found even when no test happens to run the function that closes it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rdist"
#: The units whose imports must not go round in a circle.
LAYERED = (
    "rdist.client",
    "rdist.worker",
    "rdist.scheduler",
    "rdist.cluster",
    "rdist.web",
    "rdist.store",
    "rdist.protocol",
    "rdist.comm",
)
#: Modules that may send Redis commands themselves (everything else uses the façades).
REDIS_OWNERS = ("rdist.store",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """``(module, line)`` of every import in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(), package, known)


def imports_in(source: str, package: str, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """``(module, line)`` of every import statement anywhere in ``source`` (a module of
    ``package``); ``from pkg import mod`` names ``pkg.mod`` when that is a module of rdist."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                yield (target if target in known else base), node.lineno


def unit(module: str) -> str:
    """The layer a module belongs to: its subpackage, or itself for a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> unit it imports -> where (``module:line``), for rdist's own imports."""
    known = modules()
    graph: dict[str, dict[str, list[str]]] = {}
    for name, path in known.items():
        for target, line in imported(path, known):
            if target != "rdist" and not target.startswith("rdist."):
                continue
            source, dest = unit(name), unit(target)
            if source != dest:
                graph.setdefault(source, {}).setdefault(dest, []).append(f"{name}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]], among: tuple[str, ...]) -> list[str]:
    """A cycle through units of ``among`` (as a path that ends where it starts), or []."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return []
        for nxt in graph.get(node, {}):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return []

    for start in among:
        cycle = visit(start, [])
        if cycle and any(u in among for u in cycle):
            return cycle
    return []


def describe(graph: dict[str, dict[str, list[str]]], cycle: list[str]) -> str:
    return "\n".join(
        f"  {a} -> {b}  ({', '.join(graph[a][b][:3])})" for a, b in zip(cycle, cycle[1:])
    )


def test_no_import_cycle_between_the_packages_even_inside_functions() -> None:
    graph = unit_graph()
    cycle = find_cycle(graph, LAYERED)
    assert not cycle, "import cycle:\n" + describe(graph, cycle)


def test_the_client_imports_neither_the_worker_nor_the_cluster() -> None:
    imports = unit_graph().get("rdist.client", {})
    assert "rdist.worker" not in imports, imports.get("rdist.worker")
    assert "rdist.cluster" not in imports, imports.get("rdist.cluster")


def test_nothing_below_the_cluster_imports_it() -> None:
    graph = unit_graph()
    below = [u for u in LAYERED if u != "rdist.cluster"]
    offenders = {u: graph[u]["rdist.cluster"] for u in below if "rdist.cluster" in graph.get(u, {})}
    assert not offenders


def test_the_cycle_finder_finds_a_cycle_hidden_two_steps_away() -> None:
    graph = {"a": {"b": ["a.x:1"]}, "b": {"c": ["b.y:2"]}, "c": {"a": ["c.z:3"]}}
    assert find_cycle(graph, ("a", "b", "c")) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ["a.x:1"]}}, ("a", "b")) == []


def test_imports_inside_functions_and_type_checking_blocks_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from rdist.worker.server import Worker\n"
        "def start():\n"
        "    from rdist.cluster import LocalCluster\n"
        "    from . import future\n"
        "    import rdist.scheduler.state\n"
    )
    found = [m for m, _ in imports_in(source, "rdist.client", modules())]
    assert found == [
        "typing",
        "rdist.worker.server",
        "rdist.cluster",
        "rdist.client.future",
        "rdist.scheduler.state",
    ]


def test_only_the_store_imports_redis() -> None:
    known = modules()
    offenders = [
        f"{name}:{line}"
        for name, path in known.items()
        if not name.startswith(REDIS_OWNERS)
        for target, line in imported(path, known)
        if target == "redis" or target.startswith("redis.")
    ]
    assert not offenders


@pytest.mark.parametrize("package", ["rdist.client", "rdist.web", "rdist.cluster", "rdist.cli"])
def test_client_web_cluster_and_cli_send_no_redis_commands_of_their_own(package: str) -> None:
    """They reach Redis through the store's façades only: no ``store.redis`` anywhere."""
    offenders = [
        f"{name}:{node.lineno}"
        for name, path in modules().items()
        if name == package or name.startswith(package + ".")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "redis"
    ]
    assert not offenders


@pytest.mark.parametrize("package", LAYERED)
def test_each_package_imports_on_its_own_in_a_fresh_interpreter(package: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {package}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
