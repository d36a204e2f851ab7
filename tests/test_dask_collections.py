"""Dask collections on rdist give the answers of dask's local scheduler."""

from __future__ import annotations

import pytest

da = pytest.importorskip("dask.array")
np = pytest.importorskip("numpy")
import dask  # noqa: E402

from rdist import Future  # noqa: E402
from tests.conftest import fake_cluster  # noqa: E402


@pytest.fixture(scope="module")
def c():
    with fake_cluster(2, nthreads=2) as (client, _):
        yield client


@pytest.fixture(scope="module")
def dd():
    return pytest.importorskip("dask.dataframe")


@pytest.fixture(scope="module")
def pd():
    return pytest.importorskip("pandas")


def local(x):
    return dask.compute(x, scheduler="sync")[0]


# -- dask.array --------------------------------------------------------------------------------


def test_array_reduction_via_dask_compute_with_client_get(c):
    x = da.arange(10_000, chunks=1_000).reshape(100, 100).rechunk(25)
    total = (x**2).sum()

    (value,) = dask.compute(total, scheduler=c.get)

    assert value == local(total)


def test_array_transpose_and_mean_match_the_local_scheduler(c):
    rng = da.random.default_rng(42)
    x = rng.random((400, 400), chunks=(50, 50))
    y = (x + x.T).mean(axis=0)

    np.testing.assert_allclose(y.compute(scheduler=c.get), local(y))


def test_client_compute_returns_a_future_of_the_collection_value(c):
    x = da.ones((200, 200), chunks=50)

    future = c.compute(x.sum())

    assert isinstance(future, Future)
    assert future.result(timeout=30) == 40_000


def test_client_compute_of_a_list_returns_a_list_of_futures(c):
    x = da.arange(100, chunks=10)

    futures = c.compute([x.sum(), x.max()])

    assert c.gather(futures) == [4950, 99]


def test_persist_returns_a_collection_backed_by_futures_that_computes_further(c):
    x = da.arange(1_000, chunks=100)

    persisted = c.persist(x + 1)

    graph = dict(persisted.__dask_graph__())
    assert all(
        isinstance(v, Future) or isinstance(getattr(v, "value", None), Future)
        for v in graph.values()
    )
    assert (persisted * 2).sum().compute(scheduler=c.get) == 2 * sum(range(1, 1_001))
    np.testing.assert_array_equal(c.compute(persisted).result(timeout=30), np.arange(1, 1_001))


def test_annotations_become_task_restrictions_and_retries(c):
    worker = c.scheduler_info()["workers"]
    address = sorted(worker)[0]
    with dask.annotate(workers=[address], retries=2):
        x = da.ones(100, chunks=10) + 1

    future = c.compute(x.sum(), optimize_graph=False)

    assert future.result(timeout=30) == 200
    records = dict(c.store.tasks.all())
    annotated = [r for k, r in records.items() if k.startswith("('add")]
    assert annotated and all(r.restrictions == [address] and r.retries == 2 for r in annotated)


def test_priorities_follow_dask_order(c):
    from rdist.client import collections

    x = da.ones((100, 100), chunks=25)
    graph, _ = collections.materialize((x + x.T).sum().__dask_graph__())

    order = collections.graph_order(graph)

    assert sorted(order.values()) == list(range(len(graph)))
    assert order == {k: int(v) for k, v in dask.order.order(graph).items()}


# -- dask.dataframe ----------------------------------------------------------------------------


def frame(dd, pd, n=2_000, parts=8):
    df = pd.DataFrame(
        {"k": np.arange(n) % 13, "v": np.arange(n, dtype=float), "w": (np.arange(n) * 7) % 101}
    )
    return df, dd.from_pandas(df, npartitions=parts)


def test_dataframe_reductions(c, dd, pd):
    pdf, ddf = frame(dd, pd)

    total, mean = dask.compute(ddf.v.sum(), ddf.w.mean(), scheduler=c.get)

    assert total == pdf.v.sum() and mean == pytest.approx(pdf.w.mean())


def test_dataframe_groupby(c, dd, pd):
    _, ddf = frame(dd, pd)
    grouped = ddf.groupby("k").v.agg(["sum", "count"])

    result = grouped.compute(scheduler=c.get)

    pd.testing.assert_frame_equal(result.sort_index(), local(grouped).sort_index())


def test_dataframe_shuffle_uses_tasks_and_matches(c, dd, pd):
    _, ddf = frame(dd, pd)
    shuffled = ddf.shuffle("w", npartitions=4)

    future = c.compute(shuffled)
    result = future.result(timeout=60)

    task_keys = [k for k, _ in c.store.tasks.all() if "shuffle" in k]
    assert any("taskshuffle" in k for k in task_keys)
    assert not any("diskshuffle" in k or "p2p" in k for k in task_keys)

    expected = local(ddf.shuffle("w", npartitions=4, shuffle_method="tasks"))
    pd.testing.assert_frame_equal(
        result.sort_values("v").reset_index(drop=True),
        expected.sort_values("v").reset_index(drop=True),
    )
    # each output partition holds whole groups of the shuffle column
    parts = c.persist(shuffled).to_delayed()
    values = dask.compute(*parts, scheduler=c.get)
    owners = {}
    for i, part in enumerate(values):
        for w in set(part.w):
            assert owners.setdefault(w, i) == i


def test_dataframe_merge(c, dd, pd):
    left_p, left = frame(dd, pd, 1_000, 5)
    right_p = pd.DataFrame({"k": np.arange(13), "name": [f"n{i}" for i in range(13)]})
    right = dd.from_pandas(right_p, npartitions=3)
    merged = left.merge(right, on="k", how="inner", shuffle_method="tasks")

    result = merged.compute(scheduler=c.get)

    expected = local(merged)
    assert len(result) == len(left_p.merge(right_p, on="k", how="inner"))
    key = ["v", "k"]
    pd.testing.assert_frame_equal(
        result.sort_values(key).reset_index(drop=True),
        expected.sort_values(key).reset_index(drop=True),
    )
