"""Logs on a real cluster: a real redis-server, a scheduler and a worker under its nanny as
processes started as an operator would (``python -m rdist ... --log-level info``).

What an operator reads on the roles' stderr (start-up lines, workers joining and leaving,
no closed client reported lost), and what a client reads through Redis
(``get_worker_logs``, ``get_scheduler_logs``, ``forward_logging``, ``rdist.print``,
``dump_cluster_state``), with a flood of log lines kept bounded in Redis."""

from __future__ import annotations

import gzip
import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

import rdist
from rdist import Client, get_client
from rdist.logbuffer import DEFAULT_LENGTH
from tests.proc_cluster import ProcCluster

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]


# -- run in the worker process (importable by reference) -----------------------------------
def with_a_client_of_its_own() -> int:
    """A task that uses the worker's client (which must leave with its worker)."""
    return int(get_client().submit(abs, -3).result())


def prints_and_logs(n: int) -> int:
    rdist.print("real-print", n)
    logging.getLogger("user.real").warning("forwarded line %d", n)
    return n


def floods(lines: int) -> float:
    log = logging.getLogger("rdist.flood")
    started = time.perf_counter()
    for i in range(lines):
        log.info("flood line %d", i)
    return time.perf_counter() - started


#: the scheduler's client TTL here: over the clients' heartbeat (5 s), short for a test
CLIENT_TTL = 8


