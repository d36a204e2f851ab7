"""Long-lived threads that outlive their own bugs, and processes that do not live on
half-dead.

Every long-lived thread of rdist (a worker's stream reader, executors, reporter and
heartbeat, the data plane's accept loop, the scheduler's lease renewer, a client's
listener and sender) runs its loop through :func:`supervised`: an exception escaping the
loop is logged with its traceback and the loop starts again after a short pause (longer
while it keeps failing at once, so a loop failing on every turn does not spin). A loop
that *returns* has finished its work: the thread ends.

Should a thread end any other way -- a ``BaseException`` such as ``SystemExit`` raised in
it, or a failure of the supervisor itself -- ``on_death`` runs. For the server roles that
is :func:`exit_process`: the process exits non-zero rather than heartbeat on with a dead
stream reader (its tasks would hang forever); a worker under its nanny is then restarted.
A client, living in its user's process, fails itself instead (see ``rdist.client``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("rdist")

#: The exit status of a process whose supervised thread died.
EXIT_THREAD_DIED = 70
#: Pause before a failed loop runs again: doubled while it keeps failing, up to the cap.
FIRST_PAUSE = 0.05
MAX_PAUSE = 5.0
#: A loop that ran this long before failing starts again after the first pause.
STABLE_SECONDS = 30.0

OnDeath = Callable[[str, "BaseException | None"], None]


def exit_process(name: str, exc: BaseException | None) -> None:
    """``on_death`` of the server roles: exit at once, non-zero (no cleanup can be trusted
    in a process that lost one of its threads)."""
    log.critical("thread %s died (%r): exiting with status %d", name, exc, EXIT_THREAD_DIED)
    logging.shutdown()
    os._exit(EXIT_THREAD_DIED)


def supervised(
    name: str,
    loop: Callable[[], None],
    stop: threading.Event,
    on_death: OnDeath = exit_process,
) -> Callable[[], None]:
    """A thread target that runs ``loop`` until it returns or ``stop`` is set, starting it
    again after an exception escapes it (see the module doc)."""

    def run() -> None:
        pause = FIRST_PAUSE
        died: BaseException | None = None
        finished = False
        try:
            while True:
                started = time.monotonic()
                try:
                    loop()
                    finished = True
                    return
                except Exception as exc:
                    if stop.is_set():
                        finished = True
                        return
                    ran = time.monotonic() - started
                    pause = FIRST_PAUSE if ran >= STABLE_SECONDS else pause
                    log.exception(
                        "thread %s failed (%s: %s); starting it again in %.2f s",
                        name,
                        type(exc).__name__,
                        exc,
                        pause,
                    )
                    if stop.wait(pause):
                        finished = True
                        return
                    pause = min(MAX_PAUSE, pause * 2)
        except BaseException as exc:  # SystemExit and friends end the loop for good
            died = exc
            raise
        finally:
            if not finished and not stop.is_set():
                on_death(name, died)

    run.__name__ = f"supervised_{name.replace('-', '_')}"
    return run


def start_thread(
    name: str,
    loop: Callable[[], None],
    stop: threading.Event,
    on_death: OnDeath = exit_process,
) -> threading.Thread:
    """A daemon thread running ``loop`` under :func:`supervised`, started."""
    thread = threading.Thread(target=supervised(name, loop, stop, on_death), name=name, daemon=True)
    thread.start()
    return thread
