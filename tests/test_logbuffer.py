"""The per-process log buffer (rdist.logbuffer) and its Redis lists, the membership lines,
the console levels, and the pieces of forwarded output -- without a cluster."""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from rdist import logbuffer
from rdist.client import dump
from rdist.client import logs as client_logs
from rdist.cluster import _level_name
from rdist.logbuffer import LogBuffer, ProcessLog
from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler import membership
from rdist.store import RedisStore, connect
from rdist.store.connection import drop_fake_server
from rdist.store.logs import LOG_TTL_SECONDS


@pytest.fixture
def store() -> Iterator[RedisStore]:
    name = uuid.uuid4().hex
    s = connect(f"fakeredis://{name}", "logs")
    yield s
    s.close()
    drop_fake_server(name)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of its own at DEBUG, so a test's records reach only its buffer."""
    lg = logging.getLogger(f"rdist.test-{uuid.uuid4().hex[:8]}")
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    yield lg
    lg.handlers.clear()


def _record(logger: logging.Logger, level: int, msg: str, *args: Any) -> logging.LogRecord:
    return logger.makeRecord(logger.name, level, __file__, 1, msg, args, None)


# -- the buffer ---------------------------------------------------------------------------
def test_buffer_keeps_only_its_last_records_oldest_first(logger):
    buffer = LogBuffer(length=3)
    for i in range(5):
        buffer.handle(_record(logger, logging.INFO, "line %d", i))

    lines = buffer.lines()

    assert [level for level, _ in lines] == ["INFO"] * 3
    assert [line.rsplit(" ", 1)[1] for _, line in lines] == ["2", "3", "4"]
    assert " - INFO - line 4" in lines[-1][1] and logger.name in lines[-1][1]


def test_buffer_lines_n_gives_the_last_n_in_order(logger):
    buffer = LogBuffer(length=10)
    for i in range(6):
        buffer.handle(_record(logger, logging.WARNING, "w%d", i))

    assert [line[-2:] for _, line in buffer.lines(2)] == ["w4", "w5"]
    assert buffer.lines(0) == []


def test_a_record_whose_arguments_do_not_fit_is_kept_not_raised(logger):
    buffer = LogBuffer(length=5)
    buffer.handle(_record(logger, logging.ERROR, "needs %d", "text"))

    ((level, line),) = buffer.lines()

    assert level == "ERROR" and "needs %d" in line


def test_unsent_records_are_taken_once_and_bounded(logger):
    buffer = LogBuffer(length=4)
    for i in range(10):
        buffer.handle(_record(logger, logging.INFO, "%d", i))

    first = buffer.take_unsent()

    assert [r.getMessage() for r in first] == ["6", "7", "8", "9"]
    assert buffer.take_unsent() == []
    assert len(buffer.take_unsent(everything=True)) == 4


def test_log_length_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RDIST_LOGGING__LENGTH", "25")
    assert logbuffer.log_length() == 25
    monkeypatch.setenv("RDIST_LOGGING__LENGTH", "nonsense")
    assert logbuffer.log_length() == logbuffer.DEFAULT_LENGTH
    monkeypatch.delenv("RDIST_LOGGING__LENGTH")
    assert logbuffer.log_length() == logbuffer.DEFAULT_LENGTH


# -- publishing ---------------------------------------------------------------------------
def test_a_flood_of_lines_leaves_a_capped_list_with_an_expiry(store, logger):
    plog = ProcessLog(store, "worker", "tcp://w:1", length=50, logger=logger.name).start()
    try:
        started = time.perf_counter()
        for i in range(20_000):
            logger.info("flood %d", i)
        per_line = (time.perf_counter() - started) / 20_000
        plog.flush()
    finally:
        plog.close()

    key = store.keys.worker_log("tcp://w:1")
    assert store.redis.llen(key) == 50
    assert 0 < store.redis.ttl(key) <= LOG_TTL_SECONDS
    tail = store.logs.tails("worker", ["tcp://w:1"], None)["tcp://w:1"]
    assert tail[-1].message.endswith("flood 19999") and tail[0].message.endswith("flood 19950")
    # a log call costs what logging itself costs, not a round trip (generous for a busy box)
    assert per_line < 200e-6


def test_lines_of_a_moment_go_out_in_one_round_trip(store, logger, monkeypatch):
    executed: list[int] = []
    real_pipeline = store.pipeline

    def counting_pipeline() -> Any:
        pipe = real_pipeline()
        execute = pipe.execute

        def counted() -> Any:
            executed.append(len(pipe.command_stack))
            return execute()

        pipe.execute = counted
        return pipe

    monkeypatch.setattr(store, "pipeline", counting_pipeline)
    plog = ProcessLog(store, "worker", "tcp://w:2", length=100, logger=logger.name)
    logger.addHandler(plog.buffer)
    for i in range(30):
        logger.warning("w %d", i)
    plog.topic("print", {"args": ["hi"]}, 1.0)

    plog.flush()

    assert len(executed) == 1  # 30 lines and one topic event: one pipeline
    assert store.redis.llen(store.keys.worker_log("tcp://w:2")) == 30
    assert store.redis.xlen(store.keys.topic("print")) == 1