# -- the cluster ---------------------------------------------------------------------------
class Roles:
    def __init__(self, pc: ProcCluster, log_dir: Path) -> None:
        self.pc = pc
        self.log_dir = log_dir

    def stderr(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def client(self) -> Client:
        c = Client(self.pc.url, cluster_name=self.pc.cluster, timeout=30, set_as_default=False)
        c.wait_for_workers(1, timeout=30)
        return c


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    log_dir = tmp_path_factory.mktemp("role-logs")
    pc = ProcCluster(n_workers=0, log_dir=log_dir)
    try:
        pc.kill_scheduler()  # (it logs at WARNING): one at INFO, clients lost after 8 s
        pc.env["RDIST_CLIENT_TTL"] = str(CLIENT_TTL)
        pc.schedulers.append(pc._spawn("scheduler", "--log-level", "info", name="scheduler"))
        pc.workers["w1"] = pc._spawn(
            "worker", "--nthreads", "2", "--name", "w1", "--log-level", "INFO", name="w1"
        )
        pc.wait_for_workers(["w1"], timeout=60)
        yield Roles(pc, log_dir)
    finally:
        pc.close()


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


# -- what the operator reads --------------------------------------------------------------
def test_every_role_says_who_it_is_when_it_starts(roles):
    pc = roles.pc
    address = pc.live_workers()["w1"]
    where = f"in cluster {pc.cluster!r} on {pc.url}"

    scheduler = eventually(lambda: (t := roles.stderr("scheduler")) and "joined" in t and t)
    # the worker registers before it logs its start-up line: wait for the line itself
    started = f"rdist {rdist.__version__} worker {address} (name 'w1'"
    worker = eventually(lambda: (t := roles.stderr("w1")) and started in t and t)

    assert f"rdist {rdist.__version__} scheduler " in scheduler
    assert f"starting for cluster {pc.cluster!r} on {pc.url}" in scheduler
    assert " is the leader" in scheduler
    assert (
        f"worker {address} (name 'w1', 2 threads," in scheduler and "joined: 1 workers" in scheduler
    )
    assert where in worker
    assert f"rdist {rdist.__version__} nanny (pid" in worker
    assert "restored 0 tasks" not in scheduler  # a new cluster has nothing to resume


# -- what a client reads -------------------------------------------------------------------
def test_worker_and_nanny_and_scheduler_logs_through_redis(roles):
    address = roles.pc.live_workers()["w1"]
    with roles.client() as c:
        started = f"worker {address} (name 'w1'"
        workers = eventually(
            lambda: (
                (w := c.get_worker_logs())
                and any(started in line for _, line in w.get(address, ()))
                and w
            )
        )
        # each process publishes its lines on its own (a quarter second after they come):
        # the worker's line in Redis says nothing of the nanny's or the scheduler's yet
        eventually(
            lambda: any(
                "nanny's worker process" in line
                for _, line in c.get_worker_logs(nanny=True).get(address, ())
            )
        )
        eventually(
            lambda: any(
                level == "INFO" and "is the leader" in line
                for level, line in c.get_scheduler_logs()
            )
        )

        def the_last_two() -> tuple[list[Any], list[Any]] | None:
            scheduler, last_two = c.get_scheduler_logs(), c.get_scheduler_logs(n=2)
            # (a line the scheduler published between the two reads: read both again)
            return (scheduler, last_two) if last_two == scheduler[-2:] else None

        scheduler, last_two = eventually(the_last_two)

    assert list(workers) == [address]
    assert len(last_two) == 2 and last_two == scheduler[-2:]


def test_print_and_forwarded_logging_from_a_task_reach_the_client(roles, capsys):
    address = roles.pc.live_workers()["w1"]
    forwarded: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            forwarded.append(record)

    target = logging.getLogger("user.real")
    handler = Keep()
    target.addHandler(handler)
    try:
        with roles.client() as c:
            c.forward_logging("user.real")
            assert c.submit(prints_and_logs, 5).result() == 5
            out = eventually(lambda: "real-print 5" in (o := capsys.readouterr().out) and o)
            eventually(lambda: forwarded)
            c.unforward_logging("user.real")
    finally:
        target.removeHandler(handler)

    assert out.count("real-print 5\n") == 1  # (the worker's own copy went to its stdout)
    (record,) = forwarded
    assert record.getMessage() == "forwarded line 5" and record.levelname == "WARNING"
    assert record.worker == address  # type: ignore[attr-defined]


def test_dump_cluster_state_of_real_processes(roles, tmp_path):
    address = roles.pc.live_workers()["w1"]
    with roles.client() as c:
        future = c.submit(abs, -8, key="dumped")
        assert future.result() == 8
        path = c.dump_cluster_state(str(tmp_path / "bug-report"))

    with gzip.open(path) as f:
        state = msgpack.unpackb(f.read())
    assert state["scheduler"]["tasks"]["dumped"]["state"] == "memory"
    assert state["scheduler"]["cluster"] == roles.pc.cluster
    worker = state["workers"][address]
    assert worker["name"] == "w1" and "dumped" in worker["data"]
    assert any("worker" in line for _, line in worker["log"])


def test_a_flood_of_log_lines_stays_bounded_in_redis(roles):
    address = roles.pc.live_workers()["w1"]
    with roles.client() as c:
        before = c.store.redis.info("stats")["total_commands_processed"]
        seconds = c.submit(floods, 50_000, pure=False).result()
        lines = eventually(
            lambda: (
                (w := c.get_worker_logs(workers=[address])[address])
                and "flood line 49999" in w[-1][1]
                and w
            )
        )
        commands = c.store.redis.info("stats")["total_commands_processed"] - before
        key = c.store.keys.worker_log(address)
        assert c.store.redis.llen(key) == DEFAULT_LENGTH

    assert len(lines) == DEFAULT_LENGTH
    # batches, not a round trip per line: the whole cluster's commands meanwhile (heartbeats,
    # the task, the polls above) are far fewer than the lines
    assert commands < 5_000, commands
    assert seconds / 50_000 < 1e-3  # (stderr takes each line too; a loaded box is slow)


def test_a_worker_leaving_is_told_by_the_scheduler(roles):
    pc = roles.pc
    address = pc.live_workers()["w1"]
    with roles.client() as c:  # a task making the worker's own client, before it leaves
        assert c.submit(with_a_client_of_its_own).result() == 3

    pc.kill_worker("w1", signal.SIGTERM)  # the nanny passes it on: a clean departure

    eventually(lambda: f"worker {address} left: 0 workers" in roles.stderr("scheduler"))


def test_clients_that_closed_are_never_reported_lost(roles):
    """(last: the worker leaves before, and its tasks' client has to leave with it)"""
    scheduler = roles.stderr("scheduler")
    assert "left: 0 workers" in scheduler
    time.sleep(CLIENT_TTL + 3)  # every client of the tests above closed

    scheduler = roles.stderr("scheduler")
    assert "sent no heartbeat" not in scheduler
