"""Wire formats: pickled user data, msgpack control messages, task specs."""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from typing import Any

import msgpack
import numpy as np
import pytest

from rdist.protocol import serialize, spec
from rdist.protocol.serialize import SerializationError
from rdist.protocol.spec import DepRef

# -- serialize ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "text",
        b"\x00bytes",
        [1, (2, 3), {"a": {4, 5}}],
        OrderedDict(b=1, a=2),
        {("tuple", "key"): 1.5},
    ],
)
def test_blob_round_trips_plain_python_values(value):
    assert serialize.from_blob(serialize.to_blob(value)) == value


def test_numpy_array_travels_out_of_band_without_copying_its_buffer():
    array = np.arange(10_000, dtype="float64")

    frames = serialize.dumps(array)

    assert len(frames) == 2
    assert len(frames[0]) < 1_000  # the pickle stream holds only metadata
    assert np.shares_memory(np.frombuffer(frames[1], dtype="float64"), array)


def test_numpy_array_is_rebuilt_on_top_of_the_received_buffer():
    array = np.arange(10_000, dtype="int32").reshape(100, 100)
    head, buffer = serialize.dumps(array)
    received = bytearray(buffer)  # as a socket read would deliver it

    result = serialize.loads([head, memoryview(received)])

    np.testing.assert_array_equal(result, array)
    assert np.shares_memory(result, np.frombuffer(received, dtype="int32"))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(100_000, dtype="float64"),
        np.random.default_rng(0).random(50_000),
        np.arange(20).reshape(4, 5)[:, ::2],  # not contiguous
        np.array(["a", "bc"], dtype=object),
    ],
)
def test_numpy_arrays_round_trip_through_a_blob(array):
    result = serialize.from_blob(serialize.to_blob(array))

    np.testing.assert_array_equal(result, array)
    assert result.dtype == array.dtype


def test_lambdas_and_closures_are_pickled_by_value():
    offset = 10
    func = serialize.from_blob(serialize.to_blob(lambda x: x + offset))

    assert func(5) == 15


def test_dumps_function_pickles_a_lambda():
    import cloudpickle

    assert cloudpickle.loads(serialize.dumps_function(lambda: "hi"))() == "hi"


def test_unpicklable_object_raises_serialization_error_naming_its_type():
    with pytest.raises(SerializationError, match="lock"):
        serialize.dumps(threading.Lock())


def test_unpicklable_object_nested_in_a_container_raises_serialization_error():
    with pytest.raises(SerializationError):
        serialize.to_blob({"ok": 1, "bad": [threading.Lock()]})


def test_unpicklable_function_raises_serialization_error():
    lock = threading.Lock()

    with pytest.raises(SerializationError, match="cannot serialize function"):
        serialize.dumps_function(lambda: lock)


def test_serialization_error_is_a_type_error():
    assert issubclass(SerializationError, TypeError)


def _flags(header: bytes) -> list[bool]:
    return msgpack.unpackb(header)[1]


def test_large_compressible_frame_is_compressed_with_lz4():
    frame = bytes(1 << 20)

    header, out = serialize.encode_frames([frame])

    assert _flags(header) == [True]
    assert len(out[0]) < len(frame) // 10
    assert bytes(serialize.decode_frames(header, out)[0]) == frame


def test_small_frame_is_never_compressed():
    frame = bytes(4_000)

    header, out = serialize.encode_frames([frame])

    assert _flags(header) == [False]
    assert out[0] is frame


def test_large_incompressible_frame_is_sent_as_is():
    frame = np.random.default_rng(1).bytes(1 << 20)

    header, out = serialize.encode_frames([frame])

    assert _flags(header) == [False]
    assert out[0] is frame


def test_compression_can_be_switched_off():
    frame = bytes(1 << 20)

    header, out = serialize.encode_frames([frame], compress=False)

    assert _flags(header) == [False]
    assert out[0] is frame


def test_header_records_the_length_of_every_frame_as_sent():
    frames = [b"head", bytes(1 << 20), memoryview(b"abc")]

    header, out = serialize.encode_frames(frames)

    lengths, _ = msgpack.unpackb(header)
    assert lengths == [serialize.frame_nbytes(f) for f in out]
    assert lengths[0] == 4 and lengths[2] == 3


def test_blob_of_compressible_data_is_smaller_than_the_data():
    array = np.zeros(1 << 18)

    blob = serialize.to_blob(array)

    assert len(blob) < array.nbytes // 10
    np.testing.assert_array_equal(serialize.from_blob(blob), array)


def test_blob_without_the_magic_prefix_is_rejected():
    with pytest.raises(SerializationError, match="not an rdist data blob"):
        serialize.from_blob(b"\x80\x05pickle-not-a-blob")