def test_the_publisher_thread_sends_lines_without_being_asked(store, logger):
    plog = ProcessLog(store, "scheduler", "s1", length=10, logger=logger.name).start()
    try:
        logger.info("by itself")
        deadline = time.monotonic() + 10
        while not store.redis.llen(store.keys.scheduler_log("s1")):
            assert time.monotonic() < deadline, "the line never reached redis"
            time.sleep(0.02)
    finally:
        plog.close()


def test_lines_before_an_ident_wait_and_a_new_ident_gets_the_whole_buffer(store, logger):
    plog = ProcessLog(store, "nanny", None, length=10, logger=logger.name)
    logger.addHandler(plog.buffer)
    logger.info("before")
    plog.flush()
    assert store.redis.keys("*logs*") == []

    plog.set_ident("tcp://w:3")
    logger.info("after")
    plog.flush()
    plog.set_ident("tcp://w:4")  # (a nanny's restarted worker has a new address)
    plog.flush()

    for ident in ("tcp://w:3", "tcp://w:4"):
        lines = store.logs.tails("nanny", [ident], None)[ident]
        assert [line.message[-6:] for line in lines] == ["before", " after"]


def test_redis_down_loses_no_line_in_memory_and_raises_nothing(logger):
    dead = connect("redis://127.0.0.1:1", "x")
    plog = ProcessLog(dead, "worker", "tcp://w:5", length=10, logger=logger.name)
    logger.addHandler(plog.buffer)
    logger.error("while redis is away")

    plog.flush()  # must not raise

    assert plog.buffer.lines()[0][0] == "ERROR"
    dead.close()


def test_a_line_that_does_not_decode_is_skipped(store):
    key = store.keys.worker_log("tcp://w:6")
    good = wire.LogLine(1.0, "INFO", "rdist", "fine").encode()
    store.redis.rpush(key, b"\xc1", good)

    lines = store.logs.tails("worker", ["tcp://w:6"], None)["tcp://w:6"]

    assert [line.message for line in lines] == ["fine"]


def test_reading_logs_refuses_a_count_that_is_not_positive(store):
    with pytest.raises(ValueError, match="positive int"):
        client_logs.worker_logs(store, n=0)
    with pytest.raises(ValueError, match="positive int"):
        client_logs.scheduler_logs(store, n=-3)


def test_scheduler_logs_follow_the_current_scheduler(store):
    assert client_logs.scheduler_logs(store) == []
    store.logs.set_current_scheduler("old")
    store.logs.append("scheduler", "old", [wire.LogLine(1.0, "INFO", "rdist", "x").encode()], 5)

    assert client_logs.scheduler_logs(store) == [("INFO", "x")]


# -- the scheduler's membership lines ---------------------------------------------------------
def test_membership_names_new_workers_once_and_known_ones_leaving():
    joined = ev.WorkerJoined("s", 0.0, "tcp://new:1", "new", 2, 1 << 30)
    restored = ev.WorkerJoined("s", 0.0, "tcp://old:1", "old", 1)
    left = ev.WorkerLeft("s", 0.0, "tcp://old:1")
    unknown = ev.WorkerLeft("s", 0.0, "tcp://gone:1", lost=True)
    other = ev.ClientJoined("s", 0.0, "c1")
    announced: set[str] = set()

    found = membership.changes({"tcp://old:1"}, announced, [joined, restored, left, unknown, other])
    again = membership.changes({"tcp://old:1", "tcp://new:1"}, announced, [joined])

    assert found == [
        membership.Change("tcp://new:1", True, name="new", nthreads=2, memory_limit=1 << 30),
        membership.Change("tcp://old:1", True, name="old", nthreads=1),
        membership.Change("tcp://old:1", False),
    ]
    assert again == [] and announced == {"tcp://new:1"}


def test_membership_lines_say_who_and_how_many(caplog):
    log = logging.getLogger("rdist.scheduler")
    changes = [
        membership.Change("tcp://a:1", True, name="a", nthreads=4, memory_limit=2 << 30),
        membership.Change("tcp://b:1", False, lost=True),
        membership.Change("tcp://c:1", False),
    ]
    with caplog.at_level(logging.INFO, "rdist.scheduler"):
        membership.log_changes(log, changes, 7)

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "worker tcp://a:1 (name 'a', 4 threads, memory 2048 MiB) joined: 7 workers"),
        ("WARNING", "worker tcp://b:1 was lost: 7 workers"),
        ("INFO", "worker tcp://c:1 left: 7 workers"),
    ]


# -- console levels -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given, expected",
    [
        (logging.WARNING, "warning"),
        ("error", "error"),
        (False, "info"),
        (True, "warning"),
        (5, "debug"),
    ],
)
def test_local_cluster_silence_logs_becomes_the_children_log_level(given, expected):
    assert _level_name(given) == expected


