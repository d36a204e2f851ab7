"""Which client is in charge: dask's default scheduler, ``default_client`` and
``Client.current``.

As in dask.distributed, a new ``Client`` (``set_as_default=True``) becomes the scheduler of
plain ``x.compute()``, ``x.persist()`` and ``dask.compute(...)`` -- collections built before it
included -- until it closes; then the client made before it takes over again, and once the
last one has closed dask's own setting returns. dask.distributed names itself in dask's
config with the string ``"dask.distributed"``, which dask resolves by importing
``distributed``; we put :data:`DEFAULT_SCHEDULER` there instead, a small callable that asks
this module for the client of the moment (it also offers ``persist``, which dask calls on a
scheduler that has one, so persisted collections stay on the cluster).

Importing dask costs about a third of a second, so a client does not import it: when dask is
already imported the setting is made at once, otherwise a one-shot import hook makes it the
moment something imports ``dask.config`` -- before that import returns, so no collection can
be computed in between.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.abc
import importlib.util
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rdist.client.client import Client

__all__ = ["DEFAULT_SCHEDULER", "as_current", "current", "default_client", "forget", "promote"]

_lock = threading.Lock()
#: the clients made with ``set_as_default``, the newest last
_defaults: list[weakref.ref[Client]] = []
#: dask's ``scheduler`` setting before our first default client: (was it set, its value)
_before: tuple[bool, Any] | None = None
#: the client of an ``as_current()`` block (per thread and per asyncio task)
_current: contextvars.ContextVar[Client | None] = contextvars.ContextVar(
    "rdist_current_client", default=None
)


class _DefaultScheduler:
    """dask's ``scheduler`` while an rdist client is the default: runs graphs on it."""

    __slots__ = ()

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        return default_client().get(dsk, keys, **kwargs)

    def persist(self, collections: Any, **kwargs: Any) -> Any:
        return default_client().persist(collections, **kwargs)

    # dask copies and pickles its config (e.g. to process pools): stay the one instance
    def __copy__(self) -> _DefaultScheduler:
        return self

    def __deepcopy__(self, memo: Any) -> _DefaultScheduler:
        return self

    def __reduce__(self) -> str:
        return "DEFAULT_SCHEDULER"

    def __repr__(self) -> str:
        return "<rdist default client scheduler>"


DEFAULT_SCHEDULER = _DefaultScheduler()


def promote(client: Client) -> None:
    """Make ``client`` the default (and dask's scheduler) until it closes."""
    with _lock:
        _defaults.append(weakref.ref(client))
    dask_config = sys.modules.get("dask.config")
    if dask_config is not None:
        _take_over(dask_config)
    elif importlib.util.find_spec("dask") is not None:
        _HOOK.install()


def _take_over(dask_config: Any) -> None:
    """Put :data:`DEFAULT_SCHEDULER` into dask's config while a default client runs,
    remembering the setting it replaces."""
    global _before
    with _lock:
        if _before is None and any(ref() is not None for ref in _defaults):
            _before = ("scheduler" in dask_config.config, dask_config.config.get("scheduler"))
            dask_config.set({"scheduler": DEFAULT_SCHEDULER})


class _WhenDaskConfigImported(importlib.abc.MetaPathFinder):
    """A one-shot import hook: finds ``dask.config`` with the finders after it, and runs
    :func:`_take_over` right after the module has executed."""

    def __init__(self) -> None:
        self._installed = False

    def install(self) -> None:
        with _lock:
            if not self._installed:
                self._installed = True
                sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        with _lock:
            if self._installed:
                self._installed = False
                with contextlib.suppress(ValueError):
                    sys.meta_path.remove(self)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "dask.config":
            return None
        self.uninstall()
        for finder in sys.meta_path:
            spec = (
                finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            )
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            _take_over(module)

        # this loader instance serves this one import only
        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_HOOK = _WhenDaskConfigImported()


def forget(client: Client) -> None:
    """``client`` closes: the previous default takes over, or dask's own setting returns."""
    global _before
    dask_config = sys.modules.get("dask.config")
    with _lock:
        _defaults[:] = [ref for ref in _defaults if ref() not in (None, client)]
        still_default = bool(_defaults)
    if not still_default:
        _HOOK.uninstall()
    with _lock:
        if still_default or _before is None:
            return
        was_set, value = _before
        _before = None
        if dask_config is None or dask_config.config.get("scheduler") is not DEFAULT_SCHEDULER:
            return  # someone set their own since: theirs stays
        if was_set:
            dask_config.set({"scheduler": value})
        else:
            dask_config.config.pop("scheduler", None)


def default_client(c: Client | None = None) -> Client:
    """``c`` if given, else the client of an ``as_current()`` block, else the newest running
    default client; ``ValueError`` when there is none (dask's ``default_client``)."""
    if c is not None:
        return c
    client = current(allow_global=True)
    if client is None:
        raise ValueError(
            "No client found: create one with rdist.Client(...) (or use it in "
            "`with client.as_current():`)"
        )
    return client


def current(allow_global: bool = True) -> Client | None:
    """The client in charge here: the ``as_current()`` one, else (``allow_global``) the
    newest running default client."""
    client = _current.get()
    if client is not None and client.status == "running":
        return client
    if not allow_global:
        return None
    with _lock:
        for ref in reversed(_defaults):
            candidate = ref()
            if candidate is not None and candidate.status == "running":
                return candidate
    return None


@contextlib.contextmanager
def as_current(client: Client) -> Iterator[Client]:
    """``client`` is the current one inside the block (this thread or asyncio task only)."""
    token = _current.set(client)
    try:
        yield client
    finally:
        _current.reset(token)
