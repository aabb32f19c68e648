"""`Classifier`: the one object an integrator needs to get decisions from their own audio loop.

    from edge_lung import Classifier

    clf = Classifier("model-int8")
    for decision in clf.accept_waveform(samples, sample_rate):
        print(decision.window.start_s, decision.label, decision.p_abnormal)
    clf.finish()  # the last, partial window's decision
    clf.reset()   # a new patient or recording: windows and smoothing start again

With `decide="breath"` (or `StreamConfig(decide="breath")`) it decides per respiratory cycle instead:
`BreathStream` (runtime.live.breaths) finds each breath online, the breath is padded exactly as training pads
an annotated cycle, and `accept_waveform` returns `BreathDecision`s (with the respiratory rate) as breaths
become known, at most `BreathConfig.decision_delay_s` after they end.

It is the same path `classify`, `stream` and the live view run (they build it with `Classifier.around`):
`WindowStream` cuts cyclic-padded windows every hop at the model's rate (resampling the input as it comes),
the quality gate judges each window, the model runs only on windows that pass, and `Decider` smooths the
probabilities into `Decision`s. Blocks of any size give the same decisions (a test feeds 10 ms, 100 ms and
1 s blocks). One `Classifier` is one stream: use one per microphone; the ONNX session inside can be shared
by building several with `Classifier.around(engine, ...)` on one `StreamingClassifier`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edge_lung.runtime.artifact.e2e import load_model
from edge_lung.runtime.live.breaths import BreathConfig, BreathDecider, BreathDecision, BreathStream, classify_breath
from edge_lung.runtime.live.stream import (
    DECIDE_MODES,
    Counters,
    Decider,
    Decision,
    StreamConfig,
    StreamingClassifier,
    Window,
    WindowResult,
    WindowStream,
)


class Classifier:
    """Decisions from raw audio, block by block: `accept_waveform`, `finish`, `reset`.

    Args:
        model_dir: an exported model directory (`edge-lung export`).
        config: hop, smoothing and threshold (`StreamConfig`); its defaults are the CLI's.
        graph: "model" (numpy front end + classifier graph) or "e2e" (`model.e2e.onnx`, raw audio in).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, bounded by the usable cores).
        quality_gate: False classifies every window except those holding NaN/inf samples.
        source: the name put in each `Decision.source` (a file path, a device name).
        decide: "window" or "breath" (default: `config.decide`).
        breaths: how breaths are found (`BreathConfig`), breath mode only.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        config: StreamConfig | None = None,
        graph: str = "model",
        threads: int | None = None,
        quality_gate: bool = True,
        source: str | None = None,
        decide: str | None = None,
        breaths: BreathConfig | None = None,
    ) -> None:
        engine = StreamingClassifier(load_model(model_dir, graph, threads=threads), config, gate=quality_gate)
        self._bind(engine, source, decide, breaths)

    @classmethod
    def around(cls, engine: StreamingClassifier, source: str | None = None, decide: str | None = None,
               breaths: BreathConfig | None = None) -> Classifier:
        """A `Classifier` on an already loaded `StreamingClassifier` (its ONNX session is shared, not copied)."""
        self = cls.__new__(cls)
        self._bind(engine, source, decide, breaths)
        return self

    def _bind(self, engine: StreamingClassifier, source: str | None, decide: str | None = None,
              breaths: BreathConfig | None = None) -> None:
        self.engine = engine
        self.source = source
        self.mode = engine.cfg.decide if decide is None else decide
        if self.mode not in DECIDE_MODES:
            raise ValueError(f"Classifier decide: expected one of {'|'.join(DECIDE_MODES)}, got {self.mode!r}")
        self.breaths = breaths or BreathConfig()
        self.decider: Decider = engine.create_decider()
        info = engine.model.info
        self.breath_decider = BreathDecider(engine.labels, list(info.abnormal_indices), engine.cfg.threshold,
                                            self.breaths)
        self.stream: WindowStream | BreathStream | None = None
        self._finished = False

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's class names, in the order of `Decision.probabilities`."""
        return self.engine.labels

    @property
    def sample_rate(self) -> int:
        """The model's rate in Hz (any input rate is resampled to it)."""
        return self.engine.features.sample_rate

    @property
    def input_samples(self) -> int:
        """Input samples accepted since the last `reset()`."""
        return 0 if self.stream is None else self.stream.input_samples

    def start(self, sample_rate: int) -> WindowStream | BreathStream:
        """The window stream for input at `sample_rate` Hz (created at the first block; `ValueError` when a later
        block comes at another rate without a `reset()` in between, or after `finish()`)."""
        if self._finished:
            raise ValueError("Classifier: finish() was called; call reset() before feeding a new stream")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"Classifier: expected a positive whole sample rate in Hz, got {sample_rate}")
        if self.stream is None and self.mode == "breath":
            self.stream = BreathStream(self.engine.features, self.breaths, int(sample_rate),
                                       self.engine.cfg.fill_gap_s, self.engine.quality.clip_level)
        elif self.stream is None:
            self.stream = self.engine.create_stream(int(sample_rate))
        elif self.stream.input_rate != sample_rate:
            raise ValueError(f"Classifier: this stream runs at {self.stream.input_rate} Hz, got a block at "
                             f"{sample_rate} Hz; call reset() to start a stream at another rate")
        return self.stream

    def accept_waveform(self, samples: np.ndarray, sample_rate: int) -> list[Decision | BreathDecision]:
        """Feed mono float samples (any length, values in [-1, 1]) at `sample_rate` Hz.

        Returns:
            The decisions of every window completed by these samples (often none, one per hop otherwise), or in
            breath mode of every breath that became known.
        """
        return self.decide_all(self.start(sample_rate).accept_waveform(np.asarray(samples)))

    def finish(self) -> list[Decision | BreathDecision]:
        """End of input: the decision of the last, partial window (cyclic-padded as training pads cycles).

        Returns:
            The remaining decisions; later blocks need a `reset()` first.
        """
        windows = self.stream.finish() if self.stream is not None else []
        self._finished = True
        return self.decide_all(windows)

    def reset(self) -> None:
        """Forget everything heard: the window stream, the resampler state and the decider's smoothing."""
        self.stream = None
        self._finished = False
        self.decider.reset()
        self.breath_decider.reset()

    def decide_all(self, windows: Iterable[Window], counters: Counters | None = None
                   ) -> list[Decision | BreathDecision]:
        """Gate, model and decider on each window (or breath), in order."""
        return [self.decide(w, self.process(w), counters) for w in windows]

    def process(self, window: Window) -> WindowResult:
        """Gate and model on a window, or on a breath padded as training pads a cycle (the worker thread runs it)."""
        return classify_breath(self.engine, window) if self.mode == "breath" else self.engine.process(window)

    def decide(self, window: Window, result: WindowResult, counters: Counters | None = None
               ) -> Decision | BreathDecision:
        """The decision for a window the model (or the gate) already judged: the live path runs
        `process` on its worker thread and decides here, in window order."""
        if self.mode == "breath":
            return self.breath_decider.decide(window, result, counters, self.source)
        return self.decider.decide(window, result.probabilities, result.feature_ms, result.model_ms, counters,
                                   self.source, result.quality)
