"""dask.dataframe shuffles on rdist with ``shuffle_method="p2p"`` run through rdist's own
exchange (rdist.shuffle) and give dask's own answers."""

from __future__ import annotations

from typing import Any

import pytest

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")  # dask lowers a P2P shuffle with its task classes

import dask  # noqa: E402
import numpy as np  # noqa: E402

from rdist.shuffle import service as shuffle_service  # noqa: E402
from rdist.shuffle import tasks as shuffle_tasks  # noqa: E402
from tests.conftest import fake_cluster  # noqa: E402

P2P = {"dataframe.shuffle.method": "p2p"}


def frame(n: int = 3000, nkeys: int = 40, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"k": rng.integers(0, nkeys, n), "v": rng.random(n), "w": np.arange(n)},
        index=pd.RangeIndex(n, name="i"),
    )


@pytest.fixture(autouse=True)
def p2p() -> Any:
    """Every collection of these tests is built with the P2P method (dask picks the method
    when the collection is built, not when it is computed)."""
    with dask.config.set(P2P):
        yield


def local(build: Any) -> Any:
    """dask's own answer: the collection built with the task-based method (dask's P2P needs
    a dask.distributed cluster), on the synchronous scheduler."""
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        return build().compute(scheduler="sync")


def on_rdist(client: Any, collection: Any) -> Any:
    return client.compute(collection).result(timeout=60)


def received(cluster: Any) -> int:
    """Pieces the workers' exchange services stored: > 0 proves the exchange ran."""
    return sum(shuffle_service.service_of(w).received for w in cluster.workers)


def by_w(df: Any) -> Any:
    return df.sort_values("w").reset_index(drop=True)


def exchange_funcs(collection: Any) -> set[str]:
    from rdist.client import collections

    dsk, _ = collections.materialize(collection.__dask_graph__())
    return {getattr(getattr(n, "func", None), "__name__", "") for n in dsk.values()}


def test_p2p_graph_of_a_shuffle_is_what_rdist_rewrites():
    """The structure the rewrite relies on: dask's transfer, barrier and unpack functions."""
    ddf = dd.from_pandas(frame(), npartitions=6)
    funcs = exchange_funcs(ddf.shuffle("k"))
    assert {"_shuffle_transfer", "p2p_barrier", "shuffle_unpack"} <= funcs


def test_shuffle_puts_every_key_in_one_partition_and_keeps_every_row():
    pdf = frame()
    ddf = dd.from_pandas(pdf, npartitions=6)
    shuffled = ddf.shuffle("k", npartitions=5)
    with fake_cluster() as (client, cluster):
        result = on_rdist(client, shuffled)
        parts = [on_rdist(client, shuffled.get_partition(i)) for i in range(5)]
        assert received(cluster) > 0
    assert by_w(result).equals(by_w(pdf))
    keys = [set(p["k"]) for p in parts]
    assert sum(len(k) for k in keys) == len(set().union(*keys)) == pdf["k"].nunique()


def test_shuffle_partitions_match_dasks_own():
    """Same rows in the same output partition as dask's P2P shuffle (order within aside)."""
    pdf = frame(seed=1)
    ddf = dd.from_pandas(pdf, npartitions=7)
    shuffled = ddf.shuffle("k", npartitions=4)
    expected = [
        by_w(local(lambda i=i: ddf.shuffle("k", npartitions=4).get_partition(i))) for i in range(4)
    ]
    with fake_cluster() as (client, cluster):
        got = [by_w(on_rdist(client, shuffled.get_partition(i))) for i in range(4)]
        assert received(cluster) > 0
    for mine, theirs in zip(got, expected, strict=True):
        pd.testing.assert_frame_equal(mine, theirs)


def test_set_index_gives_dasks_result():
    pdf = frame(seed=2)
    ddf = dd.from_pandas(pdf, npartitions=6)
    with fake_cluster() as (client, cluster):
        result = on_rdist(client, ddf.set_index("k"))
        assert received(cluster) > 0
    expected = local(lambda: ddf.set_index("k"))
    assert result.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(
        result.reset_index().sort_values(["k", "w"]).reset_index(drop=True),
        expected.reset_index().sort_values(["k", "w"]).reset_index(drop=True),
    )


