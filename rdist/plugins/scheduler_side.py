"""The scheduler's plugins: where they come from, and calling their hooks.

The scheduler never unpickles what clients send, so its plugins come from its own
configuration, resolved by :func:`load_plugins`:

- ``rdist scheduler --plugin package.module:factory`` (repeatable);
- ``scheduler.plugins`` in the config file (or ``RDIST_SCHEDULER__PLUGINS``, comma separated);
- every entry point of the group ``rdist.scheduler_plugins`` of the installed packages.

``factory`` names a SchedulerPlugin instance, or a class or function that makes one when
called without arguments. A standby loads the same from its own configuration, so it has
the same plugins when it takes over. ``client.register_plugin(scheduler_plugin)`` is
accepted only by a scheduler started with ``--accept-client-plugins``; it keeps such
plugins in Redis (``plugins:scheduler``), where a standby started the same way finds them.

Hooks are called by the scheduler's shell (:mod:`rdist.scheduler.hooks`) from the events
it handled and the transitions its state machine logged; with no plugin, nothing is looked
at. A hook that raises is logged and ignored.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Any

from rdist.plugins.base import (
    SchedulerPlugin,
    call_hook,
    has_hook,
    kind_of,
    plugin_name,
    run_hook,
)
from rdist.plugins.worker_side import entries_after
from rdist.protocol import serialize, wire

log = logging.getLogger("rdist.plugins")

ENTRY_POINT_GROUP = "rdist.scheduler_plugins"

REFUSED = (
    "this scheduler does not accept plugins from clients: it never unpickles what clients "
    "send. Configure the plugin on the scheduler instead (rdist scheduler --plugin "
    "package.module:factory, 'scheduler: {{plugins: [...]}}' in the config file, or an "
    "entry point in the group {group!r}), or start the scheduler with "
    "--accept-client-plugins to accept registrations like this one ({name!r})"
)


class PluginConfigError(ValueError):
    """A configured scheduler plugin cannot be loaded; the message says which and why."""


def load_spec(spec: str) -> tuple[str, Any]:
    """``package.module:attribute`` -> (name, plugin)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise PluginConfigError(f"scheduler plugin {spec!r} must look like package.module:factory")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise PluginConfigError(f"scheduler plugin {spec!r} cannot be loaded: {exc}") from exc
    return _made(spec, target, attribute.rpartition(".")[2])


def _made(origin: str, target: Any, default_name: str) -> tuple[str, Any]:
    plugin = target
    if isinstance(target, type) or (callable(target) and not _is_plugin(target)):
        try:
            plugin = target()
        except Exception as exc:
            raise PluginConfigError(
                f"scheduler plugin {origin!r}: calling {default_name}() failed: {exc}"
            ) from exc
    if not _is_plugin(plugin):
        raise PluginConfigError(
            f"scheduler plugin {origin!r} gave {type(plugin).__name__}, which is no "
            "SchedulerPlugin (subclass rdist.SchedulerPlugin)"
        )
    return plugin_name(plugin, getattr(plugin, "name", None) or default_name), plugin


def _is_plugin(obj: Any) -> bool:
    try:
        return not isinstance(obj, type) and kind_of(obj) == "scheduler"
    except TypeError:
        return False


def entry_point_plugins() -> Iterator[tuple[str, Any]]:
    """The plugins of the ``rdist.scheduler_plugins`` entry points; a broken one is logged
    and skipped (it is no setting of ours to fix)."""
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            _, plugin = _made(f"entry point {entry.name}", entry.load(), entry.name)
        except Exception:
            log.exception("scheduler plugin entry point %r cannot be loaded: skipped", entry.name)
            continue
        yield entry.name, plugin


def load_plugins(specs: Iterable[str] = (), entry_points: bool = True) -> list[tuple[str, Any]]:
    """The configured plugins: ``specs`` (PluginConfigError when one cannot be loaded),
    then the entry points."""
    found = [load_spec(spec) for spec in dict.fromkeys(s.strip() for s in specs if s.strip())]
    if entry_points:
        found += list(entry_point_plugins())
    return found


