"""The classifier: an Audio Spectrogram Transformer (AST) backbone plus an optional PEFT adapter,
or a small log-mel CNN (`edge_lung.train.cnn`, no adapters).

`--backbone` names one of three sources:
  * a named size trained from scratch: AST sizes `tiny`, `ast-student`, `small`, `base` (`SIZES`) and
    CNN sizes `mobilenet` (`CNN_SIZES`); `ast-student` and `mobilenet` are the distillation students
    of issue #13;
  * a local directory written by `save_pretrained` (an `ASTForAudioClassification`) or by
    `edge_lung.train.cnn.save_cnn` (config.json with model_type `edge-lung-cnn`);
  * a Hugging Face hub id, e.g. `MIT/ast-finetuned-audioset-10-10-0.4593`, read from the local
    cache only unless the caller allows a download.

Checkpoints trained on another input length (AudioSet AST: 1024 frames, a 12 x 101 patch grid)
get their positional embeddings interpolated along time to our window (8 s = 798 frames, 12 x 79)
instead of padding the input to 1024 frames, which would cost 28% more tokens on the device.

`load_run(run_dir)` rebuilds a trained model as a plain module `features[B, T, M] -> logits[B, C]`
(`LogitsModel`), whichever the backbone: export, evaluate and distillation see one interface.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_lung.config import LABELS, FeatureConfig
from edge_lung.fileio import RUN_CONFIG, replaced_dir
from edge_lung.train import adapters  # noqa: F401  registers the LUNG_ADAPTER PEFT type
from edge_lung.train.adapters import LungAdapterConfig
from edge_lung.train.cnn import CnnConfig, LogMelCNN, is_cnn_dir, load_cnn, save_cnn

DEFAULT_HUB_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"
ADAPTERS = ("lung", "lora", "none")
MODEL_DIR = "model"
BACKBONE_DIR = "backbone"
ADAPTER_DIR = "adapter"
SELECTED = "selected.json"
# Trained in full next to any adapter: the final norm of the encoder and the classification head.
HEAD_MODULES = ["classifier", "audio_spectrogram_transformer.layernorm"]

SIZES: dict[str, dict[str, float]] = {
    # Test/demo size, trains on CPU in minutes: non-overlapping 16 x 16 patches (an 8 x 49 grid,
    # 394 tokens) cost 3-4x less than the 12 x 79 grid of strides 10 (950 tokens).
    # Its weights start at std 0.1 rather than ViT's 0.02: at 0.02 the attention of a from-scratch
    # model trained on a few hundred cycles stays uniform (CLS = mean of all patches, loss stuck at
    # chance); 0.1 lets it learn to attend to crackle and wheeze patches.
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "frequency_stride": 16,
        "time_stride": 16,
        "initializer_range": 0.1,
    },
    # The AST distillation student (issue #13): DeiT-Tiny widths (192, 3 heads of 64, MLP 768), 12
    # layers, tiny's non-overlapping 16 x 16 patches (394 tokens): 2.9 GMAC per 8 s 128-bin window,
    # 1/35 of base. Initialised like tiny (std 0.1) since it, too, starts from scratch.
    "ast-student": {
        "hidden_size": 192,
        "num_hidden_layers": 12,
        "num_attention_heads": 3,
        "intermediate_size": 768,
        "frequency_stride": 16,
        "time_stride": 16,
        "initializer_range": 0.1,
    },
    # small (DeiT-S widths) and base (the AudioSet AST) keep AST's overlapping strides of 10.
    "small": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
        "frequency_stride": 10,
        "time_stride": 10,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "frequency_stride": 10,
        "time_stride": 10,
    },
}


# Log-mel CNN sizes (`edge_lung.train.cnn.CnnConfig` fields beyond the input shape and labels).
# mobilenet: MobileNetV2-style, 0.63 M parameters, 0.18 GMAC per 8 s window at 128 mel bins (0.09 at 64).
# linear: a logistic regression on the (standardised) input, for the "respiratory" front end's 26 descriptors.
CNN_SIZES: dict[str, dict[str, Any]] = {
    "mobilenet": {"name": "mobilenet"},
    "linear": {"name": "linear", "blocks": (), "dropout": 0.0},
}


def named_sizes() -> list[str]:
    """Every named size `--backbone` accepts (AST and CNN)."""
    return sorted([*SIZES, *CNN_SIZES])


def _load_errors() -> tuple[type[BaseException], ...]:
    """What loading a checkpoint raises for missing, corrupt or mismatched files."""
    from safetensors import SafetensorError

    return (OSError, ValueError, RuntimeError, KeyError, SafetensorError)


class BackboneError(ValueError):
    """A backbone that cannot be loaded, with the source named and what to do about it."""


class RunError(ValueError):
    """A run directory that cannot be used, with the file and the reason."""


def backbone_kind(backbone: str) -> str:
    """'size', 'dir' or 'hub' for a `--backbone` value; `BackboneError` for a missing local path."""
    if backbone in SIZES or backbone in CNN_SIZES:
        return "size"
    path = Path(backbone).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackboneError(f"--backbone {backbone}: expected a directory written by save_pretrained, got a file")
        return "dir"
    looks_like_path = backbone.startswith((".", "/", "~")) or backbone.count("/") != 1
    if looks_like_path:
        raise BackboneError(
            f"--backbone {backbone}: no such directory; expected one of {named_sizes()}, a directory written by "
            f"save_pretrained, or a hub id like {DEFAULT_HUB_ID}"
        )
    return "hub"


def size_config(size: str, feature_cfg: FeatureConfig, num_labels: int) -> Any:
    """ASTConfig of a named size for `feature_cfg`'s window."""
    from transformers import ASTConfig

    if size not in SIZES:
        raise BackboneError(f"--backbone {size}: expected one of the AST sizes {sorted(SIZES)}")
    return ASTConfig(
        **SIZES[size],
        max_length=feature_cfg.num_frames,
        num_mel_bins=feature_cfg.num_mel_bins,
        patch_size=16,
        num_labels=num_labels,
        id2label=dict(enumerate(_label_names(num_labels))),
        label2id={name: i for i, name in enumerate(_label_names(num_labels))},
    )


def _label_names(num_labels: int) -> list[str]:
    return list(LABELS) if num_labels == len(LABELS) else [f"class_{i}" for i in range(num_labels)]


def patch_grid(config: Any, max_length: int | None = None) -> tuple[int, int]:
    """(frequency, time) patch counts of an ASTConfig, optionally at another input length."""
    length = config.max_length if max_length is None else max_length
    freq = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    time = (length - config.patch_size) // config.time_stride + 1
    return freq, time


def interpolate_position_embeddings(pos: torch.Tensor, freq: int, old_time: int, new_time: int) -> torch.Tensor:
    """Resample AST positional embeddings [1, 2 + F*T_old, H] to [1, 2 + F*T_new, H] along time only.

    The two leading tokens (CLS, distillation) are kept; the patch grid is F-major (patch index =
    f * T + t, as `ASTPatchEmbeddings` flattens it) and is resized bilinearly with the frequency
    size unchanged, so every frequency row keeps its own embeddings.
    """
    if pos.ndim != 3 or pos.shape[1] != 2 + freq * old_time:
        raise ValueError(f"position embeddings: expected [1, {2 + freq * old_time}, H], got {tuple(pos.shape)}")
    if old_time == new_time:
        return pos.clone()
    hidden = pos.shape[-1]
    head, grid = pos[:, :2], pos[:, 2:]
    grid = grid.reshape(1, freq, old_time, hidden).permute(0, 3, 1, 2)  # [1, H, F, T]
    grid = nn.functional.interpolate(grid.float(), size=(freq, new_time), mode="bilinear", align_corners=False)
    grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, freq * new_time, hidden)
    return torch.cat([head, grid], dim=1)


def load_backbone(
    backbone: str, feature_cfg: FeatureConfig, num_labels: int = len(LABELS), allow_download: bool = False
) -> nn.Module:
    """An `ASTForAudioClassification` (or a `LogMelCNN`) for `feature_cfg`'s window with a `num_labels` head.

    Named sizes are randomly initialised (seed torch first for reproducibility). A checkpoint
    (local directory or hub id) keeps its weights, with positional embeddings interpolated to
    the window length and the classifier's output layer replaced when the label count differs.
    """
    from transformers import ASTForAudioClassification

    kind = backbone_kind(backbone)
    if is_cnn_backbone(backbone):
        model = _cnn_backbone(backbone, kind, feature_cfg, num_labels)
        if feature_cfg.front_end == "respiratory" and model.config.name != "linear":
            raise _front_end_error(backbone, feature_cfg)
        return model
    if feature_cfg.front_end == "respiratory":
        raise _front_end_error(backbone, feature_cfg)
    if kind == "size":
        model = ASTForAudioClassification(size_config(backbone, feature_cfg, num_labels))
        pos = model.audio_spectrogram_transformer.embeddings.position_embeddings
        nn.init.trunc_normal_(pos, std=model.config.initializer_range)
        return model
    source = _load_checkpoint(backbone, kind, allow_download)
    return adapt_checkpoint(source, feature_cfg, num_labels, name=backbone)


