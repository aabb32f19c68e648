"""`AdaptConfig`: the settings of `edge-lung adapt` (`train.adapt`), torch-free so the CLI reads its defaults
without importing torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MIN_PATIENTS = 3
MIN_CYCLES = 20
"""Refuse below this many patients, or normal or abnormal cycles, in the adaptation data."""


@dataclass(frozen=True)
class AdaptConfig:
    """What `edge-lung adapt` does; validated on construction."""

    source: str
    data: str
    out: str
    device: str | None = None
    folds: int = 0
    steps: int = 300
    lr: float = 0.01
    l2: float = 0.01
    epochs: int = 3
    batch_size: int = 16
    seed: int = 0
    from_scratch: bool = False
    val_fraction: float = 0.2
    val_seed: int = 0
    n_boot: int = 1000
    min_patients: int = MIN_PATIENTS
    min_cycles: int = MIN_CYCLES
    cache_dir: str | None = None
    num_threads: int | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.folds < 0 or self.folds == 1:
            raise ValueError(f"--folds: expected 0 (leave one patient out) or >= 2, got {self.folds}")
        for name in ("steps", "epochs", "batch_size", "n_boot"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')}: expected > 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.l2 < 0:
            raise ValueError(f"--lr / --l2: expected lr > 0 and l2 >= 0, got {self.lr} and {self.l2}")
        if self.min_patients < 2 or self.min_cycles < 1:
            raise ValueError(f"minimums: expected >= 2 patients and >= 1 cycle, got {self.min_patients} and "
                             f"{self.min_cycles}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
