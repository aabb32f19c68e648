"""edge-lung: train, export and run respiratory-sound classifiers on edge devices.

Layers, lowest first; a module imports only from its own layer or below (`lint-imports`
checks the contract in pyproject.toml):

- core (torch-free, top-level modules): `config`, `fileio`, `audio`, `features`, `metrics`,
  `scoring`, `plots`;
- `data/`: the ICBHI reader, the one split loader, the synthetic database;
- `runtime/`: the device side (model directory contract, streaming, capture, classify);
- `train/`: torch training (model, adapters, SAM, the loop, run evaluation);
- `export/`: ONNX export, INT8 quantisation, parity, the model card;
- `testing`: test doubles shared by tests, benchmarks and firmware_host;
- `bench/`: latency and memory measurement;
- `demo`: the end-to-end main job;
- `cli/`: the `edge-lung` command.

The public runtime API is one object, `edge_lung.Classifier` (`runtime/live/classifier.py`):
`Classifier(model_dir).accept_waveform(samples, sample_rate)` -> decisions, `.finish()`, `.reset()`.

core, data, runtime and bench never import torch: the device reaches a model only through
an exported model directory.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Classifier", "__version__"]


def __getattr__(name: str) -> Any:
    # `Classifier` is imported on first use (PEP 562): `import edge_lung` stays light for the CLI and training.
    if name == "Classifier":
        from edge_lung.runtime.live.classifier import Classifier

        return Classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
