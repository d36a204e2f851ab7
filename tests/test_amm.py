"""The Active Memory Manager's policies, pure: a view in, suggestions out (no Redis)."""

from __future__ import annotations

import pytest

from rdist.protocol import wire
from rdist.scheduler import amm, amm_runner
from rdist.scheduler import events as ev
from rdist.scheduler.model import TS, Task, WorkerInfo, add_name, grown

A, B, C, D = "tcp://a:1", "tcp://b:1", "tcp://c:1", "tcp://d:1"


def cluster(
    holdings: dict[str, list[str]],
    nbytes: int = 100,
    workers: tuple[str, ...] = (A, B, C),
    status: dict[str, str] | None = None,
) -> tuple[dict[str, Task], dict[str, WorkerInfo]]:
    """Tasks in memory held as ``holdings`` says (key -> holders), on ``workers``."""
    ws = {a: WorkerInfo(a, a, 1, status=(status or {}).get(a, "running")) for a in workers}
    tasks = {}
    for key, holders in holdings.items():
        tasks[key] = Task(key, key, state=TS.MEMORY, who_has=set(holders), nbytes=nbytes)
        for address in holders:
            ws[address].has_what.add(key)
    return tasks, ws


def view(
    tasks: dict[str, Task],
    workers: dict[str, WorkerInfo],
    memory: dict[str, int] | None = None,
    incoming: dict[str, set[str]] | None = None,
) -> amm.MemoryView:
    return amm.MemoryView(tasks, workers, memory or {a: 0 for a in workers}, incoming or {})


def waiting_dependent(tasks: dict[str, Task], dep: str, key: str, on: str | None) -> None:
    state = TS.PROCESSING if on else TS.WAITING
    tasks[key] = Task(key, key, state=state, dependencies={dep}, processing_on=on)
    tasks[dep].waiters = grown(tasks[dep].waiters, key)
    tasks[dep].dependents = grown(tasks[dep].dependents, key)


# -- ReduceReplicas ------------------------------------------------------------------------


def test_reduce_replicas_keeps_one_copy_dropping_from_the_fullest_worker():
    tasks, workers = cluster({"x": [A, B, C]})
    memory = {A: 500, B: 900, C: 100}

    out = amm.suggest(view(tasks, workers, memory), [amm.ReduceReplicas()])

    assert out.drop == {"x": [B, A]}  # most memory first; C, the emptiest, keeps it
    assert out.replicate == {}


def test_reduce_replicas_moves_the_memory_between_choices_of_one_run():
    # two keys on A and B; A is a little fuller: it loses the first, and then B is fuller
    tasks, workers = cluster({"x": [A, B], "y": [A, B]}, nbytes=100)

    out = amm.suggest(view(tasks, workers, {A: 150, B: 100, C: 0}), [amm.ReduceReplicas()])

    assert sorted(w for ws in out.drop.values() for w in ws) == [A, B]


def test_reduce_replicas_never_drops_the_only_copy():
    tasks, workers = cluster({"x": [A], "y": [B]})

    assert not amm.suggest(view(tasks, workers), [amm.ReduceReplicas()])


def test_reduce_replicas_keeps_a_copy_per_worker_its_dependents_run_on():
    tasks, workers = cluster({"x": [A, B, C]})
    waiting_dependent(tasks, "x", "d1", on=A)
    waiting_dependent(tasks, "x", "d2", on=B)
    waiting_dependent(tasks, "x", "d3", on=B)  # (same worker: counted once)

    out = amm.suggest(view(tasks, workers, {A: 999, B: 999, C: 0}), [amm.ReduceReplicas()])

    # two copies are needed (on A and B, where dependents run): C's goes, though emptiest
    assert out.drop == {"x": [C]}


def test_reduce_replicas_keeps_a_copy_for_a_dependent_not_placed_yet():
    tasks, workers = cluster({"x": [A, B]})
    waiting_dependent(tasks, "x", "d1", on=A)
    waiting_dependent(tasks, "x", "d2", on=None)

    assert not amm.suggest(view(tasks, workers), [amm.ReduceReplicas()])


def test_reduce_replicas_never_drops_where_a_dependent_is_processing():
    tasks, workers = cluster({"x": [A, B]})
    waiting_dependent(tasks, "x", "d1", on=A)

    out = amm.suggest(view(tasks, workers, {A: 999, B: 0}), [amm.ReduceReplicas()])

    assert out.drop == {"x": [B]}  # A is fuller, but its dependent needs the copy there


