"""The Pareto plot's front (the demo's `pareto.png`): known answers on hand-made points."""

from edge_lung.plots import pareto_front, save_pareto


def _points(*pairs):
    return [{"label": f"m{i}", "precision": "fp32", "ms": ms, "score": score} for i, (ms, score) in enumerate(pairs)]


def test_pareto_front_keeps_only_points_no_other_beats_on_both_axes():
    # m0 fast but weak, m1 slower and better, m2 dominated by m1 (slower and worse), m3 best and slowest,
    # m4 as fast as m0 but better: m0 drops out
    points = _points((2.0, 55.0), (5.0, 70.0), (9.0, 60.0), (40.0, 80.0), (2.0, 58.0))
    assert pareto_front(points) == [4, 1, 3]


def test_pareto_front_of_equal_scores_is_the_fastest():
    assert pareto_front(_points((8.0, 60.0), (3.0, 60.0), (5.0, 60.0))) == [1]


def test_save_pareto_writes_a_png(tmp_path):
    path = save_pareto(_points((2.0, 55.0), (5.0, 70.0)), tmp_path / "pareto.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
