"""Inference on a worker thread, with a bounded hand-off: windows are skipped, never queued without bound."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from edge_lung.runtime.live.stream import Window

_STOP = object()


class InferenceWorker:
    """Runs `infer(window)` on its own thread; results come back in submission order.

    `backpressure=False` (live capture): at most `max_pending` windows wait; a new window
    replaces the oldest waiting one, which is counted in `skipped`. `backpressure=True`
    (replay as fast as possible): `submit` waits for room instead, so nothing is skipped.
    """

    def __init__(
        self, infer: Callable[[Window], Any], max_pending: int = 1, backpressure: bool = False
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"InferenceWorker: expected max_pending >= 1, got {max_pending}")
        self._infer = infer
        self._in: queue.Queue = queue.Queue(maxsize=max_pending)
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self.backpressure = backpressure
        self.skipped = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            window = self._in.get()
            if window is _STOP:
                return
            try:
                self._out.put((window, self._infer(window)))
            except Exception as exc:  # surfaced to the pipeline thread, which re-raises it
                self.error = exc
                return

    def submit(self, window: Window) -> bool:
        """Hand a window over; False if an older waiting window had to be skipped to make room."""
        self._raise_if_failed()
        if self.backpressure:
            while True:
                try:
                    self._in.put(window, timeout=0.1)
                    return True
                except queue.Full:
                    self._raise_if_failed()
        try:
            self._in.put_nowait(window)
            return True
        except queue.Full:
            pass
        try:
            self._in.get_nowait()  # only this thread puts, so after one get there is room
            self.skipped += 1
        except queue.Empty:
            pass
        self._in.put_nowait(window)
        return False

    def results(self) -> list[tuple[Window, Any]]:
        """Finished (window, result) pairs so far, oldest first."""
        self._raise_if_failed()
        out = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def close(self, timeout: float | None = None) -> list[tuple[Window, Any]]:
        """Finish the waiting windows, stop the thread, and return the remaining results."""
        if self._thread.is_alive():
            self._in.put(_STOP)
            self._thread.join(timeout)
        return self.results()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"inference failed: {type(self.error).__name__}: {self.error}") from self.error