def test_reduce_replicas_drops_a_closing_workers_copy_first_and_keeps_one_that_stays():
    tasks, workers = cluster({"x": [A, B], "y": [A, B, C]}, status={A: amm.CLOSING})

    out = amm.suggest(view(tasks, workers, {A: 0, B: 999, C: 500}), [amm.ReduceReplicas()])

    # A is emptiest but leaving: its copies go first; B (fullest) keeps x, its last copy
    # on a worker that stays
    assert out.drop == {"x": [A], "y": [A, B]}


def test_a_key_not_in_memory_is_never_dropped():
    tasks, workers = cluster({"x": [A, B]})
    tasks["x"].state = TS.RELEASED

    assert not amm.suggest(view(tasks, workers), [amm.ReduceReplicas()])


def test_copies_on_their_way_do_not_count_as_copies():
    tasks, workers = cluster({"x": [A]})

    out = amm.suggest(view(tasks, workers, incoming={"x": {B}}), [amm.ReduceReplicas()])

    assert not out


# -- RetireWorker --------------------------------------------------------------------------


def test_retire_worker_copies_unique_keys_to_the_emptiest_running_worker():
    tasks, workers = cluster({"x": [A], "y": [A]}, nbytes=100, status={A: amm.CLOSING})
    policy = amm.RetireWorker(A)

    out = amm.suggest(view(tasks, workers, {A: 0, B: 50, C: 120}), [policy])

    # B is emptier; after x goes there (50 + 100 > 120) y goes to C
    assert out.replicate == {B: {"x": [A]}, C: {"y": [A]}}
    assert not policy.no_recipients
    assert not policy.done(view(tasks, workers))


def test_retire_worker_drops_keys_held_elsewhere_and_is_done():
    tasks, workers = cluster({"x": [A, B]}, status={A: amm.CLOSING})
    policy = amm.RetireWorker(A)

    out = amm.suggest(view(tasks, workers), [policy])

    assert out.drop == {"x": [A]} and out.replicate == {}
    assert policy.done(view(tasks, workers))


def test_retire_worker_copies_what_only_closing_workers_hold():
    tasks, workers = cluster({"x": [A, B]}, status={A: amm.CLOSING, B: amm.CLOSING})
    retire_a, retire_b = amm.RetireWorker(A), amm.RetireWorker(B)

    out = amm.suggest(view(tasks, workers), [retire_a, retire_b])

    assert out.replicate == {C: {"x": [B]}}  # one copy (A's copy was dropped this run)
    assert out.drop == {"x": [A]}
    assert not retire_a.done(view(tasks, workers))  # B, the other holder, leaves too


def test_retire_worker_without_a_running_worker_has_no_recipients():
    tasks, workers = cluster({"x": [A]}, status={A: amm.CLOSING, B: "paused", C: amm.CLOSING})
    policy = amm.RetireWorker(A)

    out = amm.suggest(view(tasks, workers), [policy])

    assert not out and policy.no_recipients


def test_retire_worker_does_not_ask_again_for_a_copy_on_its_way():
    tasks, workers = cluster({"x": [A]}, status={A: amm.CLOSING})

    out = amm.suggest(view(tasks, workers, incoming={"x": {B}}), [amm.RetireWorker(A)])

    assert not out


def test_retire_worker_leaves_results_stored_in_redis():
    tasks, workers = cluster({"x": [A]}, status={A: amm.CLOSING})
    tasks["x"].in_redis = True
    policy = amm.RetireWorker(A)

    assert not amm.suggest(view(tasks, workers), [policy])
    assert policy.done(view(tasks, workers))


def test_retire_worker_of_a_worker_gone_is_done():
    tasks, workers = cluster({"x": [B]})

    policy = amm.RetireWorker(D)

    assert not amm.suggest(view(tasks, workers), [policy]) and policy.done(view(tasks, workers))


def test_recipients_are_running_workers_without_a_copy():
    tasks, workers = cluster({"x": [A]}, status={A: amm.CLOSING, B: "paused"})

    out = amm.suggest(view(tasks, workers, {A: 0, B: 0, C: 10**9}), [amm.RetireWorker(A)])

    assert out.replicate == {C: {"x": [A]}}  # C is full, but B is paused


