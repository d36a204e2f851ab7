"""The dashboard's views, API, metrics, access control and live feed, on fakeredis."""

from __future__ import annotations

import pickle
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask

from rdist.config import ConfigError, load_config
from rdist.protocol import serialize, taskstream, wire
from rdist.store import RedisStore, connect
from rdist.store.connection import drop_fake_server
from rdist.store.keys import PAYLOAD_FIELD
from rdist.web import census as census_module
from rdist.web import create_app
from rdist.web.census import TaskCensus
from rdist.web.queries import key_group
from tests.client_helpers import wait_until
from tests.conftest import fake_cluster


def inc(x: int) -> int:
    return x + 1


def slow_inc(x: int) -> int:
    time.sleep(0.02)
    return x + 1


def fail(message: str) -> None:
    raise ValueError(message)


def settings(url: str, cluster: str, **dashboard: Any) -> Any:
    overrides = {"redis.url": url, "redis.cluster": cluster, "dashboard.interval": 0.1}
    overrides.update({f"dashboard.{k}": v for k, v in dashboard.items()})
    return load_config(overrides, env={})


@contextmanager
def fake_store() -> Iterator[RedisStore]:
    name = uuid.uuid4().hex
    store = connect(f"fakeredis://{name}", "web")
    try:
        yield store
    finally:
        drop_fake_server(name)


def app_for(store: RedisStore, **dashboard: Any) -> Flask:
    return create_app(settings(store.url, store.keys.cluster, **dashboard), store=store)


def put_tasks(store: RedisStore, records: dict[str, dict[str, Any]]) -> None:
    """Task records as the scheduler stores them (short field names; priority always there)."""
    store.redis.hset(
        store.keys.tasks, mapping={k: wire.pack({"p": [0], **v}) for k, v in records.items()}
    )


# -- task groups -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, group",
    [
        ("inc-3f2a9c0d1e2b4a5f", "inc"),
        ("slow-inc-8a7b6c5d4e3f2a1b", "slow-inc"),
        ("('x', 3)", "x"),
        ("my-task-12", "my-task"),
        ("plain", "plain"),
        ("lambda-00ff00ff00", "lambda"),
    ],
)
def test_key_group_drops_hashes_and_indices(key: str, group: str) -> None:
    assert key_group(key) == group


# -- a real (in-process) cluster seen through the API ----------------------------------------
def test_status_workers_and_tasks_show_what_the_cluster_did() -> None:
    with fake_cluster(n_workers=2) as (client, cluster):
        futures = client.map(inc, range(30))
        bad = client.submit(fail, "boom")
        client.gather(futures)
        with pytest.raises(ValueError):
            bad.result()
        app = create_app(settings(cluster.url, cluster.cluster_name))
        web = app.test_client()

        def fetch_status() -> Any:
            return web.get("/api/status").get_json()

        # workers tell clients first; the scheduler records the outcome a moment later (the
        # error's record too: it may come in a later batch than the last result's)
        def recorded() -> bool:
            by_state = fetch_status()["tasks"]["by_state"]
            return bool(by_state["memory"] == 30 and by_state["erred"] == 1)

        wait_until(recorded, what="30 results and 1 error recorded")
        status = fetch_status()
        groups = {g["name"]: g for g in status["tasks"]["groups"]}
        assert groups["inc"]["memory"] == 30 and groups["fail"]["erred"] == 1
        assert status["workers"]["count"] == 2 and status["workers"]["threads"] == 2
        assert status["rate"] > 0

        def workers() -> list[dict[str, Any]]:
            return web.get("/api/workers").get_json()["workers"]  # type: ignore[no-any-return]

        assert sorted(w["name"] for w in workers()) == ["w0", "w1"]
        wait_until(lambda: sum(w["executed"] for w in workers()) >= 30)  # next heartbeat
        assert all(w["age"] is not None and w["age"] < 10 for w in workers())

        page = web.get("/api/tasks?state=memory&limit=500").get_json()
        assert {t["key"] for t in page["tasks"]} == {f.key for f in futures}
        assert page["total"] == 31