def _front_end_error(backbone: str, feature_cfg: FeatureConfig) -> BackboneError:
    return BackboneError(
        f"--backbone {backbone}: the 'respiratory' front end gives one row of {feature_cfg.num_mel_bins} descriptors "
        "per window, not a spectrogram; expected --backbone linear (or a saved linear model). For an AST or a CNN "
        "use a log-mel recipe (--recipe icbhi-robust)"
    )


def is_cnn_backbone(backbone: str) -> bool:
    """Whether `--backbone` names a CNN: a CNN size, or a directory holding a saved `LogMelCNN`."""
    return backbone in CNN_SIZES or is_cnn_dir(Path(backbone).expanduser())


def check_adapter(backbone: str, adapter: str) -> None:
    """`BackboneError` for an adapter on a CNN backbone: adapters sit beside attention and MLP blocks,
    which a CNN has none of ('auto' resolves to 'none' there)."""
    if adapter not in ("auto", "none") and is_cnn_backbone(backbone):
        raise _cnn_adapter_error(backbone, adapter)


def _cnn_adapter_error(backbone: str, adapter: str) -> BackboneError:
    return BackboneError(
        f"--adapter {adapter}: the backbone {backbone} is a CNN, and adapters (lung, lora) need an AST's "
        "attention and MLP blocks; use --adapter none (full fine-tune) or auto"
    )


def _cnn_backbone(backbone: str, kind: str, feature_cfg: FeatureConfig, num_labels: int) -> LogMelCNN:
    """A CNN size built for `feature_cfg`, or a saved CNN with its head replaced when the label count differs."""
    if kind == "size":
        return LogMelCNN(CnnConfig(num_mel_bins=feature_cfg.num_mel_bins, num_frames=feature_cfg.num_frames,
                                   num_labels=num_labels, **CNN_SIZES[backbone]))
    try:
        model = load_cnn(Path(backbone).expanduser())
    except ValueError as exc:
        raise BackboneError(f"--backbone {backbone}: {exc}") from exc
    cfg = model.config
    if cfg.num_mel_bins != feature_cfg.num_mel_bins:
        raise BackboneError(f"--backbone {backbone}: expected a CNN for {feature_cfg.num_mel_bins} mel bins, got "
                            f"{cfg.num_mel_bins}")
    if cfg.num_labels != num_labels:
        model.config = dataclasses.replace(cfg, num_labels=num_labels)
        model.classifier = nn.Linear(model.classifier.in_features, num_labels)
    if cfg.num_frames != feature_cfg.num_frames and cfg.name == "linear":
        raise BackboneError(f"--backbone {backbone}: a linear model reads exactly {cfg.num_frames} x "
                            f"{cfg.num_mel_bins} inputs, got a window of {feature_cfg.num_frames} frames")
    if cfg.num_frames != feature_cfg.num_frames:  # global pooling: any length runs; record the new window
        model.config = dataclasses.replace(model.config, num_frames=feature_cfg.num_frames)
    return model


def _load_checkpoint(backbone: str, kind: str, allow_download: bool) -> nn.Module:
    from transformers import ASTForAudioClassification

    local_only = kind == "dir" or not allow_download
    try:
        source = str(Path(backbone).expanduser()) if kind == "dir" else backbone
        return ASTForAudioClassification.from_pretrained(source, local_files_only=local_only)
    except OSError as exc:
        if kind == "hub" and local_only:
            raise BackboneError(
                f"--backbone {backbone}: not in the local Hugging Face cache, and downloads are off. Either copy it "
                f"once on a machine with network (`huggingface-cli download {backbone} --local-dir DIR`, or "
                f"`ASTForAudioClassification.from_pretrained('{backbone}').save_pretrained('DIR')`) and pass "
                f"--backbone DIR, or pass --allow-download to fetch it now"
            ) from exc
        raise BackboneError(f"--backbone {backbone}: cannot load an AST checkpoint from it ({exc})") from exc
    except _load_errors() as exc:  # wrong model type, corrupt weights, bad config
        raise BackboneError(
            f"--backbone {backbone}: not a usable ASTForAudioClassification checkpoint ({exc})"
        ) from exc


