"""Task functions executed on the workers.

They live in an importable module (not ``__main__``) so both systems' worker
processes can import them by reference; the repository root must be on the
workers' ``sys.path`` (the harness puts it on ``PYTHONPATH``).
"""

import os
import time


def noop(x):
    """Do nothing; used for the scheduler-throughput workload."""
    return None


def inc(x):
    """Add one; used for round-trip latency and the dependency chain."""
    return x + 1


def worker_pid(tag):
    """Return the worker's process id (``tag`` only makes each call distinct)."""
    return os.getpid()


def make_array(nbytes, fill):
    """Return a float64 array of ``nbytes`` bytes, every element ``fill``."""
    import numpy as np

    a = np.empty(nbytes // 8, dtype=np.float64)
    a.fill(fill)  # touch every page so the data really exists
    return a


def consume(a):
    """Summarise an array cheaply, reporting which process received it."""
    return {
        "nbytes": int(a.nbytes),
        "first": float(a[0]),
        "last": float(a[-1]),
        "pid": os.getpid(),
    }


def cpu_seconds():
    """CPU seconds (user + system, every thread) this process has used so far."""
    return time.process_time()


def sleep(seconds, tag):
    """Sleep ``seconds`` (``tag`` keeps the calls distinct); the scale runs' idle work."""
    import time

    time.sleep(seconds)
    return tag


def rss_after_gc():
    """This process's resident memory in bytes, after a garbage collection."""
    import gc

    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss
