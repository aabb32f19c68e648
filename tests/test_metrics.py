"""The ICBHI figures against hand-computed values."""

import math

import numpy as np
import pytest

from edge_lung.metrics import confusion_matrix, format_scores, icbhi_scores, score_predictions, screening_curve

# rows true (normal, crackle, wheeze, both), columns predicted
CM = np.array([[8, 1, 1, 0], [2, 3, 1, 0], [0, 1, 4, 1], [1, 0, 0, 2]])


def test_official_and_relaxed_scores():
    s = icbhi_scores(CM)
    assert s["specificity"] == pytest.approx(80.0)  # 8 of 10 normal
    assert s["sensitivity"] == pytest.approx(60.0)  # exact class: 3 + 4 + 2 of 15 abnormal
    assert s["score"] == pytest.approx(70.0)
    assert s["sensitivity_relaxed_2class"] == pytest.approx(80.0)  # any abnormal class: 15 - 3 called normal
    assert s["score_relaxed_2class"] == pytest.approx(80.0)
    assert s["accuracy"] == pytest.approx(100 * 17 / 25)
    assert s["num_cycles"] == 25


def test_from_labels_equals_from_matrix():
    y_true = np.repeat(np.arange(4), CM.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(4), row) for row in CM])
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred), CM)
    assert score_predictions(y_true, y_pred) == icbhi_scores(CM)
    text = format_scores(icbhi_scores(CM))
    assert "ICBHI official" in text and "Relaxed 2-class" in text and "exact class" in text


def test_undefined_figures_are_nan_not_zero():
    s = icbhi_scores(np.diag([5, 0, 0, 0]))
    assert s["specificity"] == 100.0 and math.isnan(s["sensitivity"]) and math.isnan(s["score"])


def test_screening_curve_extremes():
    y = np.array([0, 0, 1, 2, 3])
    p = np.array([0.1, 0.6, 0.7, 0.9, 0.4])
    curve = {round(c["threshold"], 2): c for c in screening_curve(y, p, np.array([0.0, 0.5, 1.01]))}
    assert curve[0.0] == {"threshold": 0.0, "sensitivity": 100.0, "specificity": 0.0}
    assert curve[0.5]["sensitivity"] == pytest.approx(200 / 3) and curve[0.5]["specificity"] == 50.0
    assert curve[1.01]["sensitivity"] == 0.0 and curve[1.01]["specificity"] == 100.0
    assert screening_curve(np.zeros(3, int), np.ones(3))[0]["sensitivity"] is None