def test_local_cluster_refuses_a_silence_logs_that_is_no_level():
    with pytest.raises(ValueError, match="silence_logs"):
        _level_name("loud")


# -- forwarded output, the client's side -------------------------------------------------------
def test_a_forwarded_record_is_handled_by_the_logger_of_its_name(logger):
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Keep())
    attributes = {"name": logger.name, "msg": "from a task", "levelno": 30, "levelname": "WARNING"}

    client_logs.re_emit((1.0, {**attributes, "worker": "tcp://w:1"}))

    assert [(r.getMessage(), r.worker, r.rdist_forwarded) for r in seen] == [  # type: ignore[attr-defined]
        ("from a task", "tcp://w:1", True)
    ]


def test_the_forwarding_handler_sends_plain_attributes_and_never_a_forwarded_record(logger):
    sent: list[tuple[str, Any]] = []

    class Logs:
        def topic(self, topic: str, msg: Any, when: float) -> None:
            wire.TopicEvent(when, msg).encode()  # it must be msgpack data
            sent.append((topic, msg))

    class FakeWorker:
        address = "tcp://w:9"
        logs = Logs()

    plugin = client_logs.ForwardLogging(logger.name, logging.INFO, "forward-logging-x")
    plugin.setup(FakeWorker())
    try:
        logger.debug("below the level")
        logger.info("n=%s", object())
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("failed")
        again = {"name": logger.name, "levelno": logging.INFO, "rdist_forwarded": True}
        logger.handle(logging.makeLogRecord(again))
    finally:
        plugin.teardown(FakeWorker())

    assert [t for t, _ in sent] == ["forward-logging-x"] * 2
    info, failed = (msg for _, msg in sent)
    assert info["msg"].startswith("n=<object") and info["args"] is None
    assert info["worker"] == "tcp://w:9" and info["levelname"] == "INFO"
    assert "KeyError" in failed["exc_text"] and failed["exc_info"] is None
    assert logger.handlers == []  # teardown took its handler away


def test_a_remote_print_is_printed_with_its_separators(capsys):
    client_logs.show_print((1.0, {"args": ["a", "b"], "sep": "-", "end": "!\n"}))
    client_logs.show_print((1.0, {"args": ["to stderr"], "file": 2}))
    client_logs.show_print((1.0, "not a print"))

    out, err = capsys.readouterr()
    assert out == "a-b!\n" and err == "to stderr\n"


class TaskWarning(UserWarning):
    pass


def test_a_remote_warning_keeps_a_category_loaded_here_and_imports_nothing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client_logs.show_warning(
            (1.0, {"message": "careful", "category": f"{__name__}:TaskWarning"})
        )
        client_logs.show_warning((1.0, {"message": "x", "category": "not_loaded_mod:Thing"}))
        client_logs.show_warning((1.0, {"message": "y", "category": "builtins:int"}))

    assert [(str(w.message), w.category) for w in caught] == [
        ("careful", TaskWarning),
        ("x", UserWarning),
        ("y", UserWarning),
    ]


def test_rdist_print_outside_a_task_is_the_builtin(capsys):
    import rdist

    rdist.print("plain", 1, sep=":")

    assert capsys.readouterr().out == "plain:1\n"
    with open(__file__) as elsewhere, pytest.raises(TypeError, match="sys.stdout or sys.stderr"):
        rdist.print("x", file=elsewhere)


# -- dumps --------------------------------------------------------------------------------------
def test_plain_makes_records_enums_tuples_and_sets_into_plain_data():
    from rdist.worker.state import WTaskState

    got = dump.plain({"r": wire.LogLine(1.0, "INFO", "n", "m"), 1: (WTaskState.READY, {2, 1})})

    assert got == {
        "r": {"time": 1.0, "level": "INFO", "name": "n", "message": "m"},
        "1": ["ready", [1, 2]],
    }
    assert dump.plain(object()).startswith("<object")


def test_dump_refuses_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="msgpack"):
        dump.write({}, str(tmp_path / "d"), "json")


def test_after_redis_failed_the_next_flush_sends_every_line_and_event(store, logger, monkeypatch):
    import redis

    plog = ProcessLog(store, "worker", "tcp://w:7", length=10, logger=logger.name)
    logger.addHandler(plog.buffer)
    logger.info("first")
    plog.flush()
    logger.info("second")
    plog.topic("print", {"args": ["kept"]}, 1.0)
    working = store.pipeline

    def broken() -> Any:
        raise redis.ConnectionError("away")

    monkeypatch.setattr(store, "pipeline", broken)
    plog.flush()  # must not raise
    monkeypatch.setattr(store, "pipeline", working)
    plog.flush()

    lines = store.logs.tails("worker", ["tcp://w:7"], None)["tcp://w:7"]
    assert [line.message[-6:] for line in lines] == [" first", "second"]  # (once each)
    assert store.redis.xlen(store.keys.topic("print")) == 1
