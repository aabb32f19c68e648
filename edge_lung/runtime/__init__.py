"""The device runtime: USB stethoscope (or file, or serial link) to decisions on CPU.

numpy + onnxruntime + soundfile/soxr (+ sounddevice for live capture, pyserial for serial
links). Nothing in this package imports torch, transformers or optimum; a test proves it.
`capture` imports sounddevice lazily, so a machine without PortAudio can still classify
files and replay recordings.

Owns the model directory contract (`model_dir`: manifest, metadata, `OnnxClassifier`), the serial
wire protocol (`serial`) and evaluation of exported models (`evaluate`), and explains decisions
on the device: occlusion saliency (`saliency`), the clinician report (`clinician`, pictures in
`clinician_plots`, matplotlib imported lazily) and embedding maps (`embedding`, scikit-learn).

May import: core and data. Never torch, transformers, peft, accelerate or onnx.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported on first use (PEP 562): a process that needs one module (the bench worker, a model loader)
# does not load the stream, capture, serial and classify modules with it (1.7 MB resident).
_HOMES = {
    "classify_file": "classify",
    "classify_files": "classify",
    "LiveSummary": "live",
    "run_live": "live",
    "RingBuffer": "ring",
    "CaptureBuffer": "sources",
    "ReplaySource": "sources",
    "SerialSource": "sources",
    **dict.fromkeys(("Counters", "Decider", "Decision", "StreamConfig", "StreamingClassifier", "Window",
                     "WindowStream"), "stream"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__all__ = [
    "CaptureBuffer",
    "Counters",
    "Decider",
    "Decision",
    "LiveSummary",
    "ReplaySource",
    "RingBuffer",
    "SerialSource",
    "StreamConfig",
    "StreamingClassifier",
    "Window",
    "WindowStream",
    "classify_file",
    "classify_files",
    "run_live",
]
