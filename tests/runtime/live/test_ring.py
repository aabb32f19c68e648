"""RingBuffer: wrap-around, absolute indices, overflow accounting, one writer + one reader thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_lung.runtime.live.ring import RingBuffer
from edge_lung.runtime.live.sources import CaptureBuffer


def ramp(start: int, n: int) -> np.ndarray:
    """Sample value = absolute index, so any misplaced sample is visible."""
    return np.arange(start, start + n, dtype=np.float32)


def test_wraps_around_and_keeps_absolute_indices():
    ring = RingBuffer(10)
    pos, got = 0, []
    for n in (3, 4, 5, 7, 1, 9, 2):
        ring.write(ramp(pos, n))
        pos += n
        got.append(ring.read())
    assert np.array_equal(np.concatenate(got), ramp(0, pos))
    assert ring.end == pos == ring.read_position
    assert ring.start == pos - 10
    assert ring.lost == 0
    assert np.array_equal(ring.get(pos - 10, pos), ramp(pos - 10, 10))
    assert np.array_equal(ring.get(pos - 4, pos - 1), ramp(pos - 4, 3))


def test_overflow_is_counted_not_hidden():
    ring = RingBuffer(10)
    ring.write(ramp(0, 7))
    ring.write(ramp(7, 18))  # 25 written, reader read nothing: 15 overwritten
    assert ring.available == 10
    assert ring.free() == 10 - 25
    out = ring.read()
    assert np.array_equal(out, ramp(15, 10))
    assert ring.lost == 15
    ring.write(ramp(25, 4))
    assert np.array_equal(ring.read(), ramp(25, 4))
    assert ring.lost == 15


def test_block_longer_than_capacity_keeps_the_newest():
    ring = RingBuffer(8)
    ring.write(ramp(0, 3))
    assert np.array_equal(ring.read(), ramp(0, 3))
    ring.write(ramp(3, 21))
    assert ring.end == 24
    assert np.array_equal(ring.read(), ramp(16, 8))
    assert ring.lost == 13


def test_read_limit_and_free_space():
    ring = RingBuffer(16)
    ring.write(ramp(0, 12))
    assert ring.free() == 4
    assert np.array_equal(ring.read(5), ramp(0, 5))
    assert ring.free() == 9
    assert np.array_equal(ring.read(100), ramp(5, 7))
    assert ring.read().shape == (0,)


def test_get_outside_the_held_range_is_an_error():
    ring = RingBuffer(4)
    ring.write(ramp(0, 6))
    with pytest.raises(ValueError, match=r"expected a range within \[2, 6\)"):
        ring.get(1, 3)
    with pytest.raises(ValueError):
        ring.get(5, 7)


def test_bad_capacity_names_what_was_expected():
    with pytest.raises(ValueError, match="expected a positive capacity"):
        RingBuffer(0)


def test_reset_restarts_indices():
    ring = RingBuffer(4)
    ring.write(ramp(0, 9))
    ring.read()
    ring.reset()
    assert (ring.end, ring.read_position, ring.lost) == (0, 0, 0)


def test_writer_and_reader_threads_lose_nothing_they_do_not_count():
    """A fast writer laps a slow reader: every sample read is in order and reads + lost = written."""
    ring = RingBuffer(256)
    total = 200_000
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 300, size=5000)
    done = threading.Event()

    def writer():
        pos = 0
        for n in sizes:
            n = int(min(n, total - pos))
            if n <= 0:
                break
            ring.write(ramp(pos, n) % 65536)
            pos += n
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    received = 0
    expected_next = 0
    while not (done.is_set() and ring.available == 0):
        time.sleep(0.0002)  # a reader slower than the writer: the ring must be lapped
        before_lost = ring.lost
        block = ring.read(97)
        if block.shape[0]:
            first = expected_next + (ring.lost - before_lost)
            assert np.array_equal(block, ramp(first, block.shape[0]) % 65536), "torn or misplaced samples"
            expected_next = first + block.shape[0]
            received += block.shape[0]
    thread.join()
    assert ring.lost > 0, "the writer never lapped the reader: the overflow path was not exercised"
    assert received + ring.lost == ring.end == min(total, int(sizes.sum()))


def test_capture_buffer_delivers_gaps_in_order():
    buf = CaptureBuffer(100)
    buf.write(ramp(0, 10))
    buf.mark_gap(32, 0.002, "test gap")
    buf.write(ramp(10, 5))
    block, gap = buf.read(1000)
    assert np.array_equal(block, ramp(0, 10)) and gap is None
    block, gap = buf.read(1000)
    assert block.shape == (0,) and gap.samples == 32 and gap.position == 10
    block, gap = buf.read(1000)
    assert np.array_equal(block, ramp(10, 5)) and gap is None
    assert not buf.pending