class SchedulerPlugins:
    """The plugins of one scheduler process."""

    def __init__(
        self, plugins: Iterable[tuple[str, Any]] = (), accept_client_plugins: bool = False
    ) -> None:
        self.accept_client_plugins = accept_client_plugins
        self._plugins: dict[str, Any] = {}
        self._watchers: list[Any] = []
        #: any plugin at all: the shell looks at events and transitions only then
        self.active = False
        self._scheduler: Any = None  #: while leading (``start`` was called)
        for name, plugin in plugins:
            self.add(plugin, name)

    def add(self, plugin: Any, name: str | None = None, start: bool = True) -> str:
        """Add a plugin (replacing one of the same name); started at once when leading
        (unless ``start`` is False: the caller started it)."""
        name = plugin_name(plugin, name)
        old = self._plugins.pop(name, None)
        if old is not None and self._scheduler is not None:
            call_hook(old, "close")
        self._plugins[name] = plugin
        self._rewatch()
        if start and self._scheduler is not None:
            call_hook(plugin, "start", self._scheduler)
        return name

    def remove(self, name: str) -> None:
        plugin = self._plugins.pop(name, None)
        self._rewatch()
        if plugin is not None and self._scheduler is not None:
            call_hook(plugin, "close")

    def _rewatch(self) -> None:
        self._watchers = [
            p for p in self._plugins.values() if has_hook(p, "transition", SchedulerPlugin)
        ]
        self.active = bool(self._plugins)

    def __contains__(self, name: str) -> bool:
        return name in self._plugins

    def __getitem__(self, name: str) -> Any:
        return self._plugins[name]

    # -- leadership -----------------------------------------------------------------------------
    def start(self, scheduler: Any) -> None:
        """This process leads now: load the client plugins it accepts, start them all."""
        if self.accept_client_plugins:
            for name, (_, blob) in scheduler.store.plugins.all("scheduler").items():
                try:
                    self._plugins[name] = serialize.loads([blob])
                except serialize.SerializationError:
                    log.exception("client scheduler plugin %r cannot be unpickled", name)
            self._rewatch()
        self._scheduler = scheduler
        for plugin in list(self._plugins.values()):
            call_hook(plugin, "start", scheduler)

    def close(self) -> None:
        if self._scheduler is None:
            return
        self._scheduler = None
        for plugin in list(self._plugins.values()):
            call_hook(plugin, "close")

    # -- hooks ----------------------------------------------------------------------------------
    def call(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for plugin in list(self._plugins.values()):
            if has_hook(plugin, hook, SchedulerPlugin):
                call_hook(plugin, hook, *args, **kwargs)

    def transitions(self, log_: Any, last: Any) -> None:
        """The transition log's entries after ``last``, to every ``transition`` hook."""
        if not self._watchers:
            return
        new = list(entries_after(log_, last))
        for plugin in list(self._watchers):
            for key, start, finish, stimulus_id, _ in new:
                try:
                    plugin.transition(key, start.value, finish.value, stimulus_id=stimulus_id)
                except Exception:
                    log.exception("plugin %s: transition failed", type(plugin).__name__)

    # -- clients' plugins -----------------------------------------------------------------------
    def offered(self, scheduler: Any, msg: wire.RegisterSchedulerPlugin) -> wire.PluginReply:
        """A client's ``register_plugin(scheduler_plugin)``: refused unless accepted."""
        if not self.accept_client_plugins:
            text = REFUSED.format(group=ENTRY_POINT_GROUP, name=msg.name)
            return wire.PluginReply(msg.id, "scheduler", False, None, text)
        if msg.idempotent and msg.name in self._plugins:
            return wire.PluginReply(msg.id, "scheduler", True)
        try:
            plugin = serialize.loads([msg.plugin])
            if kind_of(plugin) != "scheduler":
                raise TypeError(f"{type(plugin).__name__} is no SchedulerPlugin")
            if self._scheduler is not None:
                run_hook(plugin, "start", scheduler)  # its failure goes back to the client
        except Exception as exc:
            log.exception("client scheduler plugin %r refused", msg.name)
            text = f"plugin {msg.name!r} failed on the scheduler: {type(exc).__name__}: {exc}"
            return wire.PluginReply(msg.id, "scheduler", False, None, text)
        self.add(plugin, msg.name, start=False)
        scheduler.store.plugins.put("scheduler", msg.name, msg.id, msg.plugin)
        return wire.PluginReply(msg.id, "scheduler", True)
