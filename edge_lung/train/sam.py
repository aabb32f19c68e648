"""Sharpness-Aware Minimization as a wrapper around any torch optimizer.

SAM (Foret et al. 2021, https://arxiv.org/abs/2010.01412) and adaptive ASAM (Kwon et al. 2021,
https://arxiv.org/abs/2102.11600), written the way timm's `Lookahead` wraps a base optimizer:
the wrapper shares the base optimizer's `param_groups` (so an lr schedule set on either is
seen by both) and its `state_dict` is the base optimizer's.

One step takes two forward/backward passes:

    loss(model(x), y).backward()      # under DDP: inside model.no_sync(), see train.py
    sam.first_step(zero_grad=True)    # w <- w + e(w), e = rho * g / ||g||  (ASAM: rho * w^2 g / ||w g||)
    loss(model(x), y).backward()      # gradient at the perturbed point (synchronised)
    sam.second_step(zero_grad=True)   # w <- saved w, then the base optimizer steps with that gradient

Gradient clipping belongs between the second backward and `second_step`: it rescales the
gradient the base optimizer uses; the perturbation direction is already normalised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch.optim import Optimizer


class SAM(Optimizer):
    """SAM / ASAM around `base_optimizer` (AdamW, SGD, ...)."""

    def __init__(self, base_optimizer: Optimizer, rho: float = 0.05, adaptive: bool = False, eps: float = 1e-12):
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(f"SAM: expected a torch.optim.Optimizer to wrap, got {type(base_optimizer).__name__}")
        if rho <= 0:
            raise ValueError(f"SAM rho: expected > 0, got {rho}")
        defaults = {"rho": float(rho), "adaptive": bool(adaptive)}
        self._base_optimizer = base_optimizer
        self.eps = float(eps)
        self.param_groups = base_optimizer.param_groups
        self.defaults = {**base_optimizer.defaults, **defaults}  # the base optimizer's own stay untouched
        self.state: defaultdict = defaultdict(dict)  # per-parameter weights saved by first_step
        for name, default in defaults.items():
            for group in self.param_groups:
                group.setdefault(name, default)

    @property
    def base_optimizer(self) -> Optimizer:
        return self._base_optimizer

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        """||g|| (SAM) or ||w * g|| (ASAM) over every parameter with a gradient."""
        norms = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad * p.abs() if group["adaptive"] else p.grad
                # at least float32 (bf16 grads), never below the parameter's own precision
                norms.append(torch.linalg.vector_norm(g.to(torch.promote_types(g.dtype, torch.float32))))
        if not norms:
            raise RuntimeError("SAM.first_step: no parameter has a gradient; call backward() first")
        device = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the adversarial point w + e(w), remembering w."""
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + self.eps)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                e_w = (p * p if group["adaptive"] else 1.0) * p.grad * scale.to(p.device, p.dtype)
                p.add_(e_w.to(p.dtype))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w and take the base optimizer's step with the gradient computed at w + e(w)."""
        for group in self.param_groups:
            for p in group["params"]:
                saved = self.state[p].pop("old_p", None)
                if saved is not None:
                    p.copy_(saved)
        self._base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """Full SAM step; `closure` must zero grads, run forward and backward, and return the loss.

        The gradient of the first pass must already be in `.grad` when this is called.
        """
        if closure is None:
            raise RuntimeError("SAM.step: expected a closure that recomputes the loss; or call first_step/second_step")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        # Between steps SAM holds no state of its own: the base optimizer's (with rho/adaptive in
        # its param_groups) is everything needed to resume.
        return self._base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self._base_optimizer.load_state_dict(state_dict)
        self.param_groups = self._base_optimizer.param_groups

    def __repr__(self) -> str:
        return f"SAM(rho={self.defaults['rho']}, adaptive={self.defaults['adaptive']}, base={self._base_optimizer!r})"
