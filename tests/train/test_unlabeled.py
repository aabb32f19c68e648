"""Unlabeled folders for distillation (`edge_lung.train.unlabeled`): a folder that gives nothing is refused."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from edge_lung.config import FeatureConfig
from edge_lung.testing import write_signal
from edge_lung.train.unlabeled import load_unlabeled


def test_a_folder_of_only_unreadable_or_silent_files_is_refused(tmp_path):
    """It ran to the end with `unlabeled_windows: 0` and no word (issue 26); now it names the folder and why."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbled.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(str(bad / "silence.wav"), np.zeros(20 * 16000, np.float32), 16000)
    sf.write(str(bad / "dc.wav"), np.full(20 * 16000, 0.5, np.float32), 16000, subtype="FLOAT")
    sf.write(str(bad / "short.wav"), np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match=r"--unlabeled .*bad: no usable window in its 4 audio files .*dc.wav: no "
                       r"window passed the quality gate \(\d+ no_signal\); garbled.wav: .*; short.wav: too short"):
        load_unlabeled([str(bad)], FeatureConfig())


def test_a_usable_folder_reports_what_it_skipped(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    write_signal(good / "sound.wav", 12.0, 16000)
    sf.write(str(good / "silence.wav"), np.zeros(20 * 16000, np.float32), 16000)
    windows, (report,) = load_unlabeled([str(good)], FeatureConfig())
    assert len(windows) == report.windows > 0 and report.used_files == 1
    assert [s["reason"] for s in report.skipped] == [f"no window passed the quality gate ({report.gated['no_signal']} "
                                                     "no_signal)"]