def adapt_checkpoint(
    source: nn.Module, feature_cfg: FeatureConfig, num_labels: int, name: str = "checkpoint"
) -> nn.Module:
    """Copy a loaded AST into a model for `feature_cfg`'s frame count and `num_labels` classes."""
    from transformers import ASTConfig, ASTForAudioClassification

    src_cfg = source.config
    if src_cfg.num_mel_bins != feature_cfg.num_mel_bins:
        raise BackboneError(
            f"--backbone {name}: expected a checkpoint for {feature_cfg.num_mel_bins} mel bins, "
            f"got {src_cfg.num_mel_bins}"
        )
    cfg_dict = src_cfg.to_dict()
    cfg_dict.update(
        max_length=feature_cfg.num_frames,
        id2label=dict(enumerate(_label_names(num_labels))),
        label2id={n: i for i, n in enumerate(_label_names(num_labels))},
    )
    cfg_dict.pop("num_labels", None)
    new_cfg = ASTConfig.from_dict(cfg_dict)
    model = ASTForAudioClassification(new_cfg)
    state = source.state_dict()
    key = "audio_spectrogram_transformer.embeddings.position_embeddings"
    freq, old_time = patch_grid(src_cfg)
    _, new_time = patch_grid(new_cfg)
    state[key] = interpolate_position_embeddings(state[key], freq, old_time, new_time)
    head = "classifier.dense."
    if src_cfg.num_labels != num_labels:
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(head)] + list(unexpected)
    if bad:
        raise BackboneError(f"--backbone {name}: checkpoint does not match the AST layout: {bad[:5]}")
    return model


def adapter_config(adapter: str, width: int = 64, scale: float = 0.1, placement: str = "both", lora_rank: int = 8):
    """The PEFT config of `adapter` ('lung' or 'lora'); None for 'none' (full fine-tune)."""
    if adapter == "none":
        return None
    if adapter == "lung":

        return LungAdapterConfig(width=width, scale=scale, placement=placement, modules_to_save=list(HEAD_MODULES))
    if adapter == "lora":
        from peft import LoraConfig

        targets = {"both": ["q_proj", "v_proj", "fc1", "fc2"], "attention": ["q_proj", "v_proj"], "mlp": ["fc1", "fc2"]}
        return LoraConfig(
            r=lora_rank, lora_alpha=2 * lora_rank, target_modules=targets[placement], modules_to_save=list(HEAD_MODULES)
        )
    raise ValueError(f"--adapter: expected one of {ADAPTERS}, got {adapter!r}")


def build_model(
    backbone: str,
    num_labels: int,
    feature_cfg: FeatureConfig,
    adapter: str = "lung",
    adapter_width: int = 64,
    adapter_scale: float = 0.1,
    adapter_placement: str = "both",
    lora_rank: int = 8,
    allow_download: bool = False,
) -> nn.Module:
    """Backbone plus adapter: a PeftModel (backbone frozen) for 'lung'/'lora', the plain model for 'none'."""
    base = load_backbone(backbone, feature_cfg, num_labels, allow_download=allow_download)
    return attach_adapter(base, adapter, adapter_width, adapter_scale, adapter_placement, lora_rank)


def attach_adapter(
    base: nn.Module, adapter: str, width: int = 64, scale: float = 0.1, placement: str = "both", lora_rank: int = 8
) -> nn.Module:
    """Wrap `base` with `get_peft_model` (or return it for 'none'); `BackboneError` for an adapter on a CNN."""
    if isinstance(base, LogMelCNN) and adapter != "none":
        raise _cnn_adapter_error(base.config.name, adapter)
    cfg = adapter_config(adapter, width, scale, placement, lora_rank)
    if cfg is None:
        return base
    from peft import get_peft_model

    return get_peft_model(base, cfg)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; PEFT's modules_to_save copies are counted once."""
    trainable = total = 0
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if ".original_module." in name:  # frozen original of a modules_to_save copy
            continue
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


