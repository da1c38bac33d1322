"""The promotion rule and the held-out split (pure functions of ml.retrain; no TensorFlow)."""

import sys

import pytest

from ml.retrain import LabelledPhoto, backbones_from_metadata, promotion_decision, split_labelled


def report(benchmark, holdout, n_holdout=4):
    return {"benchmark": {"n": 100, "top1": benchmark}, "holdout": {"n": n_holdout, "top1": holdout}}


@pytest.mark.parametrize("candidate, baseline, promote", [
    (report(0.90, 0.75), report(0.85, 0.25), True),      # better everywhere
    (report(0.847, 0.75), report(0.85, 0.25), True),     # 0.3 points lower on the benchmark: within 0.5
    (report(0.84, 1.0), report(0.85, 0.0), False),       # 1 point lower on the benchmark: refused
    (report(0.90, 0.50), report(0.85, 0.75), False),     # worse on the held-out labelled photos
    (report(0.85, None, 0), report(0.85, None, 0), True),  # nothing held out: the benchmark decides
])
def test_promotion_decision(candidate, baseline, promote):
    decision = promotion_decision(candidate, baseline, max_benchmark_drop=0.005)
    assert decision.promote is promote
    assert decision.reasons


def test_a_species_the_labels_touch_must_keep_its_recall():
    def with_recall(top1, monarch, viceroy):
        report_ = report(top1, 0.5)
        report_["benchmark"]["per_class"] = {"monarch": {"recall": monarch}, "viceroy": {"recall": viceroy},
                                             "adonis": {"recall": 0.5}}
        return report_

    baseline = with_recall(0.90, 1.0, 0.9)
    corrupted = with_recall(0.92, 0.8, 0.95)  # better overall, monarch broken
    decision = promotion_decision(corrupted, baseline, 0.005, touched=["monarch", "viceroy"], max_class_recall_drop=0.15)
    assert not decision.promote and "recall of monarch falls from 100% to 80%" in decision.reasons[0]
    # The same drop in a species no label is about is noise the overall top-1 already weighs.
    assert promotion_decision(corrupted, baseline, 0.005, touched=["viceroy"], max_class_recall_drop=0.15).promote
    assert promotion_decision(with_recall(0.90, 0.85, 0.9), baseline, 0.005, touched=["monarch"],
                              max_class_recall_drop=0.15).promote  # 15 points: allowed


def test_touched_species_are_the_labels_and_the_predictions_they_replaced(tmp_path):
    from ml.retrain import touched_species

    photos = [LabelledPhoto("photo-1", tmp_path / "1.jpg", "viceroy", previous_label="monarch"),
              LabelledPhoto("photo-2", tmp_path / "2.jpg", "not a butterfly", previous_label="adonis")]
    assert touched_species(photos) == ["adonis", "monarch", "viceroy"]


def test_first_version_is_promoted():
    assert promotion_decision(report(0.5, 0.5), None, 0.005).promote


def test_held_out_slice_is_stable_and_disjoint(tmp_path):
    photos = [LabelledPhoto(f"photo-{i}", tmp_path / f"{i}.jpg", "viceroy" if i % 2 else "monarch") for i in range(20)]
    train, held_out = split_labelled(photos, 0.25)
    assert len(held_out) == 6 and not {p.key for p in train} & {p.key for p in held_out}
    # More labels later: the photos held out before stay held out.
    more = photos + [LabelledPhoto(f"photo-{i}", tmp_path / f"{i}.jpg", "viceroy") for i in range(20, 30)]
    _, held_out_later = split_labelled(more, 0.25)
    assert {p.key for p in held_out if p.label == "monarch"} <= {p.key for p in held_out_later}
    # A label with one photo trains; it cannot be both trained on and measured.
    train, held_out = split_labelled([LabelledPhoto("photo-1", tmp_path / "1.jpg", "julia")], 0.25)
    assert len(train) == 1 and not held_out


def test_recipe_needs_the_weights_files(tmp_path):
    metadata = {"backbone": "mobilenet_v2+mobilenet_v2", "weights": "a.weights.h5+imagenet"}
    with pytest.raises(FileNotFoundError, match="a.weights.h5"):
        backbones_from_metadata(metadata, tmp_path)
    (tmp_path / "a.weights.h5").write_bytes(b"x")
    assert backbones_from_metadata(metadata, tmp_path) == [("mobilenet_v2", str(tmp_path / "a.weights.h5")),
                                                           ("mobilenet_v2", "imagenet")]


def test_the_rule_is_readable_without_tensorflow():
    import subprocess

    code = "import sys, ml.retrain as r; print(r.promotion_rule(0.005)); sys.exit('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "0.5 percentage points" in result.stdout and "15 points" in result.stdout
