"""A nanny's plugins: set up before its first worker starts, added and removed through the
nanny's own stream (``nanny:<id>``), torn down when the nanny exits.

A nanny announces itself in the ``nannies`` hash (refreshed every few seconds, so that
clients registering a plugin know whom to wait for) and reads its stream on a thread of
its own. A plugin whose ``restart`` is true restarts the worker once it is set up (as in
dask: ``Environ`` changes the environment of the next worker process).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from rdist.plugins.base import call_hook, run_hook
from rdist.plugins.worker_side import failure_blob, unpickle_plugin
from rdist.protocol import wire
from rdist.store import RedisStore, connect
from rdist.store.connection import ConnectionErrors
from rdist.supervise import start_thread

log = logging.getLogger("rdist.plugins")

BEAT_SECONDS = 5.0
READ_BLOCK_MS = 1000


class NannyPlugins:
    """The plugins of one nanny, and its presence in Redis."""

    def __init__(self, nanny: Any, url: str, cluster: str) -> None:
        self._nanny = nanny
        self.id = f"nanny-{uuid.uuid4().hex[:16]}"
        self._store: RedisStore = connect(url, cluster)
        self._reader: RedisStore = connect(url, cluster)
        self._plugins: dict[str, Any] = {}
        self._registrations: dict[str, str] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        #: the newest entry of our stream read (the stream is new: all on it is for us)
        self._after = "0-0"

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Announce the nanny, set up what is registered, then listen (before the first
        worker starts: an Environ plugin must reach it)."""
        try:
            self._announce()
            for name, (registration, blob) in self._store.plugins.all("nanny").items():
                self._set_up(name, registration, blob)
        except ConnectionErrors as exc:
            log.warning("nanny %s: cannot read its plugins: %s", self.id, exc)
        # supervised (rdist.supervise): a loop that fails starts again, one that dies for
        # good ends the nanny -- and its worker with it -- rather than leave it half-dead
        start_thread("rdist-nanny-beat", self._beat, self._stop)
        start_thread("rdist-nanny-in", self._listen, self._stop)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for name in list(self._plugins):
                self._remove(name)
        try:
            self._store.plugins.remove_nanny(self.id)
        except ConnectionErrors:
            pass
        for store in (self._store, self._reader):
            store.close()

    def _announce(self) -> None:
        record = wire.NannyRecord(
            socket.gethostname(),
            os.getpid(),
            self._nanny.address or "",
            time.time(),
            sorted(self._plugins),
        )
        self._store.plugins.announce_nanny(self.id, record)

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self._announce()
            except ConnectionErrors as exc:
                log.warning("nanny %s: cannot refresh its record: %s", self.id, exc)

    # -- the stream ----------------------------------------------------------------------------
    def _listen(self) -> None:
        fake = self._reader.url.startswith("fakeredis://")
        while not self._stop.is_set():
            try:
                entries = self._reader.plugins.read_nanny_stream(
                    self.id, self._after, READ_BLOCK_MS
                )
            except ConnectionErrors as exc:
                if self._stop.is_set():  # (stop() closed the connection under our read)
                    break
                log.warning("nanny %s: redis unavailable (%s); retrying", self.id, exc)
                self._stop.wait(0.5)
                continue
            if not entries and fake:
                self._stop.wait(0.05)  # fakeredis does not block
            for entry_id, payload in entries:
                self._after = entry_id  # first: an entry whose handling fails is not re-read
                self._handle(entry_id, payload)

    def _handle(self, entry_id: str, payload: Any) -> None:
        stream = self._store.keys.nanny_stream(self.id)
        try:
            messages = wire.NANNY.decode(payload, stream)
        except wire.MalformedMessage as exc:
            log.error("nanny %s: setting aside entry %s: %s", self.id, entry_id, exc)
            self._store.streams.dead_letter(stream, entry_id.encode(), payload, str(exc))
            return
        for msg in messages:
            if isinstance(msg, wire.PluginAdded):
                threading.Thread(target=self._add, args=(msg,), daemon=True).start()
            elif isinstance(msg, wire.PluginRemoved):
                with self._lock:
                    self._remove(msg.name)
                self._reply(msg, None)

    def _reply(self, msg: wire.PluginAdded | wire.PluginRemoved, error: bytes | None) -> None:
        if msg.client:
            reply = wire.PluginReply(msg.id, self.id, error is None, error)
            try:
                self._store.streams.to_client(msg.client, reply)
            except ConnectionErrors as exc:
                log.warning("nanny %s: cannot answer %s: %s", self.id, msg.client, exc)

    def _add(self, msg: wire.PluginAdded) -> None:
        error, plugin = self._set_up(msg.name, msg.id, msg.plugin)
        self._reply(msg, error)
        if error is None and plugin is not None and getattr(plugin, "restart", False):
            self._nanny.restart_worker()

    # -- plugins -------------------------------------------------------------------------------
    def _set_up(self, name: str, registration: str, blob: bytes) -> tuple[bytes | None, Any]:
        """The failure (pickled) or None, and the plugin when it is newly set up."""
        with self._lock:
            if self._registrations.get(name) == registration:
                return None, None
            try:
                plugin = unpickle_plugin(blob)
                self._remove(name)
                run_hook(plugin, "setup", self._nanny)
            except Exception as exc:
                log.exception("nanny %s: plugin %r failed to set up", self.id, name)
                return failure_blob(exc), None
            self._plugins[name] = plugin
            self._registrations[name] = registration
            return None, plugin

    def _remove(self, name: str) -> None:
        plugin = self._plugins.pop(name, None)
        self._registrations.pop(name, None)
        if plugin is not None:
            call_hook(plugin, "teardown", self._nanny)

    def __contains__(self, name: str) -> bool:
        return name in self._plugins