def test_task_detail_shows_the_error_without_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_cluster(n_workers=1) as (client, cluster):
        bad = client.submit(fail, "the disk is full")
        with pytest.raises(ValueError):
            bad.result()
        app = create_app(settings(cluster.url, cluster.cluster_name))

        def refuse(*_: Any, **__: Any) -> Any:
            raise AssertionError("the dashboard must not unpickle")

        monkeypatch.setattr(pickle, "loads", refuse)
        monkeypatch.setattr(serialize, "loads", refuse)
        detail = app.test_client().get("/api/task", query_string={"key": bad.key}).get_json()

    assert detail["state"] == "erred"
    assert detail["error"] == "ValueError: the disk is full"
    assert "raise ValueError(message)" in detail["traceback"]
    assert detail["runs"][0]["status"] == "erred" and detail["runs"][0]["worker"]


def test_task_detail_lists_dependencies_with_their_states() -> None:
    with fake_cluster(n_workers=1) as (client, cluster):
        a = client.submit(inc, 1)
        b = client.submit(inc, a)
        assert b.result() == 3
        web = create_app(settings(cluster.url, cluster.cluster_name)).test_client()

        def detail_of(key: str) -> Any:
            return web.get("/api/task", query_string={"key": key}).get_json()

        # workers tell clients first; the scheduler records the outcome a moment later
        wait_until(lambda: detail_of(b.key)["state"] == "memory")
        detail = detail_of(b.key)
        missing = web.get("/api/task", query_string={"key": "no-such-key"})
    assert detail["dependencies"] == [{"key": a.key, "state": "memory"}]
    assert detail["who_has"] and detail["nbytes"] > 0
    assert missing.status_code == 404 and "no-such-key" in missing.get_json()["error"]


# -- bounded reads -----------------------------------------------------------------------------
def test_task_pages_visit_every_task_once_in_bounded_pages() -> None:
    with fake_store() as store:
        put_tasks(store, {f"t-{i:05d}": {"s": "memory" if i % 3 else "erred"} for i in range(1234)})
        web = app_for(store).test_client()
        seen: list[str] = []
        cursor = 0
        while True:
            page = web.get(f"/api/tasks?cursor={cursor}&limit=100").get_json()
            assert len(page["tasks"]) <= 100 + 1000  # at most one extra HSCAN chunk
            seen += [t["key"] for t in page["tasks"]]
            cursor = page["cursor"]
            if cursor == 0:
                break
        assert sorted(seen) == sorted(f"t-{i:05d}" for i in range(1234))

        erred = web.get("/api/tasks?state=erred&limit=500").get_json()["tasks"]
        assert erred and all(t["state"] == "erred" for t in erred)
        found = web.get("/api/tasks?q=t-0042").get_json()["tasks"]
        assert sorted(t["key"] for t in found) == [f"t-0042{i}" for i in range(10)]
        assert web.get("/api/tasks?state=bogus").status_code == 400
        assert web.get("/api/tasks?cursor=x").status_code == 400


def test_search_treats_glob_characters_literally() -> None:
    with fake_store() as store:
        put_tasks(store, {"a*b-1": {"s": "memory"}, "axb-1": {"s": "memory"}})
        found = app_for(store).test_client().get("/api/tasks", query_string={"q": "a*b"}).get_json()
    assert [t["key"] for t in found["tasks"]] == ["a*b-1"]


def test_census_sweeps_in_slices_and_caps_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(census_module, "MAX_GROUPS", 5)
    with fake_store() as store:
        put_tasks(
            store,
            {f"g{i % 8}-{i:06d}": {"s": "processing", "on": f"w{i % 2}"} for i in range(4000)},
        )
        census = TaskCensus()
        steps = 0
        while not census.advance(store, budget=1000):
            steps += 1
            assert steps < 50
        snapshot = census.snapshot(store, max_age=60)
    assert steps >= 2  # a big hash takes several slices
    assert snapshot["complete"] and snapshot["total"] == 4000
    assert snapshot["by_state"]["processing"] == 4000
    assert snapshot["processing"] == {"w0": 2000, "w1": 2000}
    names = [g["name"] for g in snapshot["groups"]]
    assert len(names) == 6 and census_module.OTHER_GROUP in names
    assert sum(g["total"] for g in snapshot["groups"]) == 4000


