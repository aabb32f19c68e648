"""Training (torch): the AST model and its loading (`model`), LungAdapter (`adapters`), SAM (`sam`),
the settings (`config`), what an epoch draws (`augment`), the run directory's resume side
(`rundir`), the training loop (`loop`), several seeds (`seeds`), the terminal display
(`progress`) and evaluation of a training run (`evaluate`).

May import: core, data and runtime (for the model directory contract). The only layer below
export that imports torch, transformers, peft and accelerate.
"""
