"""LungAdapter-style bottleneck adapters, registered as a PEFT method.

Each adapted sub-block (an AST layer's self-attention and/or its feed-forward MLP) gets a
parallel branch `scale * up(GELU(down(x)))` whose input is the sub-block's own input (the
layer-normed hidden state) and whose output is added to the sub-block's output, as in
AdaptFormer / LungAdapter (https://arxiv.org/abs/2205.13535). `up` starts at zero, so a fresh
adapter leaves the backbone's function unchanged.

Registering the method with `peft.utils.peft_types.register_peft_method` makes
`get_peft_model(model, LungAdapterConfig(...))`, `save_pretrained` and
`PeftModel.from_pretrained` work exactly as for LoRA. Importing this module registers it
(once per process).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils.peft_types import PeftType, register_peft_method
from torch import nn

METHOD_NAME = "lung_adapter"
PREFIX = "lung_adapter_"
PLACEMENTS = ("both", "attention", "mlp")

# Module names of the two sub-blocks inside transformers' ASTLayer (transformers >= 5).
_PLACEMENT_PATTERN = {
    "both": r".*layers\.\d+\.(attention|mlp)",
    "attention": r".*layers\.\d+\.attention",
    "mlp": r".*layers\.\d+\.mlp",
}


def _ensure_peft_type() -> PeftType:
    """Add LUNG_ADAPTER to PEFT's closed `PeftType` enum.

    `register_peft_method` only accepts names already in the enum, and PEFT (0.21) offers no
    public way to extend it for an out-of-tree method. A str-valued member is added the way
    `enum` itself builds members, so `PeftType("LUNG_ADAPTER")`, iteration and JSON round-trips
    of adapter_config.json all work.
    """
    name = METHOD_NAME.upper()
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)
    assert isinstance(member, enum.Enum) and PeftType(name) is member
    return member


LUNG_ADAPTER = _ensure_peft_type()


@dataclass
class LungAdapterConfig(PeftConfig):
    """PEFT config of the bottleneck adapter.

    width: bottleneck dimension; scale: multiplier of the adapter branch; placement:
    "both" (attention and feed-forward), "attention" or "mlp"; target_modules: regex of the
    modules to wrap (derived from `placement` when None); modules_to_save: modules trained in
    full next to the adapters (the classification head and the final norm by default).
    """

    width: int = field(default=64, metadata={"help": "bottleneck width"})
    scale: float = field(default=0.1, metadata={"help": "multiplier of the adapter branch"})
    placement: str = field(default="both", metadata={"help": "both | attention | mlp"})
    target_modules: str | list[str] | None = field(default=None, metadata={"help": "modules to wrap"})
    exclude_modules: str | list[str] | None = field(default=None, metadata={"help": "modules not to wrap"})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "modules trained in full"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = LUNG_ADAPTER
        if not isinstance(self.width, int) or self.width <= 0:
            raise ValueError(f"LungAdapterConfig.width: expected a positive int, got {self.width!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"LungAdapterConfig.placement: expected one of {PLACEMENTS}, got {self.placement!r}")
        if self.target_modules is None:
            self.target_modules = _PLACEMENT_PATTERN[self.placement]


class LungAdapterLayer(nn.Module, BaseTunerLayer):
    """Wraps one sub-block and adds `scale * up(gelu(down(x)))` to its output."""

    adapter_layer_names = ("lung_adapter_down", "lung_adapter_up")
    other_param_names = ("lung_adapter_scale",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, hidden_size: int, config: LungAdapterConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.hidden_size = hidden_size
        self.lung_adapter_down = nn.ModuleDict()
        self.lung_adapter_up = nn.ModuleDict()
        self.lung_adapter_scale: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: LungAdapterConfig) -> None:
        """Create (or replace) the adapter `adapter_name`: Xavier down, zero up."""
        down = nn.Linear(self.hidden_size, config.width)
        up = nn.Linear(config.width, self.hidden_size)
        nn.init.xavier_uniform_(down.weight)
        nn.init.zeros_(down.bias)
        nn.init.zeros_(up.weight)  # zero-init: the adapted model starts as the backbone
        nn.init.zeros_(up.bias)
        self.lung_adapter_down[adapter_name] = down
        self.lung_adapter_up[adapter_name] = up
        self.lung_adapter_scale[adapter_name] = float(config.scale)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise NotImplementedError("lung_adapter: a non-linear parallel branch cannot be merged into the weights")

    def unmerge(self) -> None:
        raise NotImplementedError("lung_adapter: nothing is ever merged")

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        out = self.base_layer(hidden_states, *args, **kwargs)
        if self.disable_adapters:
            return out
        delta = None
        for name in self.active_adapters:
            if name not in self.lung_adapter_down:
                continue
            down, up = self.lung_adapter_down[name], self.lung_adapter_up[name]
            x = hidden_states.to(down.weight.dtype)
            branch = up(nn.functional.gelu(down(x))) * self.lung_adapter_scale[name]
            delta = branch if delta is None else delta + branch
        if delta is None:
            return out
        if isinstance(out, tuple):  # attention returns (output, weights)
            return (out[0] + delta.to(out[0].dtype), *out[1:])
        return out + delta.to(out.dtype)


class LungAdapterModel(BaseTuner):
    """PEFT tuner that wraps the targeted sub-blocks in `LungAdapterLayer`."""

    prefix: str = PREFIX
    tuner_layer_cls = LungAdapterLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _create_and_replace(
        self,
        peft_config: LungAdapterConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: str | None = None,
    ) -> None:
        if isinstance(target, LungAdapterLayer):
            target.update_layer(adapter_name, peft_config)
            return
        hidden_size = _input_width(target, current_key)
        new_module = LungAdapterLayer(target, adapter_name, hidden_size, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        setattr(parent, child_name, new_module)
        for param in new_module.parameters():
            ref = next(child.parameters(), None)
            if ref is not None and param.device != ref.device:
                param.data = param.data.to(ref.device)

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        if merge:
            raise NotImplementedError("lung_adapter: adapters cannot be merged; use unload()")
        for name, module in list(self.model.named_modules()):
            if isinstance(module, LungAdapterLayer):
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child, module.get_base_layer())
        return self.model


def _input_width(module: nn.Module, key: str) -> int:
    """Hidden size a sub-block reads: the in_features of its first Linear."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            return sub.in_features
    raise TypeError(f"lung_adapter: target {key!r} ({type(module).__name__}) contains no nn.Linear to size the adapter")


def _register() -> None:
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    if LUNG_ADAPTER in PEFT_TYPE_TO_TUNER_MAPPING:  # already registered (module imported twice)
        return
    register_peft_method(name=METHOD_NAME, config_cls=LungAdapterConfig, model_cls=LungAdapterModel, prefix=PREFIX)


_register()
