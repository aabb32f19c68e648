"""The exported model directory as the device reads it: the manifest and metadata contract and the
ONNX classifier (`model_dir`), the raw-audio end-to-end graph (`e2e`), and the signal-quality gate whose
settings travel in the model (`quality`).

May import: core and data. The lowest room of the runtime: nothing here imports another runtime room.
"""
