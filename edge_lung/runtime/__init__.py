"""The device runtime: USB stethoscope (or file, or serial link) to decisions on CPU.

numpy + onnxruntime + soundfile/soxr (+ sounddevice for live capture, pyserial for serial
links). Nothing in this package imports torch, transformers or optimum; a test proves it.
`capture` imports sounddevice lazily, so a machine without PortAudio can still classify
files and replay recordings.

One room per job, lowest first (an import-linter layers contract in pyproject.toml keeps the order,
and an acyclic-siblings contract keeps every package free of import cycles):

- `artifact/`: the exported model directory (manifest, metadata, `OnnxClassifier`), the end-to-end
  graph, the quality gate;
- `live/`: ring buffer, windows and decisions, sources and capture, the session runner, `Classifier`;
- `offline/`: classify files, evaluate an exported model, calibrate a copy;
- `explain/`: saliency, the clinician report, embedding maps;
- `commands/`: the glue the `edge-lung` runtime commands call.

May import: core and data. Never torch, transformers, peft, accelerate or onnx.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported on first use (PEP 562): a process that needs one module (the bench worker, a model loader)
# does not load the stream, capture, serial and classify modules with it (1.7 MB resident).
_HOMES = {
    "Classifier": "live.classifier",
    "classify_file": "offline.classify",
    "classify_files": "offline.classify",
    "LiveSummary": "live.runner",
    "run_live": "live.runner",
    "RingBuffer": "live.ring",
    "CaptureBuffer": "live.sources",
    "ReplaySource": "live.sources",
    "SerialSource": "live.sources",
    **dict.fromkeys(("Counters", "Decider", "Decision", "StreamConfig", "StreamingClassifier", "Window",
                     "WindowStream"), "live.stream"),
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
    "Classifier",
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
