"""Preallocated float32 ring buffer with absolute sample indices and overflow accounting.

Modelled on sherpa-onnx's `circular-buffer.h`: fixed capacity, never grows, and every
sample has an ever-increasing absolute index (index / sample_rate is its timestamp).
One writer (the audio callback) and one reader (the pipeline thread) may run on different
threads without a lock: the writer never blocks, and when it laps the reader the oldest
unread samples are overwritten and counted in `lost` instead of being silently replaced.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """Fixed-capacity float32 ring; `write` never blocks or allocates, `read` returns unread samples."""

    def __init__(self, capacity: int) -> None:
        if int(capacity) <= 0:
            raise ValueError(f"RingBuffer: expected a positive capacity in samples, got {capacity}")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Empty the buffer and restart absolute indices at 0."""
        self._end = 0  # absolute index one past the last fully written sample
        self._writing = 0  # absolute index one past the sample the writer may be touching now
        self._read = 0  # absolute index of the next sample `read` returns
        self.lost = 0  # unread samples overwritten by the writer (reader too slow)

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample (= samples written so far)."""
        return self._end

    @property
    def start(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self._end - self.capacity)

    @property
    def read_position(self) -> int:
        """Absolute index of the next sample `read` will return."""
        return self._read

    @property
    def available(self) -> int:
        """Unread samples still held."""
        return self._end - max(self._read, self.start)

    def free(self) -> int:
        """Samples that can be written without overwriting unread ones (for producers that may wait)."""
        return self.capacity - (self._end - self._read)

    def write(self, block: np.ndarray) -> None:
        """Append `block` (float32[n]); the oldest samples are overwritten when full.

        Safe to call from an audio callback: no allocation beyond numpy's slice views, no lock.
        """
        n = int(block.shape[0])
        if n == 0:
            return
        end = self._end
        if n > self.capacity:  # only the newest `capacity` samples can survive
            block = block[n - self.capacity :]
            end += n - self.capacity
            n = self.capacity
        self._writing = end + n  # announce the slots about to change before touching them
        pos = end % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = block[:first]
        if first < n:
            self._buf[: n - first] = block[first:]
        self._end = end + n

    def read(self, max_samples: int | None = None) -> np.ndarray:
        """Copy out the unread samples (at most `max_samples`) and advance the read position.

        Samples the writer overwrote before they were read are skipped and added to `lost`.
        """
        end = self._end
        begin = self._read
        if end - begin > self.capacity:
            self.lost += end - self.capacity - begin
            begin = end - self.capacity
        if max_samples is not None:
            end = min(end, begin + int(max_samples))
        out = self._copy(begin, end)
        # The writer may have lapped us during the copy: drop what it overwrote (seqlock-style check).
        valid_from = self._writing - self.capacity
        if valid_from > begin:
            cut = min(valid_from, end) - begin
            self.lost += cut
            out = out[cut:]
            begin += cut
        self._read = begin + out.shape[0]
        return out

    def get(self, start: int, stop: int) -> np.ndarray:
        """Copy of the absolute range [start, stop); ValueError if it is not (or no longer) held."""
        if not self.start <= start <= stop <= self._end:
            raise ValueError(
                f"RingBuffer.get: expected a range within [{self.start}, {self._end}), got [{start}, {stop})"
            )
        return self._copy(start, stop)

    def _copy(self, start: int, stop: int) -> np.ndarray:
        n = stop - start
        out = np.empty(n, dtype=np.float32)
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self._buf[pos : pos + first]
        if first < n:
            out[first:] = self._buf[: n - first]
        return out
