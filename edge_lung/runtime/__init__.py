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

from edge_lung.runtime.classify import classify_file, classify_files
from edge_lung.runtime.live import LiveSummary, run_live
from edge_lung.runtime.ring import RingBuffer
from edge_lung.runtime.sources import CaptureBuffer, ReplaySource, SerialSource
from edge_lung.runtime.stream import (
    Counters,
    Decider,
    Decision,
    StreamConfig,
    StreamingClassifier,
    Window,
    WindowStream,
)

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
