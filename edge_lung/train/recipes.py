"""Named, versioned training recipes (issue #12): settings as data, not as a list of flags to retype.

`--recipe NAME` starts from `RECIPES[NAME]` over `TrainConfig`'s defaults; options given explicitly on
the command line override it. The run's config.json records the recipe as "NAME-vN" beside every
resolved setting, so a run says which version of a recipe made it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edge_lung.config import FeatureConfig

RECIPES: dict[str, dict[str, Any]] = {
    "icbhi-robust": {
        "version": 2,
        "why": "device shift: channel augmentation (band limits, EQ/tilt, gain, noise) and per-window per-bin "
               "mel standardisation; uniform sampling and no SpecAugment, because WRS + augmentation collapsed "
               "a from-scratch model to one class. v2: a 20-2000 Hz, 64-bin front end (the band every "
               "stethoscope records, 4 kHz ones included) and peak lr 3e-4: held-out Meditron, tiny, seed 0, "
               "8 epochs, last-epoch Score 11.4 (v1) -> 46.6 (v2), 38 with lr 3e-4 alone",
        "settings": {"channel_aug": True, "mel_norm": "window", "sampler": "uniform", "spec_augment": False,
                     "waveform_aug": False, "lr": 3e-4, "batch_size": 32,
                     "features": {"high_freq_hz": 2000.0, "num_mel_bins": 64}},
    },
    "icbhi-descriptors": {
        "version": 1,
        "why": "device shift: 26 adventitious-sound descriptors (wheeze tonality, crackle transients; gain-free, "
               "below 2 kHz; edge_lung.respiratory) and a logistic regression on them, trained to the last epoch, "
               "with a normal margin chosen on the training devices held out one at a time (train.margin). "
               "Leave-one-device-out on the shared subset, 3 seeds, last epoch: mean Score 52.1 (AKGC417L 50.2, "
               "LittC2SE 52.8, Meditron 53.3) against 46.0 for the default tiny AST and 50 for always-normal; "
               "46.0 without the margin (benchmarks/results/device-shift/2026-12-07-device-shift-descriptors.md)",
        "settings": {"backbone": "linear", "features": {"front_end": "respiratory", "num_mel_bins": 26},
                     "optimizer": "adamw", "lr": 1e-2, "epochs": 30, "sampler": "uniform", "spec_augment": False,
                     "channel_aug": False, "waveform_aug": False, "select": "last", "normal_margin": "cross-device",
                     "batch_size": 32},
    },
}

def recipe_id(name: str) -> str:
    """'icbhi-robust' -> 'icbhi-robust-v2'; ValueError naming the known recipes."""
    if name not in RECIPES:
        raise ValueError(f"--recipe: expected one of {sorted(RECIPES)}, got {name!r}")
    return f"{name}-v{RECIPES[name]['version']}"


def apply_recipe(options: dict[str, Any], explicit: Iterable[str]) -> dict[str, Any]:
    """`options` with the recipe named in options["recipe"] filled in wherever an option was not given
    explicitly; "recipe" becomes the versioned id. Without a recipe, `options` unchanged."""
    name = options.get("recipe")
    if not name:
        return dict(options)
    rid = recipe_id(name)
    given = set(explicit)
    out = dict(options)
    for key, value in RECIPES[name]["settings"].items():
        if key == "features":  # a recipe sets some feature settings; the rest keep the options' values
            out[key] = {**(out.get(key) or FeatureConfig().to_dict()), **value}
        elif key not in given:
            out[key] = value
    out["recipe"] = rid
    return out
