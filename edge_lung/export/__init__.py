"""Export: a training run to a self-describing ONNX model directory (`onnx`), INT8 quantisation
with onnxruntime's quantiser (`quantize`, presets in `presets/`), parity and the model card.

May import: core, data, runtime (the model directory contract it writes) and train (to load runs).
"""