@pytest.mark.parametrize("cut", [5, 12, -10])
def test_truncated_blob_raises_serialization_error(cut):
    blob = serialize.to_blob(np.arange(1_000.0))

    with pytest.raises(SerializationError):
        serialize.from_blob(blob[:cut])


def test_corrupt_pickle_stream_raises_serialization_error():
    with pytest.raises(SerializationError, match="cannot deserialize"):
        serialize.loads([b"\x80\x05garbage"])


class _RefusesToLoad:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_fail_on_load, ())


def _fail_on_load() -> None:
    raise RuntimeError("this class cannot be rebuilt here")


def test_object_failing_on_load_raises_serialization_error():
    blob = serialize.to_blob(_RefusesToLoad())

    with pytest.raises(SerializationError, match="cannot be rebuilt"):
        serialize.from_blob(blob)


# -- spec --------------------------------------------------------------------------------


def test_depref_survives_pickling_with_its_key():
    ref = serialize.from_blob(serialize.to_blob([DepRef("inc-abc")]))[0]

    assert type(ref) is DepRef and ref.key == "inc-abc"
    assert repr(ref) == "DepRef('inc-abc')"


def test_replace_refs_substitutes_values_in_nested_containers_keeping_their_types():
    data = {"a": 1, "b": "two"}
    args = (
        [DepRef("a"), (DepRef("b"), 3)],
        {"k": {"deep": DepRef("a")}},
        {DepRef("b")},
        frozenset([DepRef("a")]),
    )

    out = spec.replace_refs(args, data)

    assert out == ([1, ("two", 3)], {"k": {"deep": 1}}, {"two"}, frozenset([1]))
    assert type(out[0][1]) is tuple and type(out[3]) is frozenset


def test_replace_refs_leaves_other_objects_untouched():
    marker = object()

    assert spec.replace_refs([marker, "a"], {"a": 1}) == [marker, "a"]
    assert spec.replace_refs([marker], {})[0] is marker


def test_evaluate_node_calls_tuple_tasks_with_evaluated_arguments():
    node = (operator.add, DepRef("x"), (operator.mul, 2, DepRef("y")))

    assert spec.evaluate_node(node, {"x": 1, "y": 10}) == 21


def test_evaluate_node_maps_over_lists_and_dict_values():
    node = [DepRef("x"), (len, [DepRef("x"), DepRef("x")]), {"k": (abs, -3)}]

    assert spec.evaluate_node(node, {"x": 5}) == [5, 2, {"k": 3}]


def test_evaluate_node_resolves_an_alias_to_its_value():
    assert spec.evaluate_node(DepRef("x"), {"x": [1, 2]}) == [1, 2]


@pytest.mark.parametrize("literal", [3, "text", ("not", "a", "task"), (), None])
def test_evaluate_node_returns_literals_as_they_are(literal):
    assert spec.evaluate_node(literal, {}) == literal


def _kwargs_call(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    return args, kwargs


def test_run_spec_call_mode_calls_the_function_with_args_and_kwargs():
    blob = serialize.to_blob(((1, 2), {"z": 3}))

    assert spec.run_spec(_kwargs_call, blob, spec.CALL, {}) == ((1, 2), {"z": 3})


def test_run_spec_call_with_deps_replaces_refs_in_args_and_kwargs():
    blob = serialize.to_blob(((DepRef("a"), [DepRef("b")]), {"z": {"n": DepRef("a")}}))

    result = spec.run_spec(_kwargs_call, blob, spec.CALL_WITH_DEPS, {"a": 1, "b": 2})

    assert result == ((1, [2]), {"z": {"n": 1}})


def test_run_spec_call_mode_does_not_look_at_refs():
    blob = serialize.to_blob(((DepRef("a"),), {}))

    (ref,), _ = spec.run_spec(_kwargs_call, blob, spec.CALL, {"a": 1})

    assert type(ref) is DepRef


def test_run_spec_graph_node_mode_evaluates_the_expression():
    blob = serialize.to_blob((operator.sub, DepRef("a"), 1))

    assert spec.run_spec(None, blob, spec.GRAPH_NODE, {"a": 10}) == 9


def test_spec_round_trips_through_pack_and_unpack():
    func_hash = spec.function_hash(b"pickled function")

    assert spec.unpack_spec(spec.pack_spec(func_hash, b"args", spec.GRAPH_NODE)) == (
        func_hash,
        b"args",
        spec.GRAPH_NODE,
    )


def test_function_hash_is_deterministic_and_content_addressed():
    assert spec.function_hash(b"f") == spec.function_hash(b"f")
    assert spec.function_hash(b"f") != spec.function_hash(b"g")
    assert len(spec.function_hash(b"f")) == 16