def test_events_page_back_through_history_without_gaps() -> None:
    with fake_store() as store:
        for i in range(250):
            store.streams.log_event(wire.ClusterEvent("worker-joined", {"worker": f"w{i}"}))
        web = app_for(store).test_client()
        ids: list[str] = []
        before = ""
        while True:
            page = web.get(
                f"/api/events?limit=100{'&before=' + before if before else ''}"
            ).get_json()
            ids += [e["id"] for e in page["events"]]
            if not page["next"]:
                break
            before = page["next"]
        first = web.get("/api/events?limit=1").get_json()["events"][0]
    assert len(ids) == 250 == len(set(ids))
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
    assert first["op"] == "worker-joined" and first["info"] == {"worker": "w249"}


# -- the task stream ----------------------------------------------------------------------------
def test_each_report_batch_is_one_task_stream_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from rdist.worker.reporting import Report

    calls: list[int] = []  # task records per report that carried any
    original = Report.queue_on

    def counting(self: Report, pipe: Any, replicated: list[str]) -> bool:
        tasks = len(self.done) + len(self.erred)
        if tasks:
            calls.append(tasks)
        return original(self, pipe, replicated)

    monkeypatch.setattr(Report, "queue_on", counting)
    with fake_cluster(n_workers=2) as (client, cluster):
        futures = client.map(slow_inc, range(40))
        client.gather(futures)
        store = connect(cluster.url, cluster.cluster_name)
        entries = store.redis.xrange(store.keys.taskstream)
    batches = [taskstream.decode_batch(fields[PAYLOAD_FIELD]) for _, fields in entries]
    assert len(entries) == len(calls)  # one XADD per report, never one per task
    assert sorted(len(b) for b in batches) == sorted(calls)
    runs = [r for b in batches for r in b]
    assert {r.key for r in runs} == {f.key for f in futures}
    assert all(len({r.worker for r in b}) == 1 for b in batches)
    assert all(0 < r.stop - r.start < 5 and r.status == "memory" for r in runs)


def test_error_summaries_are_plain_text() -> None:
    blob = serialize.to_blob((KeyError("missing"), "Traceback: ...\nKeyError: 'missing'\n"))
    payload = taskstream.encode_batch("tcp://w:1", "rdist-exec-0", 100.0, [], [["b-1", blob, 0.5]])
    (run,) = taskstream.decode_batch(payload)
    assert (run.key, run.status, run.start, run.stop) == ("b-1", "erred", 99.5, 100.0)
    assert run.error == "KeyError: 'missing'" and run.traceback.endswith("KeyError: 'missing'\n")
    assert run.thread == "rdist-exec-0"
    (batched,) = taskstream.decode_batch(
        taskstream.encode_batch(
            "tcp://w:1", "rdist-report", 1.0, [["k", 1, 0, None, 0.5, "int"]], []
        )
    )
    assert batched.thread == ""  # reported by the reporter thread: the executor is unknown


def test_malformed_task_stream_entries_are_skipped() -> None:
    assert taskstream.decode_batch(b"\xc1 not msgpack") == []
    assert (
        taskstream.decode_batch(wire.pack({"r": [["k"], "junk", ["k", "w", "", 1, 2, "memory"]]}))[
            0
        ].key
        == "k"
    )


# -- metrics and health ---------------------------------------------------------------------------
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$'
)


def test_metrics_are_valid_prometheus_text() -> None:
    with fake_store() as store:
        put_tasks(store, {"x-1": {"s": "memory", "nb": 100}, "x-2": {"s": "processing", "on": "w"}})
        store.redis.hset(
            store.keys.workers,
            "tcp://h:1",
            wire.pack(
                {
                    "address": "tcp://h:1",
                    "name": 'odd "name"\\',
                    "nthreads": 2,
                    "memory": 1000,
                    "memory_limit": 4000,
                    "cpu": 12.5,
                    "executed": 7,
                    "spilled_bytes": 5,
                    "pid": 42,
                    "last_seen": time.time(),
                }
            ),
        )
        response = app_for(store).test_client().get("/metrics")
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and response.content_type.startswith(
        "text/plain; version=0.0.4"
    )
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(families) == len(set(families))
    for line in text.splitlines():
        assert line.startswith("#") or SAMPLE.match(line), line
    assert 'rdist_tasks{state="memory"} 1' in text
    assert "rdist_workers 1" in text
    assert 'rdist_worker_memory_bytes{worker="tcp://h:1",name="odd \\"name\\"\\\\"} 1000' in text
    assert "rdist_worker_spilled_bytes{" in text  # metrics that workers add later show up
    assert "rdist_worker_pid" not in text
    assert "rdist_task_memory_bytes 100" in text