class LogitsModel(nn.Module):
    """features float32[B, T, M] -> logits [B, C] as a plain tensor (what export traces).

    `logit_offset` (float[C], from a run's normal margin, `train.margin`) is added to the logits: the
    exported graph, evaluation and the device all decide with it.
    """

    def __init__(self, model: nn.Module, logit_offset: list[float] | None = None) -> None:
        super().__init__()
        self.model = model
        offset = torch.tensor(logit_offset, dtype=torch.float32) if logit_offset and any(logit_offset) else None
        self.register_buffer("logit_offset", offset, persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, LogMelCNN):
            return self._offset(self.model(features))
        return self._offset(self.model(input_values=features).logits)

    def _offset(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.logit_offset is None else logits + self.logit_offset

    def logits_and_embedding(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, C], pooled embedding [B, D]) in one pass: the AST's pooled output and the head on it,
        exactly as `ASTForAudioClassification.forward` computes the logits (the CNN's own method for a CNN)."""
        if isinstance(self.model, LogMelCNN):
            logits, pooled = self.model.logits_and_embedding(features)
        else:
            pooled = self.model.audio_spectrogram_transformer(features).pooler_output
            logits = self.model.classifier(pooled)
        return self._offset(logits), pooled


class LogitsAndEmbedding(nn.Module):
    """features [B, T, M] -> (logits [B, C], embedding [B, D]): what export traces, so the device gets both."""

    def __init__(self, logits_model: LogitsModel) -> None:
        super().__init__()
        self.inner = logits_model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.logits_and_embedding(features)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """A plain transformers model with PEFT's wrappers removed (LoRA merged, adapter layers kept).

    ModulesToSaveWrapper is replaced by its trained copy so that exported graphs carry no PEFT
    dispatch logic; LungAdapterLayer stays (it is a plain module at inference).
    """
    from peft import PeftModel
    from peft.utils.other import ModulesToSaveWrapper

    if not isinstance(model, PeftModel):
        return model
    if model.peft_type == "LORA":
        return model.merge_and_unload()
    inner = model.get_base_model()
    for name, module in list(inner.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child = name.rpartition(".")
            parent = inner.get_submodule(parent_name) if parent_name else inner
            setattr(parent, child, module.modules_to_save[module.active_adapter])
    return inner


def _save_whole(model: nn.Module, path: Path) -> None:
    """A whole model (no adapter) into `path`: `save_cnn` for a CNN, `save_pretrained` for an AST."""
    if isinstance(model, LogMelCNN):
        save_cnn(model, path)
    else:
        model.save_pretrained(path, safe_serialization=True)


def save_backbone(model: nn.Module, run_dir: Path) -> None:
    """Save the (still unwrapped) backbone to run_dir/model/backbone."""
    _save_whole(model, run_dir / MODEL_DIR / BACKBONE_DIR)


def save_trained(model: nn.Module, run_dir: Path, epoch: int) -> None:
    """Save what training changed: the PEFT adapter (model/adapter) or the whole model (model/backbone).

    Written to a temp directory and swapped in, so a crash never leaves a half-written model. The
    folder records its epoch (`selected.json`): `load_run` refuses a model that is not the epoch
    config.json names as best (a crash between the two writes).
    """
    from peft import PeftModel

    target = run_dir / MODEL_DIR / (ADAPTER_DIR if isinstance(model, PeftModel) else BACKBONE_DIR)
    target.parent.mkdir(parents=True, exist_ok=True)
    with replaced_dir(target) as tmp:
        if isinstance(model, PeftModel):
            model.save_pretrained(tmp, save_embedding_layers=False)
        else:
            _save_whole(model, tmp)
        (tmp / SELECTED).write_text(json.dumps({"epoch": int(epoch)}))


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """run_dir/config.json as a dict; `RunError` naming the file if missing or not JSON."""
    path = Path(run_dir) / RUN_CONFIG
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir}: no such directory; expected a run directory written by `edge-lung train`")
    if not path.is_file():
        raise RunError(f"{run_dir}: no {RUN_CONFIG}; expected a run directory written by `edge-lung train`")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in ("labels", "features", "data", "adapter") if k not in cfg]
    if missing:
        raise RunError(f"{path}: missing keys {missing}; not written by this edge-lung version")
    return cfg


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained run: (LogitsModel in eval mode on `device`, resolved run config).

    The config holds "labels", "features" (FeatureConfig.to_dict()), "data", "best" (the
    validation ICBHI figures of the selected checkpoint) and the training settings.
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    if not cfg.get("best"):
        raise RunError(f"{run_dir}: no selected checkpoint yet (training has not finished an epoch)")
    features = FeatureConfig.from_dict(cfg["features"])
    backbone_dir = run_dir / MODEL_DIR / BACKBONE_DIR
    _require_weights(run_dir, backbone_dir, "config.json")
    base = _load_saved_backbone(backbone_dir)
    frames, mel_bins, num_labels = _input_and_outputs(base)
    if frames != features.num_frames or mel_bins != features.num_mel_bins:
        raise RunError(
            f"{backbone_dir}: model expects [{frames}, {mel_bins}] features, run config says "
            f"[{features.num_frames}, {features.num_mel_bins}]"
        )
    if num_labels != len(cfg["labels"]):
        raise RunError(f"{backbone_dir}: model has {num_labels} outputs, run config has labels {cfg['labels']}")
    model: nn.Module = base
    if cfg["adapter"] != "none":
        from peft import PeftModel


        adapter_dir = run_dir / MODEL_DIR / ADAPTER_DIR
        _require_weights(run_dir, adapter_dir, "adapter_config.json")
        try:
            model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
        except _load_errors() as exc:
            raise RunError(f"{adapter_dir}: cannot load the saved adapter ({type(exc).__name__}: {exc})") from exc
        model = unwrap_peft(model)
    _check_selected_epoch(run_dir, cfg)
    wrapped = LogitsModel(model, logit_offset(cfg)).to(device).eval()
    return wrapped, cfg


