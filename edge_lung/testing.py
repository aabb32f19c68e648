"""A tiny ONNX classifier for runtime tests, built with onnx.helper (no torch, no weights to download).

Graph: features [batch, T, M] -> ReduceMean over time -> MatMul W [M, C] -> Add b -> logits [batch, C].
The weights make each class respond to energy in one band of mel bins (low band -> normal,
mid -> crackle, high -> wheeze, mid + high -> both), so tones in different bands flip the
decision and the runtime's windows give varied, checkable results. The directory it writes
is a real MODEL_DIR: metadata from `build_metadata` and a manifest from `write_manifest`.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_lung.config import LABELS, FeatureConfig
from edge_lung.runtime.artifact.model_dir import INPUT_NAME, OUTPUT_NAME, build_metadata, write_manifest
from edge_lung.runtime.live.serial import MAX_SAMPLES, SEQ_MOD, encode_frame, float_to_pcm16
from edge_lung.runtime.live.sources import join_thread

# Mean normalised log-mel of each third of the mel bins for the quiet noise floor of `make_signal`,
# and the rise a tone in that band gives (measured once); the logits are the rises, rescaled.
_BAND_BASE = (-0.556, -0.075, 0.224)
_BAND_GAIN = (14.0, 28.0, 60.0)


def tiny_weights(num_mel_bins: int, num_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """W float32[M, C], b float32[C]: class c follows the energy of one band of mel bins above its noise floor."""
    w = np.zeros((num_mel_bins, num_classes), dtype=np.float32)
    b = np.zeros(num_classes, dtype=np.float32)
    edges = np.linspace(0, num_mel_bins, 4).astype(int)
    mix = {0: [(0, 1.0)], 1: [(1, 1.0)], 2: [(2, 1.0)], 3: [(1, 0.75), (2, 0.75)]}
    for c in range(min(num_classes, 4)):
        for band, share in mix[c]:
            lo, hi = edges[band], edges[band + 1]
            w[lo:hi, c] += share * _BAND_GAIN[band] / (hi - lo)
            b[c] -= share * _BAND_GAIN[band] * _BAND_BASE[band]
    b[0] += 1.0  # the noise floor alone reads as normal
    return w, b


def build_tiny_model(model_dir: str | Path, features: FeatureConfig | None = None, scale: float = 1.0,
                     run: dict | None = None, weights: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write a MODEL_DIR with `tiny.onnx` + manifest; returns the directory.

    `scale` multiplies the logits: below 1 the probabilities stay away from 0 and 1 on loud real
    recordings (whose band energies saturate the default model), so that two runs can be compared.
    `run` is the metadata's provenance (`edge_lung.run`; e.g. a val_fraction and val_seed).
    `weights` (W float32[M, C], b float32[C]) replace `tiny_weights` (e.g. a distillation test's teacher)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = features or FeatureConfig()
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    w, b = weights if weights is not None else tiny_weights(features.num_mel_bins, len(LABELS))
    w, b = (np.asarray(np.float32(scale) * a, dtype=np.float32) for a in (w, b))
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "b"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", features.num_frames, None])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(LABELS)])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-lung-tests")
    model.ir_version = 8
    meta = build_metadata(LABELS, features, "fp32", {}, run or {"name": "tiny-test-model"})
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx_path = model_dir / "tiny.onnx"
    onnx.save(model, str(onnx_path))
    write_manifest(model_dir, onnx_path)
    return model_dir


def build_tiny_e2e_model(model_dir: str | Path, features: FeatureConfig | None = None) -> Path:
    """`build_tiny_model` plus what export adds for issue 16: model.e2e.onnx, test_vectors.npz (four
    windows of `make_signal`, one per band) and both listed in the manifest. Needs the onnx package."""
    from edge_lung.export.e2e import e2e_manifest_entry, write_end_to_end, write_test_vectors
    from edge_lung.features import window_features
    from edge_lung.runtime.artifact.e2e import E2E_NAME
    from edge_lung.runtime.artifact.model_dir import OnnxClassifier

    features = features or FeatureConfig()
    model_dir = build_tiny_model(model_dir, features)
    onnx_path = model_dir / "tiny.onnx"
    e2e = write_end_to_end(onnx_path, model_dir / E2E_NAME, features)
    signal = make_signal(12.0 + features.window_s, features.sample_rate, seed=5)
    starts = [int(s * features.sample_rate) for s in (0.0, 3.0, 6.0, 9.0)]
    audio = np.stack([signal[s : s + features.window_samples] for s in starts])
    feats = np.stack([window_features(a, features) for a in audio])
    vectors = write_test_vectors(model_dir, OnnxClassifier(model_dir), audio, feats,
                                 [f"make_signal@{s}" for s in starts], int8=False)
    write_manifest(model_dir, onnx_path, {"e2e": e2e_manifest_entry(e2e, features, len(LABELS)),
                                          "test_vectors": vectors})
    return model_dir

def make_signal(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Mono float32 test audio whose dominant band changes every 3 s (low, mid, high, mid+high, quiet)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    seg = (t // 3.0).astype(int) % 5
    freqs = np.array([150.0, 1200.0, 5000.0, 1200.0, 0.0])
    x = 0.3 * np.sin(2 * np.pi * freqs[seg] * t)
    x += np.where(seg == 3, 0.3 * np.sin(2 * np.pi * 5000.0 * t), 0.0)
    x += 0.01 * rng.standard_normal(n)
    return x.astype(np.float32)


def write_signal(path: str | Path, seconds: float, rate: int, seed: int = 0, subtype: str = "FLOAT") -> np.ndarray:
    """Write `make_signal` to a WAV/FLAC file; returns the samples as written (FLOAT keeps them exact)."""
    import soundfile as sf

    x = make_signal(seconds, rate, seed)
    sf.write(str(path), x, rate, subtype=subtype)
    return sf.read(str(path), dtype="float32")[0]


@dataclass(frozen=True)
class Impairments:
    """Per-frame probabilities of damage the virtual stethoscope injects (each frame gets at most one)."""

    drop: float = 0.0  # frame never sent (sequence number skipped)
    corrupt: float = 0.0  # one byte after the sync word flipped
    truncate: float = 0.0  # only a prefix of the frame sent
    garbage: float = 0.0  # random bytes sent before the frame (frame itself intact)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt", "truncate", "garbage"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Impairments.{name}: expected a probability in [0, 1], got {p}")
        if self.drop + self.corrupt + self.truncate > 1.0:
            raise ValueError(
                f"Impairments: expected drop + corrupt + truncate <= 1, got {self.drop + self.corrupt + self.truncate}"
            )

@dataclass
class PlayLog:
    """What the virtual stethoscope did to each sequence number (ground truth for tests)."""

    intact: list[int] = field(default_factory=list)
    damaged: dict[int, str] = field(default_factory=dict)

def frame_stream(
    audio: np.ndarray,
    sample_rate: int,
    frame_samples: int = 256,
    impair: Impairments | None = None,
    start_sequence: int = 0,
    log: PlayLog | None = None,
):
    """Yield (sequence, bytes to send, samples in frame) for `audio`, with impairments applied.

    The first and last frames are always sent intact, so a reader can see every loss between them.
    """
    if not 1 <= frame_samples <= MAX_SAMPLES:
        raise ValueError(f"frame_samples: expected 1..{MAX_SAMPLES}, got {frame_samples}")
    impair = impair or Impairments()
    rng = np.random.default_rng(impair.seed)
    pcm = float_to_pcm16(audio)
    starts = range(0, pcm.shape[0], frame_samples)
    last = len(starts) - 1
    for k, pos in enumerate(starts):
        seq = (start_sequence + k) % SEQ_MOD
        frame = encode_frame(seq, sample_rate, pcm[pos : pos + frame_samples])
        fate = "intact"
        if 0 < k < last:
            r = rng.random()
            if r < impair.drop:
                fate = "dropped"
            elif r < impair.drop + impair.corrupt:
                fate = "corrupted"
                i = int(rng.integers(4, len(frame)))
                frame = frame[:i] + bytes([frame[i] ^ int(rng.integers(1, 256))]) + frame[i + 1 :]
            elif r < impair.drop + impair.corrupt + impair.truncate:
                fate = "truncated"
                frame = frame[: int(rng.integers(1, len(frame)))]
        prefix = b""
        if impair.garbage and rng.random() < impair.garbage:
            prefix = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        if log is not None:
            if fate == "intact":
                log.intact.append(seq)
            else:
                log.damaged[seq] = fate
        yield seq, (prefix + frame if fate != "dropped" else prefix), pcm[pos : pos + frame_samples]

class VirtualStethoscope:
    """Plays audio as framed PCM on a pseudo-terminal; open `port` like a USB CDC device.

    Use as a context manager. `realtime=True` paces frames at the sample rate; otherwise it
    writes as fast as the reader drains the pty. `log` records each frame's fate.
    """

    def __init__(
        self,
        audio: np.ndarray,
        sample_rate: int,
        frame_samples: int = 256,
        impair: Impairments | None = None,
        realtime: bool = False,
        loop: bool = False,
        start_delay_s: float = 0.0,
    ) -> None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ValueError(f"VirtualStethoscope: expected non-empty mono audio, got shape {audio.shape}")
        self.audio, self.sample_rate, self.frame_samples = audio, int(sample_rate), int(frame_samples)
        self.impair, self.realtime, self.loop, self.start_delay_s = impair, realtime, loop, start_delay_s
        self.log = PlayLog()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self.port: str | None = None
        self.error: BaseException | None = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> VirtualStethoscope:
        from edge_lung.audio import load_audio

        audio, rate = load_audio(path)
        return cls(audio, rate, **kwargs)

    def open(self, start: bool = True) -> str:
        """Create the pty and (unless `start=False`) start playing; returns the port path (e.g. /dev/pts/5).

        A reader that opens the port after playing started misses the first frames, as with
        real hardware (pyserial flushes input on open); open with `start=False`, connect, then
        `start()` to get every frame.
        """
        import tty

        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no newline translation or echo: bytes pass unchanged
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        if start:
            self.start()
        return self.port

    def start(self) -> None:
        """Start playing on the opened pty."""
        if self._master is None:
            raise RuntimeError("VirtualStethoscope.start: call open() first")
        if self._thread is None:
            self._thread = threading.Thread(target=self._play, name="virtual-stethoscope", daemon=True)
            self._thread.start()

    def _play(self) -> None:
        try:
            if self.start_delay_s:
                self._stop.wait(self.start_delay_s)
            seq = 0
            t0 = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                for seq_k, data, samples in frame_stream(
                    self.audio, self.sample_rate, self.frame_samples, self.impair, seq, self.log
                ):
                    if self._stop.is_set():
                        return
                    if self.realtime:
                        delay = t0 + sent / self.sample_rate - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
                    self._write_all(data)
                    sent += samples.shape[0]
                    seq = seq_k + 1
                if not self.loop:
                    break
        except OSError as exc:
            self.error = exc
        finally:
            self.done.set()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            _, writable, _ = select.select([], [self._master], [], 0.1)
            if writable:
                view = view[os.write(self._master, view) :]

    def close(self) -> None:
        """Stop playing and remove the pty (a reader then sees the device disappear)."""
        self._stop.set()
        join_thread(self._thread)
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def __enter__(self) -> VirtualStethoscope:
        if self.port is None:
            self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Known degradations of real recordings for the quality gate's tests and benchmark. Hand-written
# because the assertions depend on their exact definitions (clipping by a gain over the recording's
# own peak, noise at an SNR over its own RMS); audiomentations' ClippingDistortion clips at a
# percentile instead, which hides the gain a person would have turned up.


def overdrive(audio: np.ndarray, over_db: float) -> np.ndarray:
    """Raise the gain until the peak is `over_db` above full scale, then clip at +-1 like an ADC."""
    gain = 10.0 ** (over_db / 20.0) / max(float(np.max(np.abs(audio))), 1e-9)
    return np.clip(audio * gain, -1.0, 1.0).astype(np.float32)


def add_white_noise(audio: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """Mix in white noise `snr_db` below the recording's RMS; a mix peaking over 0.9 is scaled down to
    0.9, as a person setting the gain would, so the noise tests do not turn into clipping tests."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    noise = np.random.default_rng(seed).standard_normal(audio.shape[0]) * rms / 10.0 ** (snr_db / 20.0)
    mix = audio + noise
    return (mix * min(1.0, 0.9 / max(float(np.max(np.abs(mix))), 1e-9))).astype(np.float32)


