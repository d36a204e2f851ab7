"""Child-process helpers shared by the embedded Redis and LocalCluster."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1

#: Exit status of a worker that was retired (``client.retire_workers``, ``shutdown``):
#: it left on purpose, so its nanny exits too instead of starting a new worker.
EXIT_RETIRED = 79


def tune_gc() -> None:
    """For a scheduler or worker process: collect young objects far less often. Each
    task allocates a few dozen objects; with the default threshold (700) the collector
    runs every few tasks and walks the whole young generation, a third of the
    scheduler's time per task. Freezing moves start-up objects out of every later walk."""
    import gc

    gc.collect()
    gc.freeze()
    # young generations stay small (a collection walks at most ~250k objects), full ones
    # practically never: walking a graph of a million tasks holds the GIL for seconds,
    # long enough to lose the scheduler's lease (big batches also freeze what they made)
    gc.set_threshold(50_000, 5, 1000)


def die_with_parent() -> None:
    """``preexec_fn``: on Linux the child gets SIGTERM when its parent dies (no orphans)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass
