"""Logs on the client, over a fakeredis cluster: get_worker_logs / get_scheduler_logs,
rdist.print / rdist.warn and forward_logging from tasks, dump_cluster_state.

Scheduler, workers and client share this process here, so every buffer sees every
``rdist`` line of the process; what is pinned is what reaches the client and where."""

from __future__ import annotations

import gzip
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

import rdist
from rdist.client import logs as client_logs
from tests.conftest import FakeCluster, fake_cluster


@pytest.fixture
def pair(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[rdist.Client, FakeCluster]]:
    caplog.set_level(logging.INFO, logger="rdist")  # (the roles' CLI does this)
    with fake_cluster() as (client, cluster):
        yield client, cluster


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def _started_line(address: str) -> str:
    return f"worker {address} (name"


def test_worker_logs_hold_each_workers_start_up_line(pair):
    client, cluster = pair
    addresses = sorted(w.address for w in cluster.workers)

    def started() -> dict[str, Any] | None:
        logs = client.get_worker_logs()
        ok = all(any(_started_line(a) in line for _, line in logs.get(a, [])) for a in addresses)
        return logs if ok else None

    logs = eventually(started)
    assert sorted(logs) == addresses
    for lines in logs.values():
        assert all(isinstance(level, str) and isinstance(line, str) for level, line in lines)
        assert "INFO" in {level for level, _ in lines}


def test_worker_logs_n_workers_and_nanny(pair):
    client, cluster = pair
    w0 = next(w for w in cluster.workers if w.name == "w0")
    eventually(lambda: len(client.get_worker_logs(workers=[w0.address])[w0.address]) >= 2)

    def newest_and_every() -> tuple[dict[str, Any], list[Any]] | None:
        by_name = client.get_worker_logs(n=1, workers="w0")
        every = client.get_worker_logs(workers=[w0.address])[w0.address]
        # (a line the worker published between the two reads: read both again)
        return (by_name, every) if by_name.get(w0.address) == every[-1:] else None

    by_name, every = eventually(newest_and_every)
    assert list(by_name) == [w0.address]
    assert len(by_name[w0.address]) == 1 and by_name[w0.address] == every[-1:]  # the newest
    assert client.get_worker_logs(nanny=True) == {w.address: [] for w in cluster.workers}


def test_a_task_logging_on_rdist_loggers_reaches_its_workers_log(pair):
    client, _ = pair

    def task() -> int:
        logging.getLogger("rdist.usertask").warning("marker-from-the-task")
        return 1

    future = client.submit(task)
    assert future.result() == 1
    where = client.who_has(future)[future.key][0]

    lines = eventually(
        lambda: [
            line
            for level, line in client.get_worker_logs(workers=[where])[where]
            if "marker-from-the-task" in line and level == "WARNING"
        ]
    )
    assert " - rdist.usertask - WARNING - " in lines[0]


def test_scheduler_logs_tell_the_workers_joining(pair):
    client, cluster = pair

    def joined() -> bool:
        lines = [line for _, line in client.get_scheduler_logs()]
        return all(
            any(f"worker {w.address} (" in x and "joined" in x for x in lines)
            for w in cluster.workers
        )

    eventually(joined)
    assert len(client.get_scheduler_logs(n=2)) == 2


