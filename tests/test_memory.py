"""A worker's memory: spilling to disk and back, the limit's fractions, pausing (no Redis)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from rdist.protocol import serialize
from rdist.worker.memory import MemoryFractions, MemoryMonitor, SpillBuffer, assess

MB = 1_000_000


def array(i: int, mb: int = 1) -> np.ndarray:
    return np.full(mb * MB // 8, float(i))


def spill_files(buf: SpillBuffer) -> list[str]:
    return os.listdir(buf._dir) if buf._dir else []


@pytest.fixture
def buf(tmp_path: Path):
    b = SpillBuffer(target=int(3.5 * MB), directory=str(tmp_path))  # room for 3 arrays
    yield b
    b.close()


def test_least_recently_used_values_spill_past_the_target(buf: SpillBuffer) -> None:
    for i in range(5):
        buf.set(f"k{i}", array(i), MB)
    buf["k0"]  # used again: now the most recent

    assert set(buf.slow) == {"k1", "k2"}
    assert set(buf.fast) == {"k3", "k4", "k0"}
    assert buf.fast_bytes == 3 * MB and buf.memory_bytes <= buf.target
    assert len(spill_files(buf)) == 2 and buf.spilled_bytes > 2 * MB


def test_spilled_values_come_back_transparently(buf: SpillBuffer) -> None:
    for i in range(6):
        buf.set(f"k{i}", array(i), MB)

    for i in range(6):
        np.testing.assert_array_equal(buf[f"k{i}"], array(i))
        assert buf[f"k{i}"].flags.writeable
    assert len(buf) == 6 and set(buf) == {f"k{i}" for i in range(6)}
    assert buf.unspill_count >= 3 and buf.fast_bytes <= 3 * MB


def test_spilled_data_is_served_from_disk_without_being_read_back(buf: SpillBuffer) -> None:
    for i in range(5):
        buf.set(f"k{i}", array(i), MB)
    assert "k0" in buf.slow

    frames = buf.frames("k0")

    np.testing.assert_array_equal(serialize.loads(frames), array(0))
    assert "k0" in buf.slow and buf.unspill_count == 0


def test_discard_and_clear_never_read_spilled_data_back(buf: SpillBuffer) -> None:
    for i in range(5):
        buf.set(f"k{i}", array(i), MB)
    buf.discard("k0")
    assert "k0" not in buf and len(spill_files(buf)) == 1

    buf.clear()
    assert len(buf) == 0 and spill_files(buf) == [] and buf.unspill_count == 0
    assert buf.fast_bytes == buf.spilled_bytes == 0


def test_pop_of_a_spilled_key_returns_its_value(buf: SpillBuffer) -> None:
    for i in range(5):
        buf.set(f"k{i}", array(i), MB)
    np.testing.assert_array_equal(buf.pop("k0"), array(0))
    assert "k0" not in buf and buf.pop("k0", None) is None


def test_unpicklable_values_stay_in_memory(buf: SpillBuffer) -> None:
    buf.set("lock", threading.Lock(), 2 * MB)
    for i in range(3):
        buf.set(f"k{i}", array(i), MB)

    assert "lock" in buf.fast and "lock" in buf.unspillable
    assert "k0" in buf.slow  # others still spill


def test_the_spill_directory_is_removed_on_close(tmp_path: Path) -> None:
    b = SpillBuffer(target=MB, directory=str(tmp_path))
    for i in range(3):
        b.set(f"k{i}", array(i), MB)
    directory = b._dir
    assert directory and os.listdir(directory)

    b.close()

    assert not os.path.exists(directory)


def test_a_worker_without_a_limit_never_spills(tmp_path: Path) -> None:
    b = SpillBuffer(target=0, directory=str(tmp_path))
    for i in range(10):
        b.set(f"k{i}", array(i), MB)
    assert not b.slow and b._dir is None
    b.close()


def test_frames_made_once_serve_every_transfer(buf: SpillBuffer) -> None:
    value = array(7)
    frames = serialize.dumps(value)
    buf.set("k", value, MB, frames)

    assert buf.frames("k") is frames
    assert buf.frames("k") is frames  # kept: its pickle stream is small (arrays are views)


# -- fractions and the monitor ------------------------------------------------------------------


def test_fractions_default_to_dask_values_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert MemoryFractions() == MemoryFractions(0.6, 0.7, 0.8, 0.95)
    monkeypatch.setenv("RDIST_MEMORY_PAUSE", "0.85")
    monkeypatch.setenv("RDIST_MEMORY_TARGET", "0.5")
    fractions = MemoryFractions.from_env(target=0.55)
    assert fractions == MemoryFractions(0.55, 0.7, 0.85, 0.95)
    with pytest.raises(ValueError, match="spill must be between 0 and 1"):
        MemoryFractions(spill=1.5)
    monkeypatch.setenv("RDIST_MEMORY_SPILL", "lots")
    with pytest.raises(ValueError, match="RDIST_MEMORY_SPILL"):
        MemoryFractions.from_env()


@pytest.mark.parametrize(
    "rss, spill, paused, terminate",
    [
        (500, 0, False, False),
        (750, 150, False, False),  # past spill: back down to target (600)
        (850, 250, True, False),
        (960, 360, True, True),
    ],
)
def test_assess_applies_each_fraction(rss: int, spill: int, paused: bool, terminate: bool) -> None:
    verdict = assess(rss, 1000, MemoryFractions())
    assert (verdict.spill_bytes, verdict.paused, verdict.terminate) == (spill, paused, terminate)


def test_zero_fractions_turn_thresholds_off() -> None:
    verdict = assess(999, 1000, MemoryFractions(target=0, spill=0, pause=0, terminate=0))
    assert (verdict.spill_bytes, verdict.paused, verdict.terminate) == (0, False, False)
    assert assess(10**12, 0, MemoryFractions()).spill_bytes == 0  # no limit


def test_monitor_spills_then_pauses_and_resumes(tmp_path: Path) -> None:
    b = SpillBuffer(target=0, directory=str(tmp_path))
    for i in range(4):
        b.set(f"k{i}", array(i), MB)
    rss = [7.5 * MB]
    events: list[bool] = []
    monitor = MemoryMonitor(b, 10 * MB, MemoryFractions(), events.append, rss=lambda: int(rss[0]))

    monitor.check()  # past spill (7 MB): spill until back at target (6 MB)
    assert "k0" in b.slow and events == []

    rss[0] = 9 * MB
    monitor.check()
    assert events == [True] and monitor.paused

    rss[0] = 5 * MB
    monitor.check()
    assert events == [True, False] and not monitor.paused
    b.close()
