"""A small CNN on log-mel features: the convolutional distillation student (issue #13).

MobileNetV2/V3-style (EfficientAT's students are MobileNetV3s distilled from PaSST): a strided 3x3
stem, then inverted residual blocks (1x1 expansion, 3x3 depthwise, 1x1 projection; residual when the
shape allows), a 1x1 head convolution and global average pooling to the embedding, then a linear
classifier. Unlike MobileNetV3 it has no squeeze-excitation and no hard-swish: both sit badly with
static INT8 (SE's sigmoid gate and hard-swish's products need their own activation ranges), and on
a 4-class problem the extra capacity does not pay for them. Plain ReLU keeps every Conv -> ReLU
pair fusable into one integer kernel by onnxruntime.

Hand-written (about 60 lines of modules) rather than torchvision's `mobilenet_v3_small`: torchvision
is not a dependency, pins torch to one minor per release, and its model takes 3-channel images
(the stem would have to be replaced anyway), with SE and hard-swish built in.

The input is the model input every backbone takes, float32[B, T, M] (frames x mel bins); any mel
bin count works (a 64-bin front end is a `FeatureConfig` setting), and the architecture is saved as
`config.json` beside `model.safetensors` so `load_cnn` rebuilds it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_lung.config import reject_unknown_keys

CNN_MODEL_TYPE = "edge-lung-cnn"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# (expansion, output channels, repeats, stride of the first repeat). MobileNetV2's table at about half
# width with expansion 4, and its 16-channel stage replaced by one strided separable block, so that no
# expanded tensor is ever built at the stem's resolution (399 x 64 for 8 s, 128 bins). Measured on 2
# shared cores, batch 32, AdamW step: 10 s here against 35-100 s for the width-0.5 MobileNetV2 table
# (expansion 6, a 96-channel tensor at 399 x 64), at 0.18 against 0.40 GMAC per window.
# Strides 2 halve time and frequency: the last map is 25 x 4 for 798 frames x 128 bins.
MOBILENET_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 24, 1, 2),
    (4, 32, 2, 2),
    (4, 64, 3, 2),
    (4, 96, 2, 1),
    (4, 160, 2, 2),
)


CNN_NAMES = ("mobilenet", "linear")
"""`CnnConfig.name`: the MobileNet above, or "linear": the input flattened, standardised by a BatchNorm
without affine parameters (its running mean and variance are the training set's, re-estimated by the
loop's precise BatchNorm) and one linear layer: a logistic regression, for front ends whose row of
descriptors already says what matters (`FeatureConfig.front_end="respiratory"`, issue #12)."""


@dataclass(frozen=True)
class CnnConfig:
    """Architecture of a log-mel CNN, saved as the backbone's config.json."""

    num_mel_bins: int
    num_frames: int
    num_labels: int
    name: str = "mobilenet"
    stem_channels: int = 16
    blocks: tuple[tuple[int, int, int, int], ...] = MOBILENET_BLOCKS
    embedding_size: int = 512
    dropout: float = 0.2
    model_type: str = CNN_MODEL_TYPE

    def __post_init__(self) -> None:
        for name in ("num_mel_bins", "num_frames", "num_labels", "stem_channels", "embedding_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CNN config: {name}: expected > 0, got {getattr(self, name)}")
        if self.name not in CNN_NAMES:
            raise ValueError(f"CNN config: name: expected one of {CNN_NAMES}, got {self.name!r}")
        if self.name == "linear":
            if self.blocks:
                raise ValueError(f"CNN config: a 'linear' model has no blocks, got {self.blocks}")
        elif not self.blocks or any(len(b) != 4 or min(b) < 1 for b in self.blocks):
            raise ValueError(f"CNN config: blocks: expected (expansion, channels, repeats, stride) >= 1, got "
                             f"{self.blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CNN config: dropout: expected 0 <= x < 1, got {self.dropout}")
        if self.model_type != CNN_MODEL_TYPE:
            raise ValueError(f"CNN config: model_type: expected {CNN_MODEL_TYPE!r}, got {self.model_type!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> CnnConfig:
        reject_unknown_keys(data, set(cls.__dataclass_fields__), source, "CNN config keys")
        blocks = tuple(tuple(int(v) for v in b) for b in data.get("blocks", MOBILENET_BLOCKS))
        return cls(**{**data, "blocks": blocks})


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True):
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (strided), 1x1 linear projection, residual if shapes match."""

    def __init__(self, c_in: int, c_out: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers = [] if expansion == 1 else [_conv_bn_relu(c_in, hidden, 1)]
        layers += [_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden), _conv_bn_relu(hidden, c_out, 1, relu=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class LogMelCNN(nn.Module):
    """features float32[B, T, M] -> logits [B, C]; `logits_and_embedding` also gives the pooled embedding [B, D]."""

    def __init__(self, config: CnnConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [_conv_bn_relu(1, config.stem_channels, 3, stride=2)]
        c_in = config.stem_channels
        for expansion, c_out, repeats, stride in config.blocks:
            for i in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, expansion, stride if i == 0 else 1))
                c_in = c_out
        layers.append(_conv_bn_relu(c_in, config.embedding_size, 1))
        width = config.embedding_size
        if config.name == "linear":
            width = config.num_frames * config.num_mel_bins
            layers = [nn.Flatten(), nn.BatchNorm1d(width, affine=False)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(width, config.num_labels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def embedding(self, features: torch.Tensor) -> torch.Tensor:
        """float32[B, T, M] -> pooled embedding [B, D] (mean over the time x frequency map; the standardised
        input for a linear model)."""
        if self.config.name == "linear":
            return self.features(features)
        return self.features(features.unsqueeze(1)).mean(dim=(2, 3))

    def logits_and_embedding(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.embedding(features)
        return self.classifier(self.dropout(pooled)), pooled

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits_and_embedding(features)[0]


def is_cnn_dir(path: str | Path) -> bool:
    """Whether `path` is a directory holding a saved `LogMelCNN` (its config.json names our model type)."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == CNN_MODEL_TYPE
    except (json.JSONDecodeError, AttributeError):
        return False


def save_cnn(model: LogMelCNN, path: str | Path) -> None:
    """config.json + model.safetensors in `path` (created)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / WEIGHTS_FILE))


def load_cnn(path: str | Path) -> LogMelCNN:
    """Rebuild a `LogMelCNN` saved by `save_cnn`; ValueError naming the file for a bad config or weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config_path = path / CONFIG_FILE
    try:
        config = CnnConfig.from_dict(json.loads(config_path.read_text()), str(config_path))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{config_path}: not a readable CNN config ({exc})") from exc
    model = LogMelCNN(config)
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    except (OSError, RuntimeError, KeyError, SafetensorError) as exc:
        raise ValueError(f"{path / WEIGHTS_FILE}: weights do not load into the CNN of {config_path} ({exc})") from exc
    return model
