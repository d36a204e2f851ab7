"""Call trees of the sampling profiler: building, merging, and dask's profile shape.

The stored form is the compact node of :mod:`rdist.protocol.wire.diagnostics`
(``[name, filename, line, count, children]``). Everything here is pure: the worker's
profiler builds trees with :class:`TreeBuilder`; readers (``client.profile``, the
performance report, the dashboard) merge the stored batches with :func:`merge` and turn
the result into dask's profile dict with :func:`to_dask`::

    {"identifier": "root", "description": "", "count": n, "children": {
        "f;/path/mod.py;12": {"identifier": ..., "count": ..., "children": {...},
                               "description": {"filename", "name", "line_number", "line"}}}}

which is what ``distributed.profile`` produces (``line`` is the source line of the
function's definition, read with ``linecache`` where the reader has the file, else "").
"""

from __future__ import annotations

import linecache
from collections.abc import Iterable, Mapping
from typing import Any

from rdist.protocol.wire.diagnostics import MAX_DEPTH, MAX_NODES, Node

Frame = tuple[str, str, int]  #: (name, filename, first line of the function)

__all__ = ["Frame", "TreeBuilder", "merge", "merge_into", "new_root", "to_dask", "total"]


def new_root(count: int = 0) -> Node:
    return ["", "", 0, count, []]


def total(node: Node) -> int:
    count: int = node[3]
    return count


class _Live:
    """A node while samples are added: children found by frame in a dict (a stored node
    keeps them in a list, which is what msgpack carries)."""

    __slots__ = ("count", "children")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[Frame, _Live] = {}


class TreeBuilder:
    """Samples of one task group, folded into a call tree.

    ``add(stack)`` takes the frames outermost first; stacks are cut at :data:`MAX_DEPTH`
    and the tree stops growing at ``max_nodes`` (later new frames count on their parent:
    the totals stay right, only the detail is capped)."""

    __slots__ = ("root", "nodes", "max_nodes")

    def __init__(self, max_nodes: int = MAX_NODES) -> None:
        self.root = _Live()
        self.nodes = 1
        self.max_nodes = max_nodes

    def add(self, stack: Iterable[Frame]) -> list[_Live]:
        """Count one sample; returns the nodes it went through (root first), which
        :meth:`add_again` counts once more for the same stack without looking it up."""
        node = self.root
        node.count += 1
        path = [node]
        for depth, frame in enumerate(stack):
            if depth >= MAX_DEPTH:
                break
            child = node.children.get(frame)
            if child is None:
                if self.nodes >= self.max_nodes:
                    break
                child = node.children[frame] = _Live()
                self.nodes += 1
            child.count += 1
            path.append(child)
            node = child
        return path

    @staticmethod
    def add_again(path: list[_Live]) -> None:
        for node in path:
            node.count += 1

    @property
    def samples(self) -> int:
        return self.root.count

    def tree(self) -> Node:
        """The stored form (built iteratively: trees are at most MAX_DEPTH deep, but a
        recursion per node is slower than this loop)."""
        out = new_root(self.root.count)
        pending: list[tuple[_Live, Node]] = [(self.root, out)]
        while pending:
            live, stored = pending.pop()
            for (name, filename, line), child in live.children.items():
                node: Node = [name, filename, line, child.count, []]
                stored[4].append(node)
                pending.append((child, node))
        return out


def merge_into(target: Node, other: Node) -> Node:
    """Add the counts of ``other`` into ``target`` (matching children by frame)."""
    pending = [(target, other)]
    while pending:
        into, source = pending.pop()
        into[3] += source[3]
        index = {(c[0], c[1], c[2]): c for c in into[4]}
        for child in source[4]:
            frame = (child[0], child[1], child[2])
            mine = index.get(frame)
            if mine is None:
                mine = index[frame] = [child[0], child[1], child[2], 0, []]
                into[4].append(mine)
            pending.append((mine, child))
    return target


def merge(trees: Iterable[Node]) -> Node:
    out = new_root()
    for tree in trees:
        merge_into(out, tree)
    return out


def merge_groups(
    groups: Iterable[Mapping[str, Node]], prefix: str | None = None
) -> dict[str, Node]:
    """Per group, the merged tree of several batches' ``groups`` maps (only ``prefix``'s
    group when given)."""
    out: dict[str, Node] = {}
    for mapping in groups:
        for group, tree in mapping.items():
            if prefix is not None and group != prefix:
                continue
            merge_into(out.setdefault(group, new_root()), tree)
    return out


def to_dask(node: Node) -> dict[str, Any]:
    """dask's profile dict of a stored tree (see the module docstring)."""
    out = _dask_node(node, "root", "")
    pending = [(node, out)]
    while pending:
        stored, shaped = pending.pop()
        for child in stored[4]:
            name, filename, line = child[0], child[1], child[2]
            ident = f"{name};{filename};{line}"
            described = {
                "filename": filename,
                "name": name,
                "line_number": line,
                "line": linecache.getline(filename, line).strip() if filename else "",
            }
            shaped["children"][ident] = _dask_node(child, ident, described)
            pending.append((child, shaped["children"][ident]))
    return out


def _dask_node(node: Node, identifier: str, description: Any) -> dict[str, Any]:
    return {
        "identifier": identifier,
        "description": description,
        "count": node[3],
        "children": {},
    }