def test_sort_values_gives_dasks_result():
    """Persisted, so that dask keeps the partitions (computing a whole frame at once, it
    would sort one concatenated partition instead)."""
    pdf = frame(seed=3)
    ddf = dd.from_pandas(pdf, npartitions=5)
    with fake_cluster() as (client, cluster):
        persisted = client.persist(ddf.sort_values("v"))
        assert persisted.npartitions > 1
        result = on_rdist(client, persisted)
        assert received(cluster) > 0
    pd.testing.assert_frame_equal(result, pdf.sort_values("v"))
    pd.testing.assert_frame_equal(result, local(lambda: ddf.sort_values("v")))


def test_empty_output_partitions_keep_the_schema():
    pdf = frame(n=50, nkeys=2, seed=4)
    ddf = dd.from_pandas(pdf, npartitions=3)
    shuffled = ddf.shuffle("k", npartitions=6)
    with fake_cluster() as (client, cluster):
        parts = [on_rdist(client, shuffled.get_partition(i)) for i in range(6)]
        assert received(cluster) > 0
    assert sum(len(p) for p in parts) == len(pdf)
    assert any(len(p) == 0 for p in parts)
    for p in parts:
        assert list(p.columns) == ["k", "v", "w"]
        assert dict(p.dtypes) == dict(pdf.dtypes)


def test_exchange_spills_received_pieces_to_disk_beyond_its_budget(monkeypatch):
    monkeypatch.setattr(shuffle_service, "DEFAULT_MEMORY_BUDGET", 64 * 1024)
    pdf = frame(n=40_000, nkeys=500, seed=5)
    ddf = dd.from_pandas(pdf, npartitions=8)
    with fake_cluster() as (client, cluster):
        result = on_rdist(client, ddf.shuffle("k", npartitions=8))
        spilled = [shuffle_service.service_of(w).inbox.spilled_bytes for w in cluster.workers]
    assert by_w(result).equals(by_w(pdf))
    assert all(s > 0 for s in spilled), spilled


def test_exchange_has_one_task_per_input_and_output_partition():
    from rdist.client import collections, graph
    from rdist.shuffle.rewrite import rewrite_p2p

    ddf = dd.from_pandas(frame(), npartitions=9)
    dsk, annotations = collections.materialize(ddf.shuffle("k", npartitions=4).__dask_graph__())
    dsk = rewrite_p2p(dsk, annotations, lambda: ["tcp://b:1", "tcp://a:1"], graph.key_name)
    funcs = [getattr(getattr(n, "func", None), "__name__", "") for n in dsk.values()]
    assert funcs.count("transfer") == 9
    assert funcs.count("barrier") == 1
    assert funcs.count("unpack") == 4
    assert not {"_shuffle_transfer", "p2p_barrier", "shuffle_unpack"} & set(funcs)
    # the owners: contiguous ranges over the sorted workers, as loose restrictions
    restricted = sorted(annotations["workers"].items())
    assert [w for _, w in restricted] == [["tcp://a:1"]] * 2 + [["tcp://b:1"]] * 2
    assert set(annotations["allow_other_workers"].values()) == {True}


def test_split_cuts_by_the_partition_column_and_drops_it():
    from rdist.shuffle.plan import ExchangePlan

    df = pd.DataFrame({"x": [5, 6, 7, 8, 9], "_p": [2, 0, 2, 1, 0]})
    plan = ExchangePlan("t", "_p", ("a",) * 3, "shuffle-transfer-t", 1, "b")
    pieces = shuffle_tasks.split(df, plan)
    assert sorted(pieces) == [0, 1, 2]
    as_frames = {p: shuffle_tasks.assemble([piece], df) for p, piece in pieces.items()}
    assert as_frames[0]["x"].tolist() == [6, 9]
    assert as_frames[1]["x"].tolist() == [8]
    assert as_frames[2]["x"].tolist() == [5, 7]
    assert list(as_frames[0].columns) == ["x"]
    assert as_frames[0].index.tolist() == [1, 4]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"s": ["a", "b", "c", "d", "e", "f"]},  # strings: DataFrame pieces
        {"c": pd.Categorical(["x", "y", "x", "y", "x", "y"])},
        {"t": pd.date_range("2026-01-01", periods=6)},
    ],
)
def test_pieces_assemble_to_the_rows_of_their_partition_with_dtypes_kept(extra):
    from rdist.protocol import serialize
    from rdist.shuffle.plan import ExchangePlan

    df = pd.DataFrame(
        {"x": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5], "_p": [1, 0, 1, 0, 1, 1], **extra},
        index=pd.Index([10, 11, 12, 13, 14, 15], name="i"),
    )
    plan = ExchangePlan("t", "_p", ("a",) * 2, "shuffle-transfer-t", 1, "b")
    halves = [shuffle_tasks.split(df.iloc[:3], plan), shuffle_tasks.split(df.iloc[3:], plan)]
    for part in (0, 1):
        pieces = [serialize.loads(serialize.dumps(h[part])) for h in halves if part in h]
        got = shuffle_tasks.assemble(pieces, df.drop(columns="_p"))
        expected = df[df["_p"] == part].drop(columns="_p")
        pd.testing.assert_frame_equal(got, expected)


