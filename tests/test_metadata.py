"""client.set_metadata / get_metadata: a shared tree of plain values, as dask's."""

from __future__ import annotations

import threading

import pytest

from rdist import Client


def test_values_by_key_and_by_path(c: Client) -> None:
    c.set_metadata("x", 1)
    c.set_metadata(["a", "b", "c"], {"d": [1, 2]})
    c.set_metadata(["a", "e"], "f")
    assert c.get_metadata("x") == 1
    assert c.get_metadata("a") == {"b": {"c": {"d": [1, 2]}}, "e": "f"}
    assert c.get_metadata(["a", "b", "c", "d"]) == [1, 2]
    assert c.get_metadata(["a", "nope"], default=None) is None
    with pytest.raises(KeyError):
        c.get_metadata("missing")


def test_two_writers_of_one_tree_lose_nothing(c: Client) -> None:
    def write(prefix: str) -> None:
        for i in range(30):
            c.set_metadata(["tree", f"{prefix}{i}"], i)

    threads = [threading.Thread(target=write, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(c.get_metadata("tree")) == 60


def test_only_plain_values_and_str_keys(c: Client) -> None:
    with pytest.raises(TypeError, match="msgpack"):
        c.set_metadata("k", object())
    with pytest.raises(TypeError, match="keys="):
        c.set_metadata(3, 1)
    with pytest.raises(TypeError, match="keys="):
        c.get_metadata([])
