"""Dask collections on rdist: ``client.get`` for what ``dask.compute`` hands over, and
``client.compute`` / ``client.persist``.

dask stays optional: it is imported only when a collection (or an expression) arrives.
Priorities come from ``dask.order`` (tasks are sent in that order; the scheduler breaks
ties by position), and dask annotations (``retries``, ``resources``, ``priority``,
``workers``, ``allow_other_workers``) become per-task scheduling metadata. DataFrame
shuffles use the task-based method unless ``shuffle_method="p2p"`` is asked for: then they
run through rdist's own exchange (:mod:`rdist.shuffle`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rdist.client import graph, spans, validate
from rdist.protocol import spec, wire

if TYPE_CHECKING:
    from rdist.client.future import Future
    from rdist.client.submit import Submitter

ANNOTATIONS = ("retries", "resources", "priority", "workers", "allow_other_workers")


@contextmanager
def task_shuffle() -> Iterator[None]:
    """DataFrame shuffles built meanwhile use the task-based method (unless configured)."""
    import dask

    if dask.config.get("dataframe.shuffle.method", None):
        yield
        return
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        yield


def prefer_task_shuffle() -> None:
    """Called when a Client starts: if dask is loaded and no shuffle method is configured,
    choose ``tasks`` (dask would pick ``disk``, which needs one machine's disk)."""
    dask = sys.modules.get("dask")
    if (
        dask is not None
        and hasattr(dask, "config")
        and not dask.config.get("dataframe.shuffle.method", None)
    ):
        dask.config.set({"dataframe.shuffle.method": "tasks"})


def materialize(dsk: Any) -> tuple[dict[Hashable, Any], dict[str, dict[Hashable, Any]]]:
    """A graph dict and annotations by kind (``{"retries": {key: 2}}``) from an expression,
    a HighLevelGraph or a plain mapping."""
    annotations: dict[str, dict[Hashable, Any]] = {}
    if hasattr(dsk, "__dask_annotations__") and hasattr(dsk, "__dask_graph__"):
        for kind, values in (dsk.__dask_annotations__() or {}).items():
            annotations.setdefault(kind, {}).update(values)
    if hasattr(dsk, "__dask_graph__"):
        dsk = dsk.__dask_graph__()
    layers = getattr(dsk, "layers", None)
    if isinstance(layers, Mapping):  # a HighLevelGraph: annotations live on its layers
        for layer in layers.values():
            for kind, value in (getattr(layer, "annotations", None) or {}).items():
                per_key = annotations.setdefault(kind, {})
                for key in layer.keys():
                    per_key[key] = value(key) if callable(value) else value
    return dict(dsk), annotations


def graph_order(dsk: Mapping[Hashable, Any]) -> dict[Hashable, int]:
    """``dask.order`` ranks (lower runs first), or the graph's own order without dask."""
    if "dask" in sys.modules:
        try:
            import dask.order

            order: Any = dask.order.order  # typed for dask's own Key, any hashable works
            return {k: int(v) for k, v in order(dsk).items()}
        except Exception:  # a graph dask cannot order (e.g. futures as values)
            pass
    return {k: i for i, k in enumerate(dsk)}


def submit_graph(
    submitter: Submitter,
    dsk: Any,
    wanted: list[Hashable],
    *,
    workers: Any = None,
    resources: dict[str, float] | None = None,
    retries: int | None = None,
    priority: int = 0,
    allow_other_workers: bool = False,
) -> dict[str, Future]:
    """Send graph ``dsk``; returns futures for the ``wanted`` keys. Every key, keyword and
    annotation is checked first (TypeError/ValueError naming it), and a cycle refused."""
    dsk, annotations = materialize(dsk)
    dsk = _exchanges_rewritten(submitter, dsk, annotations)
    names = graph.key_names(dsk)
    by_name = {name: key for key, name in names.items()}
    unknown = [k for k in wanted if graph.key_name(k) not in by_name]
    if unknown:
        raise KeyError(f"keys {unknown} are not in the graph")
    call = _call_options(workers, resources, retries, priority, allow_other_workers)
    defaults = _global_annotations()
    keep = {graph.key_name(k) for k in wanted}
    nodes, scattered = graph.graph_tasks(dsk, keep=keep, names=names)
    order = graph_order(dsk) if len(nodes) > 1 else {}
    nodes.sort(key=lambda n: order.get(by_name.get(n.key), 0))
    rows: list[wire.TaskRow] = []
    specs: dict[str, bytes] = {}
    tag = spans.current()
    plain = _plain_row(call) if not (annotations or defaults) else None
    for key, blob, deps in nodes:
        if plain is not None:  # no annotations anywhere: every row takes the call's options
            rows.append(plain(key, deps))
        else:
            original = by_name.get(key, key)
            note = {
                kind: values[original] for kind, values in annotations.items() if original in values
            }
            rows.append(_row(key, deps, note, defaults, call))
        specs[key] = spec.pack_spec(b"", blob, spec.GRAPH_NODE, tag)
    wanted_names = list(dict.fromkeys(graph.key_name(k) for k in wanted))
    return submitter.send_graph(rows, specs, wanted_names, scattered, call["workers"])


def _exchanges_rewritten(
    submitter: Submitter, dsk: dict[Hashable, Any], annotations: dict[str, dict[Hashable, Any]]
) -> dict[Hashable, Any]:
    """dask's P2P shuffle tasks become rdist's exchange (:mod:`rdist.shuffle`), owners chosen
    among the workers alive now."""
    from rdist.shuffle import rewrite

    if not rewrite.has_p2p(dsk):
        return dsk
    client = submitter._client
    workers = lambda: list(client.scheduler_info()["workers"])  # noqa: E731
    return rewrite.rewrite_p2p(dsk, annotations, workers, graph.key_name)


def _call_options(
    workers: Any, resources: Any, retries: Any, priority: Any, allow_other_workers: Any
) -> dict[str, Any]:
    """The keywords of a ``get``/``compute``/``persist`` call, checked."""
    return {
        "workers": validate.workers(workers),
        "resources": validate.resources(resources),
        "retries": validate.retries(retries),
        "priority": validate.priority(priority),
        "allow_other_workers": validate.flag(allow_other_workers, "allow_other_workers"),
    }


def _row(
    key: str,
    deps: list[str],
    note: dict[str, Any],
    defaults: dict[str, Any],
    call: dict[str, Any],
) -> wire.TaskRow:
    """A task's row: its own annotation, else a global one, else the call's keyword."""

    def option(name: str, check: Callable[[Any, str], Any]) -> Any:
        if name in note:
            return check(note[name], f"annotation {name!r} of task {key!r}")
        if name in defaults:
            return check(defaults[name], f"annotation {name!r}")
        return call[name]

    return wire.TaskRow(
        key,
        deps,
        option("priority", validate.priority),
        option("workers", validate.workers),
        option("allow_other_workers", validate.flag),
        option("retries", validate.retries),
        option("resources", validate.resources),
    )


def _plain_row(call: dict[str, Any]) -> Callable[[str, list[str]], wire.TaskRow]:
    """The row of a task without annotations: the call's options (checked once)."""
    options = (
        call["priority"],
        call["workers"],
        call["allow_other_workers"],
        call["retries"],
        call["resources"],
    )

    def row(key: str, deps: list[str]) -> wire.TaskRow:
        return wire.TaskRow(key, deps, *options)

    return row


def _global_annotations() -> dict[str, Any]:
    dask = sys.modules.get("dask")
    if dask is None or not hasattr(dask, "get_annotations"):
        return {}
    return {k: v for k, v in dask.get_annotations().items() if k in ANNOTATIONS}


def _finalized(collections: list[Any], optimize_graph: bool) -> Any:
    """The expression ``dask.compute`` would run for ``collections`` (one output key each)."""
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr

    with task_shuffle():
        expr = collections_to_expr(collections, optimize_graph)
        return FinalizeCompute(expr).optimize()  # type: ignore[no-untyped-call]


def compute(
    submitter: Submitter, collections: Any, optimize_graph: bool = True, **kwargs: Any
) -> Any:
    """One future per collection (or per element of a list of them), for its final value."""
    single = not isinstance(collections, (list, tuple))
    items = [collections] if single else list(collections)
    out: list[Any] = []
    for item in items:
        if not hasattr(item, "__dask_graph__"):
            out.append(item)  # futures and plain values pass through, as in dask
            continue
        expr = _finalized([item], optimize_graph)
        keys = _flatten(expr.__dask_keys__())
        futures = submit_graph(submitter, expr, keys, **kwargs)
        out.append(futures[graph.key_name(keys[0])])
    if single:
        return out[0]
    return type(collections)(out) if isinstance(collections, tuple) else out


def persist(
    submitter: Submitter, collections: Any, optimize_graph: bool = True, **kwargs: Any
) -> Any:
    """The collection(s) again, each backed by futures held by the submitter's client."""
    from dask.base import collections_to_expr

    single = not isinstance(collections, (list, tuple))
    items = [collections] if single else list(collections)
    out = []
    for item in items:
        if not hasattr(item, "__dask_graph__"):
            out.append(item)
            continue
        with task_shuffle():
            expr = collections_to_expr([item], optimize_graph).optimize()
        (keys,) = expr.__dask_keys__()  # type: ignore[no-untyped-call]
        flat = _flatten(keys)
        futures = submit_graph(submitter, expr, flat, **kwargs)
        rebuild, args = item.__dask_postpersist__()
        out.append(rebuild({k: futures[graph.key_name(k)] for k in flat}, *args))
    if single:
        return out[0]
    return type(collections)(out) if isinstance(collections, tuple) else out


def _flatten(keys: Any) -> list[Hashable]:
    if isinstance(keys, list):
        return [k for item in keys for k in _flatten(item)]
    return [keys]


def flatten_keys(keys: Any) -> list[Hashable]:
    """The keys of a nested list of keys (``client.get``'s ``keys``), in order."""
    return _flatten(keys)


def shape_like(keys: Any, by_key: Mapping[str, Any]) -> Any:
    """The values of ``keys`` in the nesting of ``keys``."""
    if isinstance(keys, list):
        return [shape_like(k, by_key) for k in keys]
    return by_key[graph.key_name(keys)]
