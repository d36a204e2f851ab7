"""dask.array rechunks with ``array.rechunk.method="p2p"`` run on rdist through its own
exchange (rdist.shuffle.arrays) and give exactly dask's own answer."""

from __future__ import annotations

from typing import Any

import pytest

da = pytest.importorskip("dask.array")
pytest.importorskip("distributed")  # dask lowers a P2P rechunk with its task classes

import dask  # noqa: E402
import numpy as np  # noqa: E402

from rdist.shuffle import service as shuffle_service  # noqa: E402
from tests.conftest import fake_cluster  # noqa: E402

P2P = {"array.rechunk.method": "p2p"}
DASK_FUNCS = {"rechunk_transfer", "p2p_barrier", "rechunk_unpack"}


def p2p_rechunk(x: Any, chunks: Any, limit: str = "8KiB") -> Any:
    """dask picks the method when the collection is built; it first merges input chunks up
    to ``array.chunk-size`` (the default, 128 MiB, would make these small arrays one chunk:
    groups of one input, which need no exchange)."""
    with dask.config.set({**P2P, "array.chunk-size": limit}):
        return x.rechunk(chunks)


def group_sizes(y: Any) -> list[int]:
    """Input chunks per exchange group of dask's P2P rechunk graph."""
    nodes = dict(y.__dask_graph__()).values()
    return [len(n.dependencies) for n in nodes if type(n).__name__ == "P2PBarrierTask"]


def received(cluster: Any) -> int:
    """Pieces the workers' exchange services stored: > 0 proves the exchange ran."""
    return sum(shuffle_service.service_of(w).received for w in cluster.workers)


def funcs_of(dsk: dict[Any, Any]) -> list[str]:
    return [getattr(getattr(n, "func", None), "__name__", "") for n in dsk.values()]


def dangling(dsk: dict[Any, Any]) -> list[Any]:
    """Tasks depending on keys that are not in the graph (nothing else is submitted here)."""
    return [k for k, n in dsk.items() if set(getattr(n, "dependencies", ())) - set(dsk)]


def rewritten(collection: Any, workers: list[str] | None) -> tuple[dict[Any, Any], dict[str, Any]]:
    """The graph rdist submits for ``collection`` (optimized as ``client.compute`` does);
    ``workers=None``: asking for the live workers fails the test."""
    from rdist.client import collections, graph
    from rdist.shuffle.rewrite import rewrite_p2p

    def live() -> list[str]:
        if workers is None:
            pytest.fail("the rewrite asked for the live workers")
        return workers

    dsk, annotations = collections.materialize(collections._finalized([collection], True))
    return rewrite_p2p(dsk, annotations, live, graph.key_name), annotations


@pytest.mark.parametrize(
    ("shape", "old", "new", "dtype", "exchanged"),
    [
        pytest.param((400, 300), (40, 300), (400, 30), "float64", True, id="rows-to-columns"),
        pytest.param((300, 210), (70, 90), (300, 7), "int64", True, id="2-d-uneven"),
        pytest.param((30, 40, 50), (10, 40, 10), (30, 4, 50), "float32", True, id="3-d"),
        # 1-d: dask's groups have one input chunk each (cut, no exchange)
        pytest.param((600,), (300,), (7,), "int16", False, id="1-d"),
        pytest.param((120, 80), (12, 80), (120, 8), "bool", True, id="bools"),
    ],
)
def test_p2p_rechunk_gives_dasks_own_result(shape, old, new, dtype, exchanged):
    rng = np.random.default_rng(11)
    values = (rng.random(shape) * 1000).astype(dtype)
    x = da.from_array(values, chunks=old)
    y = p2p_rechunk(x, new)
    expected = x.rechunk(new, method="tasks").compute(scheduler="sync")
    with fake_cluster() as (client, cluster):
        got = client.compute(y).result(timeout=60)
        blocks = chunk_shapes(client, y)
        assert (received(cluster) > 0) == exchanged
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, values)
    # every output chunk has the shape dask promised for it
    for index, chunk_shape in blocks.items():
        assert chunk_shape == tuple(c[i] for c, i in zip(y.chunks, index, strict=True))
    assert len(blocks) == np.prod([len(c) for c in y.chunks])


def chunk_shapes(client: Any, y: Any) -> dict[tuple[int, ...], tuple[int, ...]]:
    """The shape of every output chunk of ``y`` as it is held on the workers."""
    from rdist import futures_of

    persisted = client.persist(y)
    futures = futures_of(persisted)
    values = client.gather(futures)
    return {tuple(f.key[1:]): v.shape for f, v in zip(futures, values, strict=True)}


def test_rechunk_followed_by_a_reduction_is_exact():
    """dask fuses each unpack with the sum that follows it (and each transfer with the
    task making its input): the chains are taken apart and the answer is exact."""
    x = da.random.RandomState(7).random_sample((600, 600), chunks=(60, 600))
    y = p2p_rechunk(x, (600, 60)).sum()
    expected = x.sum().compute(scheduler="sync")
    with fake_cluster() as (client, cluster):
        value = client.compute(y).result(timeout=60)
        assert received(cluster) > 0
    assert value == pytest.approx(float(expected), rel=1e-12)


