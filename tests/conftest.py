"""Shared fixtures: a small synthetic database (built once per session) and the real subset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_lung.data.synth import synthesize_database


@pytest.fixture(scope="session")
def synth_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-recording synthetic database in the official layout (read-only for tests)."""
    out = tmp_path_factory.mktemp("synth_db")
    synthesize_database(out, recordings=24, seed=7)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synth_db: Path) -> Path:
    """The one "tiny trained run" tests share (read-only: copy it before putting it at risk): a tiny AST with
    LungAdapter adapters of width 8, 1 epoch on 16 cycles of `synth_db`, 2 threads (about 10 s)."""
    pytest.importorskip("torch")
    from edge_lung.train.config import TrainConfig  # torch: imported only by tests that train
    from edge_lung.train.loop import train

    cache = tmp_path_factory.getbasetemp() / "decode-cache"
    with pytest.MonkeyPatch.context() as mp:  # session-scoped: the autouse cache fixture is not active yet
        mp.setenv("EDGE_LUNG_CACHE_DIR", str(cache))
        out = tmp_path_factory.mktemp("tiny_run") / "run"
        cfg = TrainConfig(data=str(synth_db), out=str(out), backbone="tiny", adapter="lung", adapter_width=8,
                          epochs=1, batch_size=8, max_cycles=16, progress=False, num_threads=2, cache_dir=str(cache))
        return train(cfg)


@pytest.fixture(scope="session")
def icbhi_dir() -> Path:
    """The real ICBHI subset named by EDGE_LUNG_ICBHI_DIR, or skip with the reason."""
    value = os.environ.get("EDGE_LUNG_ICBHI_DIR")
    if not value:
        pytest.skip("EDGE_LUNG_ICBHI_DIR is not set (point it at ../shared/data/icbhi-subset to run real-data tests)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"EDGE_LUNG_ICBHI_DIR={value} is not a directory")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the decode cache out of the user's home during tests."""
    monkeypatch.setenv("EDGE_LUNG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "decode-cache"))