def logit_offset(cfg: dict[str, Any]) -> list[float] | None:
    """What a run's normal margin (config.json "normal_margin", `train.margin`) adds to each logit; None without."""
    margin = (cfg.get("normal_margin") or {}).get("margin")
    if not margin:
        return None
    return [float(margin) if name == "normal" else 0.0 for name in cfg["labels"]]


def _require_weights(run_dir: Path, folder: Path, marker: str) -> None:
    """RunError naming the missing weights folder, before transformers mistakes the path for a hub id."""
    if not (folder / marker).is_file():
        raise RunError(
            f"{run_dir}: no trained weights: {folder.relative_to(run_dir)}/ holds no saved model ({marker} is "
            "missing); expected a run directory written by `edge-lung train` that finished an epoch"
        )


def _load_saved_backbone(backbone_dir: Path) -> nn.Module:
    """The whole model saved in run_dir/model/backbone: a `LogMelCNN` or an `ASTForAudioClassification`."""
    from transformers import ASTForAudioClassification

    try:
        if is_cnn_dir(backbone_dir):
            return load_cnn(backbone_dir)
        return ASTForAudioClassification.from_pretrained(backbone_dir, local_files_only=True)
    except _load_errors() as exc:
        raise RunError(f"{backbone_dir}: cannot load the saved model ({type(exc).__name__}: {exc})") from exc


def _input_and_outputs(model: nn.Module) -> tuple[int, int, int]:
    """(frames, mel bins, labels) a saved backbone was built for."""
    cfg = model.config
    if isinstance(model, LogMelCNN):
        return cfg.num_frames, cfg.num_mel_bins, cfg.num_labels
    return cfg.max_length, cfg.num_mel_bins, cfg.num_labels


def model_kind(model: nn.Module) -> str:
    """'cnn' or 'transformer' for a `LogitsModel` or the model inside it: what INT8 mode suits it."""
    inner = model.model if isinstance(model, LogitsModel) else model
    return "cnn" if isinstance(inner, LogMelCNN) else "transformer"


def _check_selected_epoch(run_dir: Path, cfg: dict[str, Any]) -> None:
    trained = run_dir / MODEL_DIR / (BACKBONE_DIR if cfg["adapter"] == "none" else ADAPTER_DIR) / SELECTED
    if not trained.is_file():
        return  # a run folder assembled by other tools (no record to check against)
    saved = json.loads(trained.read_text()).get("epoch")
    if saved != cfg["best"].get("epoch"):
        raise RunError(
            f"{trained}: the saved model is epoch {saved} but config.json selects epoch {cfg['best'].get('epoch')} "
            "(training stopped between the two writes); run `edge-lung train ... --resume` to finish it"
        )
