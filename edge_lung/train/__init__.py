"""Training (torch): the AST model and its loading (`model`), LungAdapter (`adapters`), SAM (`sam`),
the training loop (`loop`) and evaluation of a training run (`evaluate`).

May import: core, data and runtime (for the model directory contract). The only layer below
export that imports torch, transformers, peft and accelerate.
"""
