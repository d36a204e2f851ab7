"""The geometry of a P2P rechunk (rdist.shuffle.rechunk): splitting every input chunk and
assembling every output chunk gives exactly the array that numpy slicing gives."""

from __future__ import annotations

from itertools import product
from typing import Any

import numpy as np
import pytest

from rdist.shuffle import rechunk

Chunks = tuple[tuple[int, ...], ...]


def bounds(sizes: tuple[int, ...]) -> list[int]:
    return [0, *np.cumsum(sizes).tolist()]


def block(array: Any, chunks: Chunks, index: tuple[int, ...]) -> Any:
    """Chunk ``index`` of ``array`` by plain numpy slicing."""
    region = tuple(
        slice(bounds(axis)[i], bounds(axis)[i + 1]) for axis, i in zip(chunks, index, strict=True)
    )
    return array[region]


def indices(chunks: Chunks) -> list[tuple[int, ...]]:
    return list(product(*(range(len(axis)) for axis in chunks)))


def through_the_exchange(array: Any, old: Chunks, new: Chunks) -> dict[tuple[int, ...], Any]:
    """Every input chunk split, the pieces routed by output chunk, every output assembled."""
    inbox: dict[tuple[int, ...], dict[tuple[int, ...], Any]] = {}
    for source in indices(old):
        for target, piece in rechunk.split(block(array, old, source), source, old, new).items():
            inbox.setdefault(target, {})[source] = piece
    return {t: rechunk.assemble(t, inbox.get(t, {}), old, new) for t in indices(new)}


CASES = [
    pytest.param((10,), ((3, 3, 4),), ((5, 5),), id="1-d"),
    pytest.param((10,), ((10,),), ((1,) * 10,), id="1-d-one-to-many"),
    pytest.param((7, 9), ((2, 5), (4, 4, 1)), ((7,), (3, 6)), id="2-d-uneven"),
    pytest.param((12, 10), ((4,) * 3, (10,)), ((12,), (1,) * 10), id="2-d-rows-to-columns"),
    pytest.param((5, 6, 7), ((2, 3), (1, 5), (3, 4)), ((5,), (3, 3), (2, 2, 3)), id="3-d"),
    pytest.param((6, 4, 5), ((1,) * 6, (4,), (2, 3)), ((3, 3), (1, 3), (5,)), id="3-d-uneven"),
    pytest.param((4, 5), ((4,), (5,)), ((4,), (5,)), id="unchanged"),
]


@pytest.mark.parametrize("dtype", ["float64", "int32", "bool", "complex64", "U3", "object"])
@pytest.mark.parametrize(("shape", "old", "new"), CASES)
def test_every_output_chunk_is_numpys_slice(shape: Any, old: Chunks, new: Chunks, dtype: str):
    rng = np.random.default_rng(3)
    array = (rng.random(shape) * 100).astype(dtype)
    out = through_the_exchange(array, old, new)
    for target, chunk in out.items():
        expected = block(array, new, target)
        assert chunk.dtype == array.dtype
        assert chunk.shape == expected.shape
        np.testing.assert_array_equal(chunk, expected)


def test_pieces_are_placed_exactly_where_they_belong():
    """Distinct values everywhere: a piece misplaced by one element would show."""
    array = np.arange(11 * 13).reshape(11, 13)
    old, new = ((3, 3, 5), (6, 7)), ((4, 7), (2, 2, 9))
    out = through_the_exchange(array, old, new)
    whole = np.block([[out[(i, j)] for j in range(3)] for i in range(2)])
    np.testing.assert_array_equal(whole, array)


def test_an_input_chunk_sends_only_to_the_outputs_it_overlaps():
    old, new = ((5, 5),), ((3, 3, 4),)
    pieces = rechunk.split(np.arange(5), (0,), old, new)
    assert sorted(pieces) == [(0,), (1,)]
    np.testing.assert_array_equal(pieces[(1,)], [3, 4])
    assert rechunk.sources_of((1,), old, new) == {(0,): (slice(0, 2),), (1,): (slice(2, 3),)}


def test_zero_width_chunks_still_assemble_with_the_right_dtype():
    array = np.arange(12, dtype="int16").reshape(3, 4)
    old, new = ((3,), (2, 0, 2)), ((1, 2), (4, 0))
    out = through_the_exchange(array, old, new)
    assert out[(0, 1)].shape == (1, 0) and out[(0, 1)].dtype == np.int16
    np.testing.assert_array_equal(out[(1, 0)], array[1:, :])


def test_a_missing_piece_is_an_error_not_a_wrong_chunk():
    old, new = ((2, 2),), ((4,),)
    with pytest.raises(ValueError, match=r"input chunks \[\(1,\)\] missing"):
        rechunk.assemble((0,), {(0,): np.zeros(2)}, old, new)


def test_a_piece_of_the_wrong_shape_is_an_error():
    old, new = ((2, 2),), ((4,),)
    with pytest.raises(ValueError, match="expected"):
        rechunk.assemble((0,), {(0,): np.zeros(2), (1,): np.zeros(3)}, old, new)


def test_an_input_chunk_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        rechunk.split(np.zeros(3), (0,), ((2, 2),), ((4,),))


def test_chunks_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="same length"):
        rechunk.axis_spans((2, 2), (5,))


def test_chunk_numbers_in_c_order_round_trip():
    chunks = ((1, 1), (1, 1, 1), (1, 1, 1, 1))
    numbers = [rechunk.linear(i, chunks) for i in indices(chunks)]
    assert numbers == list(range(24))
    assert [rechunk.unlinear(n, chunks) for n in numbers] == indices(chunks)
    with pytest.raises(IndexError):
        rechunk.linear((2, 0, 0), chunks)


@pytest.mark.parametrize(("shape", "old", "new"), CASES)
def test_one_piece_alone_is_the_piece_split_makes(shape: Any, old: Chunks, new: Chunks):
    """``piece`` (a group of one input chunk: each output cut on its own) agrees with
    ``split`` for every input and output chunk."""
    array = np.arange(int(np.prod(shape))).reshape(shape)
    for source in indices(old):
        chunk = block(array, old, source)
        pieces = rechunk.split(chunk, source, old, new)
        for target in indices(new):
            if target in pieces:
                np.testing.assert_array_equal(
                    rechunk.piece(chunk, source, target, old, new), pieces[target]
                )
            else:
                with pytest.raises(ValueError, match="sends nothing"):
                    rechunk.piece(chunk, source, target, old, new)