def test_health_answers_without_a_token() -> None:
    with fake_store() as store:
        web = app_for(store, token="s3cret").test_client()
        assert web.get("/health").get_json() == {"status": "ok", "redis": "ok"}


# -- access control -------------------------------------------------------------------------------
def test_a_reachable_dashboard_refuses_to_start_without_a_token() -> None:
    with fake_store() as store:
        with pytest.raises(ConfigError, match="RDIST_DASHBOARD_TOKEN"):
            app_for(store, host="0.0.0.0")
        app_for(store, host="0.0.0.0", token="s3cret")  # with a token it starts
        app_for(store, host="::1")  # loopback needs none


def test_token_guards_pages_api_and_metrics() -> None:
    with fake_store() as store:
        web = app_for(store, host="0.0.0.0", token="s3cret").test_client()
        assert web.get("/api/status").status_code == 401
        assert web.get("/metrics").status_code == 401
        login = web.get("/workers")
        assert login.status_code == 401 and b"needs its token" in login.data
        assert web.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert web.get("/workers?token=wrong").status_code == 401

        response = web.get("/workers?token=s3cret&x=1")
        assert response.status_code == 302 and response.headers["Location"].endswith("/workers?x=1")
        cookie = response.headers["Set-Cookie"]
        assert "s3cret" not in cookie and "HttpOnly" in cookie
        assert web.get("/workers").status_code == 200  # the cookie now opens every page
        with web.get("/static/rdist.css") as asset:
            assert asset.status_code == 200


def test_login_form_posts_the_token_and_returns_to_the_page() -> None:
    with fake_store() as store:
        web = app_for(store, host="0.0.0.0", token="s3cret").test_client()
        form = web.get("/tasks?key=x").get_data(as_text=True)
        assert 'action="/login"' in form and 'value="/tasks?key=x"' in form
        wrong = web.post("/login", data={"token": "nope", "next": "/tasks"})
        assert wrong.status_code == 401 and b"not the right one" in wrong.data
        right = web.post("/login", data={"token": "s3cret", "next": "/tasks?key=x"})
        assert right.status_code == 302 and right.headers["Location"] == "/tasks?key=x"
        assert web.get("/api/status").status_code == 200
        away = web.post("/login", data={"token": "s3cret", "next": "//evil.example/"})
        assert away.headers["Location"] == "/"  # never redirects off the dashboard


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\t/evil.example",  # browsers drop the tab: //evil.example
        "/\n/evil.example",
        "/\r\n/evil.example",
        "/\\evil.example",  # browsers read \ as /
        "/\\/evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        " //evil.example",
        "/tasks\x00/x",
        "/\x7f/evil.example",
    ],
)
def test_login_never_redirects_off_the_dashboard(target: str) -> None:
    with fake_store() as store:
        web = app_for(store, host="0.0.0.0", token="s3cret").test_client()
        response = web.post("/login", data={"token": "s3cret", "next": target})
        assert response.status_code == 302 and response.headers["Location"] == "/"


@pytest.mark.parametrize("target", ["/", "/tasks?key=x", "/workers#w1", "/a/b?c=%2F%2Fd"])
def test_login_returns_to_a_same_site_path(target: str) -> None:
    with fake_store() as store:
        web = app_for(store, host="0.0.0.0", token="s3cret").test_client()
        response = web.post("/login", data={"token": "s3cret", "next": target})
        assert response.headers["Location"] == target


def test_socket_connection_needs_the_token_too() -> None:
    with fake_store() as store:
        app = app_for(store, host="0.0.0.0", token="s3cret")
        socketio = app.extensions["rdist"].socketio
        refused = socketio.test_client(app)
        allowed = socketio.test_client(app, auth={"token": "s3cret"})
        try:
            assert not refused.is_connected()
            assert allowed.is_connected()
        finally:
            if allowed.is_connected():
                allowed.disconnect()
            app.extensions["rdist"].close()


