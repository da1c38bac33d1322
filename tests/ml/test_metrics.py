"""ml.metrics against figures worked out by hand.

Five photos over the classes a, b, c; the fourth is of species x, which the model does not know:

    row  probabilities (a, b, c)  true  top-1  top-2
    0    0.70 0.20 0.10           a     a      a b     hit at 1
    1    0.50 0.30 0.20           b     a      a b     hit at 2
    2    0.10 0.30 0.60           c     c      c b     hit at 1
    3    0.20 0.50 0.30           x     b      b c     never a hit
    4    0.30 0.40 0.30           b     b      b a     hit at 1 (a ties c: the lower index ranks first)
"""

import json

import numpy as np
import pytest

from ml import metrics
from tests.conftest import ROOT

CLASSES = ["a", "b", "c"]
PROBABILITIES = np.array([
    [0.70, 0.20, 0.10],
    [0.50, 0.30, 0.20],
    [0.10, 0.30, 0.60],
    [0.20, 0.50, 0.30],
    [0.30, 0.40, 0.30],
])
NAMES = ["a", "b", "c", "x", "b"]


def test_label_names_map_to_class_indices_and_unknown_species_to_minus_one():
    assert metrics.label_indices(NAMES, CLASSES).tolist() == [0, 1, 2, -1, 1]
    assert metrics.label_indices([], CLASSES).tolist() == []


def test_ranking_breaks_ties_towards_the_lower_index_like_argmax():
    assert metrics.ranked(PROBABILITIES, 2).tolist() == [[0, 1], [0, 1], [2, 1], [1, 2], [1, 0]]
    assert metrics.ranked(np.array([[0.25, 0.25, 0.5]]), 3).tolist() == [[2, 0, 1]]


def test_top_k_accuracy_counts_unknown_species_as_misses():
    labels = metrics.label_indices(NAMES, CLASSES)
    assert metrics.top_k_accuracy(PROBABILITIES, labels, 1) == pytest.approx(3 / 5)
    assert metrics.top_k_accuracy(PROBABILITIES, labels, 2) == pytest.approx(4 / 5)
    # k beyond the number of classes: every known species is a hit, the unknown one still is not.
    assert metrics.top_k_accuracy(PROBABILITIES, labels, 5) == pytest.approx(4 / 5)
    assert metrics.top_k_accuracy(np.zeros((0, 3)), np.array([], dtype=int), 1) is None


def test_confusion_matrix_counts_true_rows_by_predicted_columns_without_unknown_labels():
    labels = metrics.label_indices(NAMES, CLASSES)
    predicted = metrics.ranked(PROBABILITIES, 1)[:, 0]
    assert metrics.confusion_matrix(labels, predicted, 3).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


def test_per_class_precision_recall_f1_and_support():
    # Predicted a, a, c, b, b.
    per_class = metrics.per_class(NAMES, ["a", "a", "c", "b", "b"])
    assert per_class == {
        "a": {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1},  # rows 0 and 1 called a
        "b": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},  # rows 3 and 4 called b; 1 missed
        "c": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "x": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},  # never predicted: no division by zero
    }


def test_report_keeps_the_keys_stored_reports_and_the_admin_read():
    report = metrics.report(PROBABILITIES, NAMES, CLASSES)
    assert report["n"] == 5
    assert report["top1"] == pytest.approx(3 / 5) and report["top5"] == pytest.approx(4 / 5)
    assert report["per_class"] == metrics.per_class(NAMES, ["a", "a", "c", "b", "b"])
    assert metrics.report(np.zeros((0, 3)), [], CLASSES) == {"n": 0, "top1": None, "top5": None, "per_class": {}}


@pytest.mark.slow
def test_retraining_reports_of_the_shipped_default_on_real_photos(butterflies_dir, tmp_path):
    """ml.retrain.evaluate_sets with a held-out photo of a species the model does not know (an
    atala, from ../shared/data/other_lepidoptera): it is a miss and keeps its own per-class row."""
    from ml.predict import Predictor
    from ml.retrain import evaluate_sets

    manifest = json.loads((ROOT / "artifacts" / "manifest.json").read_text())
    predictor = Predictor.load(ROOT / "artifacts" / manifest["default"])
    assert "atala" not in predictor.classes
    benchmark = [(path, species) for species in ("monarch", "viceroy")
                 for path in sorted((butterflies_dir / "test" / species).iterdir())[:3]]
    atala = sorted((butterflies_dir.parent / "other_lepidoptera" / "atala").iterdir())[0]
    held_out = [(sorted((butterflies_dir / "train" / "monarch").iterdir())[0], "monarch"), (atala, "atala")]

    reports = evaluate_sets(predictor, (benchmark, held_out), tmp_path / "evaluation")

    assert reports["benchmark"]["n"] == 6 and reports["holdout"]["n"] == 2 and reports["combined"]["n"] == 8
    assert reports["benchmark"]["top1"] >= 5 / 6
    assert reports["holdout"]["top1"] <= 1 / 2 and reports["holdout"]["top5"] <= 1 / 2  # the atala never hits
    assert reports["holdout"]["per_class"]["atala"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    hits = reports["benchmark"]["top1"] * 6 + reports["holdout"]["top1"] * 2
    assert reports["combined"]["top1"] == pytest.approx(hits / 8)
    assert set(reports["benchmark"]["per_class"]) == {"monarch", "viceroy"}
    assert [p["label"] for p in reports["holdout"]["predictions"]] == ["monarch", "atala"]
    assert json.loads((tmp_path / "evaluation" / "report.json").read_text())["holdout"]["n"] == 2
    assert (tmp_path / "evaluation" / "confusion_matrix.svg").read_text().startswith("<svg")
