"""Training settings (`edge_lung.train.config`): --num-threads bounded as the runtime bounds --threads."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edge_lung.cli import app
from edge_lung.runtime.artifact.model_dir import usable_cores
from edge_lung.train.config import check_num_threads


@pytest.mark.parametrize("command", ["train", "distill"])
@pytest.mark.parametrize("threads", [500, 10**6])
def test_more_threads_than_cores_is_refused_like_the_runtime(command, threads, tmp_path):
    """`train --num-threads 500` on 2 cores was accepted and ran 3.5x slower (issue 26); `classify --threads 500`
    is refused. Both now say the bound before any data is read."""
    extra = ["--teacher", str(tmp_path / "teacher")] if command == "distill" else []
    res = CliRunner().invoke(app, [command, "--data", str(tmp_path / "db"), *extra, "--num-threads", str(threads),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert f"--num-threads: expected 1 to {usable_cores()} (the cores this process may use)" in res.output
    assert not (tmp_path / "run").exists()


def test_unset_or_within_the_cores_passes():
    check_num_threads(None)
    check_num_threads(usable_cores())
    with pytest.raises(ValueError, match="--num-threads"):
        check_num_threads(0)