def test_a_rechunk_is_one_transfer_per_input_and_one_unpack_per_output_chunk():
    x = da.ones((100, 100), chunks=(10, 100))
    dsk, annotations = rewritten(p2p_rechunk(x, (100, 10)), ["tcp://b:1", "tcp://a:1"])
    funcs = funcs_of(dsk)
    assert not DASK_FUNCS & set(funcs)
    assert "_execute_subgraph" not in funcs  # the fused chains were taken apart
    assert not dangling(dsk)
    assert funcs.count("transfer") == 10
    assert funcs.count("barrier") == 1
    assert funcs.count("unpack") == 10
    # the owners: contiguous ranges over the sorted workers, as loose restrictions
    restricted = [w for k, w in annotations["workers"].items() if "rechunk-p2p" in str(k)]
    assert sorted(map(tuple, restricted)) == [("tcp://a:1",)] * 5 + [("tcp://b:1",)] * 5
    assert set(annotations["allow_other_workers"].values()) == {True}


def test_groups_of_one_input_chunk_are_cut_where_the_chunk_is_without_an_exchange():
    """The bench's shape, small: dask merges 10 x 10 chunks into rows first, so every group
    has one input chunk; its outputs are slices of it, no piece travels."""
    x = da.random.RandomState(7).random_sample((1000, 1000), chunks=(100, 100))
    y = p2p_rechunk(x, (10, 1000), limit="128MiB")
    dsk, annotations = rewritten(y.sum(), None)  # no owners needed: no worker asked for
    funcs = funcs_of(dsk)
    assert funcs.count("cut") == 100
    assert not {"transfer", "barrier", "unpack"} & set(funcs)
    assert not dangling(dsk)
    assert "workers" not in annotations  # they run where their input chunk is
    with fake_cluster() as (client, cluster):
        got = client.compute(y).result(timeout=60)
        total = client.compute(y.sum()).result(timeout=60)
        assert received(cluster) == 0
    expected = x.compute(scheduler="sync")
    np.testing.assert_array_equal(got, expected)
    assert total == pytest.approx(float(expected.sum()), rel=1e-12)


def test_output_chunks_nobody_unpacks_are_not_sent():
    values = np.arange(200 * 60).reshape(200, 60)
    x = da.from_array(values, chunks=(20, 60))
    y = p2p_rechunk(x, (200, 6))[:, :12]  # two of ten output chunks
    with fake_cluster() as (client, cluster):
        got = client.compute(y).result(timeout=60)
        count = received(cluster)
    np.testing.assert_array_equal(got, values[:, :12])
    assert 0 < count <= 10 * 2  # ten inputs, each with pieces for two outputs only


def test_rechunk_spills_received_pieces_to_disk_beyond_the_budget(monkeypatch):
    monkeypatch.setattr(shuffle_service, "DEFAULT_MEMORY_BUDGET", 64 * 1024)
    x = da.random.RandomState(3).random_sample((800, 400), chunks=(80, 400))
    y = p2p_rechunk(x, (800, 40))
    with fake_cluster() as (client, cluster):
        got = client.compute(y).result(timeout=60)
        spilled = [shuffle_service.service_of(w).inbox.spilled_bytes for w in cluster.workers]
    np.testing.assert_array_equal(got, x.compute(scheduler="sync"))
    assert all(s > 0 for s in spilled), spilled


def test_an_unpacked_chunk_can_be_written_to():
    """The result is the user's: never a read-only view of a received buffer."""
    x = da.from_array(np.arange(400.0).reshape(20, 20), chunks=(2, 20))
    y = p2p_rechunk(x, (20, 2))

    def bump(block: Any) -> Any:
        block += 1
        return block

    with fake_cluster() as (client, _):
        got = client.compute(y.map_blocks(bump, dtype=float)).result(timeout=60)
    np.testing.assert_array_equal(got, np.arange(400.0).reshape(20, 20) + 1)


def test_a_chunk_that_is_not_numpy_is_refused_with_the_setting_to_use():
    masked = np.ma.masked_array(np.arange(1600.0).reshape(40, 40), mask=np.eye(40, dtype=bool))
    x = da.from_array(masked, chunks=(4, 40), asarray=False)
    y = p2p_rechunk(x, (40, 4))
    assert max(group_sizes(y)) > 1  # a real exchange, not a cut of one chunk
    with fake_cluster() as (client, _):
        with pytest.raises(TypeError, match="array.rechunk.method"):
            client.compute(y).result(timeout=60)


def test_losing_an_owner_after_the_rechunk_restarts_it_and_the_result_stays_exact():
    """Output chunks held by a worker that vanishes (no hand-off) are recomputed: their
    pieces went with it, so the group's exchange runs again (run 1, without that worker)."""
    from rdist import futures_of, wait
    from rdist.store import connect

    values = np.arange(400 * 300, dtype="float64").reshape(400, 300)
    y = p2p_rechunk(da.from_array(values, chunks=(40, 300)), (400, 30))
    (token,) = [
        str(n.spec.id) for n in dict(y.dask).values() if type(n).__name__ == "P2PBarrierTask"
    ]
    with fake_cluster() as (client, cluster):
        persisted = client.persist(y)
        wait(futures_of(persisted))
        lost = cluster.workers[1]
        assert client.has_what()[lost.address]  # it holds some of the output chunks
        lost.handoff_on_close = False
        lost.close()
        # in this one process its exchange service outlives it: its pieces go as they
        # would with the process
        shuffle_service.service_of(lost).inbox.forget(f"{token}:0")
        again = client.compute(persisted).result(timeout=60)
        store = connect(cluster.url, cluster.cluster_name)
        run, owners = store.exchanges.current(token)
        store.close()
    np.testing.assert_array_equal(again, values)
    assert run == 1
    assert owners == [cluster.workers[0].address] * 10
