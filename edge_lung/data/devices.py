"""Device shift (issue #12): validation on whole devices, and the group of every cycle.

`--val-devices NAME[,NAME]` makes validation every non-test recording of those stethoscopes; a
patient recorded with a held-out device *and* another device would put the same chest on both
sides, so that patient's other recordings are removed from training, counted and reported. Test
recordings stay test: selection never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_lung.audio import CHANNELS, degrade
from edge_lung.config import FeatureConfig
from edge_lung.data.icbhi import Cycle, Database, Recording, load_cycles, run_val_split

GROUP_KEYS = ("device", "rate", "location", "patient")


@dataclass(frozen=True)
class DeviceSplit:
    """What `assign_device_validation` did: devices held out, patients and recordings removed from training."""

    val_devices: tuple[str, ...]
    val_recordings: int
    removed_patients: tuple[str, ...]
    removed_recordings: int
    removed_cycles: int
    excluded_devices: tuple[str, ...] = ()
    excluded_recordings: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"val_devices": list(self.val_devices), "val_recordings": self.val_recordings,
                "removed_patients": list(self.removed_patients), "removed_recordings": self.removed_recordings,
                "removed_cycles": self.removed_cycles, "excluded_devices": list(self.excluded_devices),
                "excluded_recordings": self.excluded_recordings}


def parse_devices(text: str | None) -> tuple[str, ...]:
    """'A,B' -> ('A', 'B'); None or '' -> ()."""
    return tuple(d.strip() for d in (text or "").split(",") if d.strip())


def _check_known(recordings: list[Recording], devices: tuple[str, ...], option: str, source: str | Path) -> None:
    known = sorted({r.device for r in recordings})
    unknown = [d for d in devices if d not in known]
    if unknown or not devices:
        raise ValueError(f"{source}: {option} {','.join(devices) or '(none)'}: expected device names "
                         f"from this database {known}, got unknown {unknown or 'none named'}")


def assign_device_validation(recordings: list[Recording], val_devices: tuple[str, ...],
                             source: str | Path = "database",
                             exclude: tuple[str, ...] = ()) -> tuple[list[Recording], DeviceSplit]:
    """Recordings with every non-test recording of `val_devices` in 'val', the rest of non-test in
    'train', and the training recordings of patients also heard on a validation device unassigned.

    `exclude` (`--exclude-devices`) takes devices out of both sides first: their recordings, and every
    other recording of a patient heard on them, are unassigned (what a device held out one level up,
    e.g. by benchmarks/device_shift.py, must never lend to training).
    """
    _check_known(recordings, val_devices, "--val-devices", source)
    excluded = 0
    if exclude:
        _check_known(recordings, exclude, "--exclude-devices", source)
        if set(exclude) & set(val_devices):
            raise ValueError(f"{source}: --exclude-devices {','.join(exclude)}: a device cannot be both held out "
                             f"for validation and excluded (--val-devices {','.join(val_devices)})")
        gone = {r.patient for r in recordings if r.split in ("train", "val") and r.device in exclude}
        excluded = sum(r.split in ("train", "val") and r.device in exclude for r in recordings)
        recordings = [replace(r, split=None) if r.split in ("train", "val") and (r.device in exclude or (
            r.patient in gone and r.device not in val_devices)) else r for r in recordings]
    pool = [r for r in recordings if r.split in ("train", "val")]
    val_patients = {r.patient for r in pool if r.device in val_devices}
    if len({r.device for r in pool}) == len(set(val_devices) & {r.device for r in pool}):
        raise ValueError(f"{source}: --val-devices {','.join(val_devices)} holds out every device; expected at "
                         f"least one device left to train on (devices: {sorted({r.device for r in recordings})})")
    out, removed = [], []
    for r in recordings:
        if r.split not in ("train", "val"):
            out.append(r)
        elif r.device in val_devices:
            out.append(replace(r, split="val"))
        elif r.patient in val_patients:
            out.append(replace(r, split=None))
            removed.append(r)
        else:
            out.append(replace(r, split="train"))
    split = DeviceSplit(tuple(val_devices), sum(r.device in val_devices for r in pool),
                        tuple(sorted({r.patient for r in removed})), len(removed), sum(len(r.cycles) for r in removed),
                        tuple(exclude), excluded)
    return out, split


def scan_for_run(db_dir: str | Path, settings: dict[str, Any],
                 source: str | Path = "run") -> tuple[Database, DeviceSplit | None]:
    """The database split as a run was trained: by `val_devices` when recorded, else by fraction and seed."""
    val_fraction, val_seed = run_val_split(settings, source)
    db = Database.scan(db_dir, strict=False, val_fraction=val_fraction, val_seed=val_seed)
    devices = parse_devices(settings.get("val_devices"))
    exclude = parse_devices(settings.get("exclude_devices"))
    if exclude and not devices:
        raise ValueError(f"{source}: --exclude-devices {','.join(exclude)}: expected --val-devices beside it "
                         "(excluding devices is part of a device split)")
    if not devices:
        return db, None
    db.recordings, split = assign_device_validation(db.recordings, devices, db_dir, exclude)
    return db, split


def load_run_split(db_dir: str | Path, split: str, cfg: FeatureConfig, settings: dict[str, Any],
                   source: str | Path = "run", cache_dir: str | Path | None = None,
                   channel: str | None = None) -> list[Cycle]:
    """`load_split` for a run's settings (device split honoured), optionally through a `degrade` channel."""
    db, _ = scan_for_run(db_dir, settings, source)
    cycles = load_cycles(db, splits=(split,), sample_rate=cfg.sample_rate, cache_dir=cache_dir)
    if not cycles:
        raise ValueError(f"{db_dir}: the {split!r} split has no cycles; expected an ICBHI-layout database with "
                         f"{split} recordings, a manifest or the SPRSound layout "
                         f"({len(db.recordings)} recordings found, {len(db.problems)} problems)")
    if channel is not None:
        if channel not in CHANNELS:
            raise ValueError(f"--degrade: expected one of {sorted(CHANNELS)}, got {channel!r}")
        cycles = [replace(c, audio=degrade(c.audio, cfg.sample_rate, channel)) for c in cycles]
    return cycles


def cycle_groups(db_dir: str | Path, cycles: list[Cycle], by: str) -> list[str]:
    """The `by` group ('device', 'rate' of the original file, chest 'location', 'patient') of each cycle."""
    if by not in GROUP_KEYS:
        raise ValueError(f"--by: expected one of {GROUP_KEYS}, got {by!r}")
    if by == "device":
        return [c.device for c in cycles]
    if by == "patient":
        return [c.patient for c in cycles]
    recordings = {r.stem: r for r in Database.scan(db_dir, strict=False).recordings}
    if by == "location":  # the recording's own field: a manifest or SPRSound name is no ICBHI name
        return [recordings[c.recording].location or "unknown" for c in cycles]
    return [f"{recordings[c.recording].sample_rate / 1000:g}kHz" for c in cycles]