def test_rdist_print_in_a_task_shows_on_the_worker_and_on_the_client(pair, capsys):
    client, _ = pair

    def task() -> int:
        rdist.print("printed-by-task", 42, sep="|")
        rdist.print("to-stderr", file=sys.stderr)
        return 0

    assert client.submit(task).result() == 0

    # once by the worker (the builtin print), once by the client's subscription
    out = eventually(lambda: (o := capsys.readouterr()) and o.out.count("printed-by-task|42") and o)
    seen = out.out.count("printed-by-task|42\n")
    err = out.err.count("to-stderr\n")
    deadline = time.monotonic() + 10
    while (seen < 2 or err < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
        more = capsys.readouterr()
        seen += more.out.count("printed-by-task|42\n")
        err += more.err.count("to-stderr\n")
    assert (seen, err) == (2, 2)


class FromTheTask(UserWarning):
    pass


def test_rdist_warn_in_a_task_warns_on_the_client_too(pair):
    client, _ = pair

    def task() -> int:
        rdist.warn("careful-now", FromTheTask)
        return 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert client.submit(task).result() == 0
        eventually(lambda: len([w for w in caught if w.category is FromTheTask]) >= 2)

    assert {str(w.message) for w in caught if w.category is FromTheTask} == {"careful-now"}


def test_forward_logging_re_emits_task_records_on_the_clients_logger(caplog):
    caplog.set_level(logging.INFO, logger="rdist")
    with fake_cluster(n_workers=1) as pair:  # (one worker: one forwarding handler here)
        _forward_logging_case(*pair)


def _forward_logging_case(client: rdist.Client, cluster: FakeCluster) -> None:
    forwarded: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if hasattr(record, "worker"):  # (the original record passes here too)
                forwarded.append(record)

    target = logging.getLogger("user.forwarded")
    target.setLevel(logging.INFO)
    handler = Keep()
    target.addHandler(handler)
    try:
        client.forward_logging("user.forwarded", level=logging.INFO)

        def task() -> int:
            logging.getLogger("user.forwarded").info("hello %s", "client")
            logging.getLogger("user.forwarded").debug("not forwarded")
            return 0

        future = client.submit(task)
        assert future.result() == 0
        eventually(lambda: forwarded)
        client.unforward_logging("user.forwarded")
    finally:
        target.removeHandler(handler)

    (record,) = forwarded
    assert record.getMessage() == "hello client" and record.levelno == logging.INFO
    assert record.worker == cluster.workers[0].address  # type: ignore[attr-defined]
    eventually(
        lambda: not any(isinstance(h, client_logs._ForwardingHandler) for h in target.handlers)
    )


def test_run_passes_the_worker_as_dask_worker(pair):
    client, cluster = pair

    def name_of(dask_worker: Any) -> str:
        return str(dask_worker.name)

    assert client.run(name_of) == {w.address: w.name for w in cluster.workers}


def test_dump_cluster_state_msgpack_has_scheduler_and_workers(pair, tmp_path):
    client, cluster = pair
    future = client.submit(lambda: 7, key="kept")
    assert future.result() == 7
    holder = client.who_has(future)["kept"][0]

    path = client.dump_cluster_state(str(tmp_path / "state"))

    assert path.endswith("state.msgpack.gz")
    with gzip.open(path) as f:
        state = msgpack.unpackb(f.read())
    assert set(state) >= {"scheduler", "workers", "versions"}
    scheduler = state["scheduler"]
    assert scheduler["tasks"]["kept"]["state"] == "memory"
    assert sorted(scheduler["workers"]) == sorted(w.address for w in cluster.workers)
    assert client.id in scheduler["clients"]
    assert "secret" not in str(scheduler).lower()
    assert sorted(state["workers"]) == sorted(w.address for w in cluster.workers)
    worker = state["workers"][holder]
    assert "kept" in worker["data"] and worker["tasks"]["kept"]["state"] == "memory"
    assert {"ready", "executing", "log", "transition_log"} <= set(worker)


def test_dump_cluster_state_yaml_reads_back_as_dicts_and_excludes(pair, tmp_path):
    yaml = pytest.importorskip("yaml")
    client, _ = pair
    future = client.submit(lambda: 1, key="y")
    assert future.result() == 1

    path = client.dump_cluster_state(str(tmp_path / "state"), format="yaml", exclude=["versions"])

    with open(path) as f:
        state = yaml.safe_load(f)
    assert path.endswith(".yaml") and isinstance(state["workers"], dict)
    assert "versions" not in state and state["scheduler"]["tasks"]["y"]["state"] == "memory"


def test_dump_cluster_state_yaml_without_pyyaml_says_what_to_install(pair, tmp_path, monkeypatch):
    client, _ = pair
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now fails

    with pytest.raises(ImportError, match="pip install pyyaml"):
        client.dump_cluster_state(str(tmp_path / "x"), format="yaml")
    with pytest.raises(ValueError, match="format"):
        client.dump_cluster_state(str(tmp_path / "x"), format="xml")


def test_an_asynchronous_client_awaits_the_logs(pair, tmp_path):
    import asyncio

    _, cluster = pair

    async def main() -> tuple[Any, Any, str]:
        async with rdist.Client(cluster, asynchronous=True, set_as_default=False) as client:
            workers = await client.get_worker_logs(n=1)
            scheduler = await client.get_scheduler_logs(n=1)
            path = await client.dump_cluster_state(str(tmp_path / "async"))
            return workers, scheduler, path

    workers, scheduler, path = asyncio.run(main())

    assert sorted(workers) == sorted(w.address for w in cluster.workers)
    assert isinstance(scheduler, list) and path.endswith(".msgpack.gz")