# -- measures and configuration ---------------------------------------------------------------


def test_measures_read_the_heartbeat_or_the_schedulers_own_count():
    tasks, workers = cluster({"x": [A]}, nbytes=300, workers=(A, B))
    beats = {A: amm.WorkerMemory(process=1000, managed=200, spilled=50)}

    def measure(name: str) -> dict[str, int]:
        return amm.measure_memory(name, workers, tasks, beats)

    assert measure("process") == {A: 1000, B: 0}
    assert measure("managed") == {A: 200, B: 0}
    assert measure("managed_total") == {A: 250, B: 0}
    assert measure("unmanaged") == {A: 800, B: 0}
    assert measure("optimistic") == {A: 300 + 800, B: 0}  # held by the records + unmanaged


def test_policies_are_named_as_rdist_or_dask_names_them():
    assert isinstance(amm.policy_named("ReduceReplicas"), amm.ReduceReplicas)
    named = amm.policy_named("distributed.active_memory_manager.ReduceReplicas")
    assert isinstance(named, amm.ReduceReplicas)
    with pytest.raises(ValueError, match="RetireWorker is started by retire_workers"):
        amm.policy_named("RetireWorker")


# -- the shell's runner (no Redis: a state-like object is enough) ------------------------------


class _State:
    def __init__(self, tasks: dict[str, Task], workers: dict[str, WorkerInfo]) -> None:
        self.tasks, self.workers = tasks, workers


def _request(action: str, workers: list[str] | None = None) -> amm_runner.AmmRequested:
    return amm_runner.AmmRequested("s-1", 0.0, "client-1", f"id-{action}", action, workers or [])


def test_runner_answers_requests_and_switches_on_and_off():
    runner = amm_runner.AmmRunner(False, 2.0, "optimistic", ["ReduceReplicas"])
    state = _State(*cluster({"x": [A, B]}))
    assert not runner.due(100.0)

    runner.request(_request("start"))
    out = runner.run(state, {}, 100.0)

    assert out.replies == [("client-1", wire.AmmReply("id-start", True))]
    assert not out.events  # start() runs nothing now: the first run is an interval later
    assert not runner.due(101.0) and runner.due(102.0)
    timed = runner.run(state, {}, 102.0, timed=True)
    assert [type(e) for e in timed.events] == [ev.DropReplicas]
    runner.request(_request("stop"))
    assert runner.run(state, {}, 103.0).replies[0][1].running is False
    assert not runner.due(1e9)


def test_runner_run_once_drops_through_the_state_machines_event():
    runner = amm_runner.AmmRunner(False, 2.0, "optimistic", ["ReduceReplicas"])
    state = _State(*cluster({"x": [A, B, C]}))

    runner.request(_request("run_once"))
    out = runner.run(state, {}, 5.0)

    (drop,) = out.events
    assert isinstance(drop, ev.DropReplicas) and sorted(drop.keys["x"]) == [B, C]
    assert out.replies[0][1] == wire.AmmReply("id-run_once", False)


def test_runner_asks_each_copy_once_until_it_arrives_or_takes_too_long():
    runner = amm_runner.AmmRunner(False, 2.0, "optimistic", [])
    tasks, workers = cluster({"x": [A]}, status={A: amm.CLOSING})
    state = _State(tasks, workers)

    runner.request(_request("retire", [A]))
    first = runner.run(state, {}, 10.0)
    (target,) = first.copies
    message = first.copies[target]
    assert message.keys == {"x": [A]} and message.to == wire.ReplyTo("n", "")
    assert first.replies[0][1].done is False

    runner.request(_request("retire", [A]))
    assert not runner.run(state, {}, 11.0).copies  # on its way: not asked again

    late = 10.0 + amm_runner.INCOMING_SECONDS + 1
    runner.request(_request("retire", [A]))
    assert runner.run(state, {}, late).copies  # never came: asked again

    tasks["x"].who_has = add_name(tasks["x"].who_has, target)
    workers[target].has_what.add("x")
    runner.request(_request("retire", [A]))
    arrived = runner.run(state, {}, late + 1)
    assert arrived.replies[0][1].done is True and not runner.incoming


def test_runner_refuses_an_unknown_policy_at_its_start():
    with pytest.raises(ValueError, match="Spill"):
        amm_runner.AmmRunner(True, 2.0, "optimistic", ["Spill"])