def add_friction(audio: np.ndarray, rate: int, snr_db: float, seed: int = 0) -> np.ndarray:
    """Cable or skin friction: white-noise bursts of 0.1-0.5 s over about half the time, `snr_db` below the
    recording's RMS while on; peak kept at or under 0.9 as in `add_white_noise`."""
    rng = np.random.default_rng(seed)
    gate = np.zeros(audio.shape[0], dtype=np.float32)
    pos = 0
    while pos < gate.shape[0]:
        length = int(rng.uniform(0.1, 0.5) * rate)
        gate[pos : pos + length] = rng.random() < 0.5
        pos += length
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    mix = audio + gate * rng.standard_normal(audio.shape[0]) * rms / 10.0 ** (snr_db / 20.0)
    return (mix * min(1.0, 0.9 / max(float(np.max(np.abs(mix))), 1e-9))).astype(np.float32)


def with_nan_run(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """A copy with `length` NaN samples from `start` (a driver or file glitch)."""
    out = np.array(audio, dtype=np.float32)
    out[start : start + length] = np.nan
    return out


def shuffle_model_weights(model_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """A copy of an exported MODEL_DIR whose every weight tensor has its values permuted (same metadata, same
    value distribution per tensor, no learnt structure): the control for checks that an explanation can fail."""
    import onnx
    from onnx import numpy_helper

    from edge_lung.runtime.artifact.model_dir import resolve_model_path

    onnx_path, _ = resolve_model_path(model_dir)
    model = onnx.load(str(onnx_path))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.size > 1:
            shuffled = rng.permutation(values.reshape(-1)).reshape(values.shape)
            init.CopyFrom(numpy_helper.from_array(shuffled, init.name))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / onnx_path.name
    onnx.save(model, str(out_path))
    write_manifest(out_dir, out_path)
    return out_dir
