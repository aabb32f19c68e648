"""`edge_lung.runtime.artifact.e2e.read_vectors`: a damaged test_vectors.npz is named, never unpickled."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lung.runtime.artifact.e2e import read_vectors
from edge_lung.runtime.artifact.model_dir import ArtifactError


def test_garbage_test_vectors_name_the_file_and_never_suggest_unpickling(tmp_path):
    """`verify` on a garbage test_vectors.npz printed numpy's advice to allow pickles and named no file (issue 26)."""
    garbage = tmp_path / "garbage" / "test_vectors.npz"
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not an archive at all" * 10)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    truncated = tmp_path / "truncated.npz"
    np.savez(tmp_path / "whole.npz", x=np.zeros(1000))
    truncated.write_bytes((tmp_path / "whole.npz").read_bytes()[:200])
    for path in (garbage, pickled, single, truncated, tmp_path / "missing.npz"):
        with pytest.raises(ArtifactError, match="not a test-vector archive") as err:
            read_vectors(path)
        assert str(path) in str(err.value) and "allow_pickle" not in str(err.value)
    np.testing.assert_array_equal(read_vectors(tmp_path / "whole.npz")["x"], np.zeros(1000))