def test_pages_render_with_navigation_and_no_inline_script() -> None:
    with fake_store() as store:
        web = app_for(store).test_client()
        for path, title in [
            ("/", "Status"),
            ("/workers", "Workers"),
            ("/tasks", "Tasks"),
            ("/events", "Events"),
        ]:
            response = web.get(path)
            html = response.get_data(as_text=True)
            assert response.status_code == 200 and f"rdist · {title} · web" in html
            assert "<script>" not in html and "http" not in html.split("<body")[1].replace(
                "http-equiv", ""
            )
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        for asset in [
            "sio.js",
            "common.js",
            "status.js",
            "workers.js",
            "tasks.js",
            "events.js",
            "rdist.css",
        ]:
            with web.get(f"/static/{asset}") as response:
                assert response.status_code == 200


# -- live updates -------------------------------------------------------------------------------
def test_live_feed_pushes_runs_status_and_events_to_subscribers() -> None:
    with fake_cluster(n_workers=2) as (client, cluster):
        app = create_app(settings(cluster.url, cluster.cluster_name))
        socketio = app.extensions["rdist"].socketio
        browser = socketio.test_client(app)
        try:
            assert browser.emit(
                "subscribe", ["status", "runs", "events", "nonsense"], callback=True
            ) == ["status", "runs", "events"]
            received: dict[str, list[Any]] = {"runs": [], "status": [], "events": []}

            def take() -> None:
                for message in browser.get_received():
                    received[message["name"]].extend(message["args"])

            # the feed starts after what exists when its thread first reads, and sends its
            # first status just after: what comes from here on is news to it
            wait_until(lambda: take() or bool(received["status"]), what="the first status")
            futures = client.map(slow_inc, range(10))
            client.gather(futures)
            cluster.add_worker(nthreads=1, name="late")

            def got_everything() -> bool:
                take()
                keys = {r["key"] for m in received["runs"] for r in m["runs"]}
                joined = [
                    e for m in received["events"] for e in m["events"] if e["op"] == "worker-joined"
                ]
                return (
                    keys >= {f.key for f in futures} and bool(received["status"]) and bool(joined)
                )

            wait_until(got_everything)
            assert received["status"][-1]["workers"]["count"] >= 2
        finally:
            browser.disconnect()
            app.extensions["rdist"].close()


def test_live_feed_skips_malformed_entries_and_goes_on() -> None:
    with fake_store() as store:
        app = app_for(store)
        socketio = app.extensions["rdist"].socketio
        browser = socketio.test_client(app)
        try:
            # (status too: its first push says the feed has read where the streams end)
            browser.emit("subscribe", ["events", "runs", "status"], callback=True)
            wait_until(
                lambda: any(m["name"] == "status" for m in browser.get_received()),
                what="the feed's first status",
            )
            store.redis.xadd(store.keys.taskstream, {PAYLOAD_FIELD: b"\xc1garbage"})
            store.redis.xadd(store.keys.events, {b"other": b"no payload"})
            store.streams.log_event(wire.ClusterEvent("worker-left", {"worker": "w9"}))
            seen: list[dict[str, Any]] = []

            def got_the_good_one() -> bool:
                for message in browser.get_received():
                    if message["name"] == "events":
                        seen.extend(message["args"][0]["events"])
                return any(e["op"] == "worker-left" for e in seen)

            wait_until(got_the_good_one)
            assert [e["op"] for e in seen] == ["unknown", "worker-left"]
        finally:
            browser.disconnect()
            app.extensions["rdist"].close()


def test_local_cluster_serves_its_dashboard() -> None:
    import json
    import urllib.request

    from rdist import LocalCluster

    url = f"fakeredis://{uuid.uuid4().hex}"
    with LocalCluster(
        n_workers=1,
        processes=False,
        redis_url=url,
        dashboard_address=":0",
        nanny=False,
    ) as cluster:
        link = cluster.dashboard_link
        assert link and link.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(link + "api/workers", timeout=10) as response:
            workers = json.load(response)["workers"]
    assert [w["name"] for w in workers] == [f"{cluster.cluster_name}-worker-1"]
    with pytest.raises(OSError):
        urllib.request.urlopen(link + "health", timeout=2)  # stopped with the cluster
    drop_fake_server(url[len("fakeredis://") :])


def test_odd_report_records_never_break_the_report(caplog: pytest.LogCaptureFixture) -> None:
    assert taskstream.encode_batch("w", "t", 1.0, [["k", "no duration"]], []) is None
    assert "cannot make task-stream records" in caplog.text
