"""Settings shared by every stage, in one frozen object.

`FeatureConfig` is the contract between training, export and the device: the exporter
writes `FeatureConfig.to_dict()` into the ONNX metadata and the runtime rebuilds it with
`FeatureConfig.from_dict()`. No stage defines these numbers anywhere else.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

LABELS: tuple[str, ...] = ("normal", "crackle", "wheeze", "both")
"""ICBHI 4-class labels, index = class id (crackle bit + 2 * wheeze bit)."""

BINARY_LABELS: tuple[str, ...] = ("normal", "abnormal")

FEATURE_VERSION = "kaldi-fbank-v1"
"""Bumped whenever `edge_lung.features.log_mel` changes what it computes."""

WINDOW_CHOICES_S: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0)
PADDING_MODES: tuple[str, ...] = ("cyclic",)
FRONT_ENDS: tuple[str, ...] = ("fbank", "respiratory")
"""`FeatureConfig.front_end`: "fbank" = the Kaldi log-mel (a [frames, bins] image); "respiratory" = one row
of adventitious-sound descriptors per window (`edge_lung.respiratory`, issue #12)."""
RESPIRATORY_DESCRIPTORS = 26
"""Width of the "respiratory" front end's row: `len(edge_lung.respiratory.NAMES)` (a test keeps them equal)."""
MEL_NORMS: tuple[str, ...] = ("global", "window")
"""`FeatureConfig.mel_norm`: "global" = the AST statistics only; "window" = then each mel bin
standardised over the window's frames (removes a stethoscope's fixed per-band gain, issue #12)."""


def label_of(crackle: bool, wheeze: bool) -> int:
    """Class id of a cycle from its two annotation flags."""
    return int(bool(crackle)) + 2 * int(bool(wheeze))


@dataclass(frozen=True)
class FeatureConfig:
    """How a waveform becomes the model's input.

    Defaults reproduce the AudioSet AST front end (Kaldi fbank, 128 mel bins, 25 ms / 10 ms,
    Hanning window, normalised with the AudioSet statistics) on 8 s cyclic-padded windows.
    `front_end="respiratory"` replaces the image by one row of `num_mel_bins` (=26) descriptors per
    window (`edge_lung.respiratory`); the fbank fields then go unused.
    """

    sample_rate: int = 16000
    window_s: float = 8.0
    padding: str = "cyclic"
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    fft_size: int = 512
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "hanning"
    low_freq_hz: float = 20.0
    high_freq_hz: float = 0.0  # <= 0 means Nyquist + high_freq_hz, as in Kaldi
    log_floor: float = 1.1920928955078125e-07  # float32 epsilon, Kaldi's floor
    norm_mean: float = -4.2677393
    norm_std: float = 4.5689974
    feature_version: str = FEATURE_VERSION
    mel_norm: str = "global"
    front_end: str = "fbank"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate: expected a positive rate in Hz, got {self.sample_rate}")
        if self.window_s not in WINDOW_CHOICES_S:
            raise ValueError(f"window_s: expected one of {WINDOW_CHOICES_S}, got {self.window_s}")
        if self.padding not in PADDING_MODES:
            raise ValueError(f"padding: expected one of {PADDING_MODES}, got {self.padding!r}")
        if self.num_mel_bins <= 0:
            raise ValueError(f"num_mel_bins: expected > 0, got {self.num_mel_bins}")
        if self.frame_length <= 0 or self.frame_shift <= 0:
            raise ValueError(
                f"frame_length_ms/frame_shift_ms: expected > 0 samples at {self.sample_rate} Hz, "
                f"got {self.frame_length_ms} ms / {self.frame_shift_ms} ms"
            )
        if self.fft_size < self.frame_length:
            raise ValueError(f"fft_size: expected >= frame length {self.frame_length}, got {self.fft_size}")
        if self.window_type not in ("hanning", "hamming", "povey"):
            raise ValueError(f"window_type: expected 'hanning', 'hamming' or 'povey', got {self.window_type!r}")
        if self.mel_norm not in MEL_NORMS:
            raise ValueError(f"mel_norm: expected one of {MEL_NORMS}, got {self.mel_norm!r}")
        self._check_front_end()
        if self.norm_std <= 0:
            raise ValueError(f"norm_std: expected > 0, got {self.norm_std}")
        nyquist = self.sample_rate / 2
        if not 0 <= self.low_freq_hz < self.high_hz <= nyquist:
            raise ValueError(
                f"low_freq_hz/high_freq_hz: expected 0 <= low < high <= {nyquist} Hz, "
                f"got {self.low_freq_hz} / {self.high_hz}"
            )

    def _check_front_end(self) -> None:
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"front_end: expected one of {FRONT_ENDS}, got {self.front_end!r}")
        if self.front_end == "respiratory" and (self.num_mel_bins != RESPIRATORY_DESCRIPTORS
                                                or self.mel_norm != "global"):
            raise ValueError(
                f"front_end 'respiratory': the model input is one row of {RESPIRATORY_DESCRIPTORS} descriptors, so "
                f"expected num_mel_bins {RESPIRATORY_DESCRIPTORS} and mel_norm 'global', got {self.num_mel_bins} and "
                f"{self.mel_norm!r}"
            )

    @property
    def frame_length(self) -> int:
        """Samples per analysis frame."""
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def frame_shift(self) -> int:
        """Samples between frame starts."""
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def high_hz(self) -> float:
        return self.high_freq_hz if self.high_freq_hz > 0 else self.sample_rate / 2 + self.high_freq_hz

    @property
    def window_samples(self) -> int:
        """Samples in one model window (8 s at 16 kHz = 128000)."""
        return int(round(self.window_s * self.sample_rate))

    @property
    def num_frames(self) -> int:
        """Frames (rows) of the model input of one window: Kaldi snip_edges, 8 s gives 798; 1 for the
        "respiratory" front end, whose row holds `num_mel_bins` descriptors."""
        if self.front_end == "respiratory":
            return 1
        return num_frames_for(self.window_samples, self.frame_length, self.frame_shift)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Rebuild from `to_dict()` output; unknown keys are an error, not ignored."""
        return dataclass_from_dict(cls, data)


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """`cls(**data)` for a config dataclass, refusing keys it does not know (a typo is an error)."""
    reject_unknown_keys(data, {f.name for f in dataclasses.fields(cls)}, cls.__name__, "settings")
    return cls(**data)


def reject_unknown_keys(data: dict[str, Any], known: set[str], where: str, what: str = "keys") -> None:
    """`ValueError` naming `where` and every key of `data` not in `known` (a typo is an error, not ignored)."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown {what} {unknown}; expected a subset of {sorted(known)}")


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4) (blank items ignored); `ValueError` naming `option` otherwise."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"{option}: expected comma-separated whole numbers such as 1,2,4, got {text!r}") from exc


def num_frames_for(num_samples: int, frame_length: int, frame_shift: int) -> int:
    """Kaldi frame count with snip_edges=True."""
    if num_samples < frame_length:
        return 0
    return 1 + (num_samples - frame_length) // frame_shift


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    return int(math.floor(seconds * sample_rate + 0.5))