def test_losing_an_owner_after_the_shuffle_restarts_it_and_the_result_stays_exact():
    """Outputs held by a worker that vanishes (no hand-off) are recomputed: their pieces went
    with it, so the exchange runs again (run 1, the lost worker excluded) and every
    partition is exact."""
    from rdist import futures_of, wait
    from rdist.store import connect

    pdf = frame(n=40_000, seed=6)  # outputs too large to be kept in Redis
    ddf = dd.from_pandas(pdf, npartitions=6)
    shuffled = ddf.shuffle("k", npartitions=4)
    token = next(
        str(n.spec.id)
        for n in dict(shuffled.__dask_graph__()).values()
        if type(n).__name__ == "P2PBarrierTask"
    )
    with fake_cluster() as (client, cluster):
        persisted = client.persist(shuffled)
        wait(futures_of(persisted))  # not computed on: no copy of its outputs elsewhere
        lost = cluster.workers[1]
        assert client.has_what()[lost.address]  # it holds some of the outputs
        lost.handoff_on_close = False
        lost.close()
        # in this one process its exchange service outlives it: its pieces go as they
        # would with the process
        shuffle_service.service_of(lost).inbox.forget(f"{token}:0")
        again = by_w(on_rdist(client, persisted))
        store = connect(cluster.url, cluster.cluster_name)
        run, owners = store.exchanges.current(token)
        store.close()
    assert again.equals(by_w(pdf))
    assert run == 1
    assert owners == [cluster.workers[0].address] * 4


def test_merge_gives_pandas_result_through_two_exchanges():
    rng = np.random.default_rng(7)
    left = pd.DataFrame({"k": rng.integers(0, 300, 5000), "v": rng.random(5000)})
    right = pd.DataFrame({"k": np.arange(0, 400, 2), "t": np.arange(200.0)})
    merged = dd.from_pandas(left, npartitions=6).merge(
        dd.from_pandas(right, npartitions=3), on="k", how="inner"
    )
    assert "merge_unpack" in exchange_funcs(merged)
    with fake_cluster() as (client, cluster):
        result = on_rdist(client, merged)
        assert received(cluster) > 0
    expected = left.merge(right, on="k", how="inner")
    pd.testing.assert_frame_equal(
        result.sort_values(["k", "v"]).reset_index(drop=True),
        expected.sort_values(["k", "v"]).reset_index(drop=True),
    )


def test_left_merge_of_int_and_float_keys_meets_on_equal_values():
    """Both sides hash numbers as float64: an int key finds the equal float key."""
    left = pd.DataFrame({"k": np.arange(40), "v": np.arange(40) * 10})
    right = pd.DataFrame({"k": np.arange(0, 40, 3).astype("float64"), "t": 1.0})
    with pytest.warns(UserWarning, match="data type mismatches"):
        merged = dd.from_pandas(left, npartitions=4).merge(
            dd.from_pandas(right, npartitions=2), on="k", how="left"
        )
    with fake_cluster() as (client, _):
        result = on_rdist(client, merged)
    expected = left.merge(right, on="k", how="left")
    pd.testing.assert_frame_equal(
        result.sort_values("v").reset_index(drop=True),
        expected.sort_values("v").reset_index(drop=True),
    )


def test_groupby_aggregation_merged_back_gives_the_exact_sum():
    """The bench's groupby-agg + merge, small."""
    pdf = frame(n=20_000, nkeys=700, seed=8)
    ddf = dd.from_pandas(pdf, npartitions=8)
    totals = ddf.groupby("k").v.sum().rename("total").reset_index()
    joined = ddf.merge(totals, on="k").total.sum()
    with fake_cluster() as (client, _):
        value = on_rdist(client, joined)
    g = pdf.groupby("k").v.agg(["sum", "count"])
    assert value == pytest.approx(float((g["sum"] * g["count"]).sum()), rel=1e-9)
