"""Retraining from staff labels: the one entry point the web side calls (`retrain`).

A new model is trained on the base ImageFolder plus the labelled photos (reusing the feature
cache, so only photos never seen before run through the backbones), then the new model and the
current one are measured on the same held-out photos: the fixed benchmark test set plus a slice of
the labelled photos that neither trains on. `promotion_decision` says whether the new one may
replace the current one.

Importing this module does not import TensorFlow (the web process reads `promotion_rule`);
training and evaluation import it inside the functions.

A run can be stopped: `retrain(..., should_stop=...)` checks it between steps, every training
batch and every evaluation batch, and raises `ml.cancel.Cancelled`; the caller removes `out_dir`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ml import data, metrics
from ml.cancel import ShouldStop, raise_if_stopped

# The labels staff may give that are not a species: never a training class.
NOT_A_CLASS = {"not a butterfly"}


@dataclass(frozen=True)
class LabelledPhoto:
    key: str  # stable identity (the web side uses "photo-<id>"): decides the held-out slice
    path: Path  # a local image file
    label: str
    # What the photo was called before staff labelled it (the prediction shown): a species the
    # label takes photos away from, so the promotion rule watches its recall too.
    previous_label: str = ""
    # The image's content hash: decides which side of the held-out split the photo falls on, so
    # the same image uploaded twice can never be trained on and measured at once.
    content_hash: str = ""


@dataclass
class RetrainRequest:
    base_data_dir: Path  # ImageFolder the current models were trained on (or holding train/)
    benchmark_dir: Path  # ImageFolder of the fixed benchmark test set
    labelled: list[LabelledPhoto]
    # (registry backbone name, weights: "imagenet", None or a .weights.h5 path), one per backbone.
    backbones: list[tuple[str, str | None]]
    out_dir: Path
    name: str
    version: str
    baseline_dir: Path | None = None  # the artifact of the version to compare with
    holdout_fraction: float = 0.25
    seed: int = 0
    max_benchmark_drop: float = 0.005
    max_class_recall_drop: float = 0.15
    # ml.train.TrainConfig fields (the baseline's recipe, e.g. max_epochs, fine_tune).
    train_config: dict = field(default_factory=dict)
    cache_dir: str | None = None


@dataclass
class Decision:
    promote: bool
    reasons: list[str]


@dataclass
class RetrainOutcome:
    artifact_dir: Path
    metadata: dict
    candidate: dict  # {"benchmark": report, "holdout": report, "combined": report}
    baseline: dict | None
    decision: Decision
    training_keys: list[str]
    holdout_keys: list[str]
    skipped: dict  # key -> why a labelled photo was not used
    timings_s: dict


Progress = Callable[[float, str], None]


def promotion_rule(max_benchmark_drop: float, max_class_recall_drop: float = 0.15) -> str:
    return (
        "The new version is promoted only when, measured on the same photos as the active version: "
        "(1) its top-1 on the held-out staff-labelled photos is not lower, "
        f"(2) its top-1 on the fixed benchmark test set is not lower by more than {100 * max_benchmark_drop:.1f} "
        "percentage points, and "
        f"(3) for every species the staff labels touch (a label given, or the prediction it replaced), its benchmark "
        f"recall is not lower by more than {100 * max_class_recall_drop:.0f} points. "
        "Staff can promote a rejected version anyway (recorded as an override)."
    )


def touched_species(labelled: list[LabelledPhoto]) -> list[str]:
    """The species staff labels are about: the labels given and the predictions they replaced."""
    touched = {p.label for p in labelled} | {p.previous_label for p in labelled if p.previous_label}
    return sorted(touched - NOT_A_CLASS - {""})


def promotion_decision(candidate: dict, baseline: dict | None, max_benchmark_drop: float, touched=(),
                       max_class_recall_drop: float = 0.15) -> Decision:
    """Applies `promotion_rule` to two reports measured on the same photos."""
    if baseline is None:
        return Decision(True, ["no active version to compare with"])
    reasons, promote = [], True
    # A mislabelled batch hurts the species it is about; the overall top-1 can hide that under the
    # retrain-to-retrain noise of the other species (docs/retraining.md).
    new_recall, old_recall = candidate["benchmark"].get("per_class", {}), baseline["benchmark"].get("per_class", {})
    watched = []
    for species in touched:
        if species in new_recall and species in old_recall:
            old, new = old_recall[species]["recall"], new_recall[species]["recall"]
            watched.append(f"{species} {old:.0%} -> {new:.0%}")
            if old - new > max_class_recall_drop + 1e-9:
                promote = False
                reasons.append(f"benchmark recall of {species} falls from {old:.0%} to {new:.0%} "
                               f"(at most {100 * max_class_recall_drop:.0f} points allowed)")
    if watched:
        reasons.append("recall of the species the labels touch: " + ", ".join(watched))
    drop = baseline["benchmark"]["top1"] - candidate["benchmark"]["top1"]
    if drop > max_benchmark_drop + 1e-12:
        promote = False
        reasons.append(f"benchmark top-1 {candidate['benchmark']['top1']:.2%} is {100 * drop:.1f} points below "
                       f"the active version's {baseline['benchmark']['top1']:.2%} (at most {100 * max_benchmark_drop:.1f} allowed)")
    else:
        reasons.append(f"benchmark top-1 {candidate['benchmark']['top1']:.2%} vs {baseline['benchmark']['top1']:.2%}")
    if candidate["holdout"]["n"]:
        if candidate["holdout"]["top1"] + 1e-12 < baseline["holdout"]["top1"]:
            promote = False
            reasons.append(f"held-out labelled photos top-1 {candidate['holdout']['top1']:.2%} is below "
                           f"the active version's {baseline['holdout']['top1']:.2%}")
        else:
            reasons.append(f"held-out labelled photos top-1 {candidate['holdout']['top1']:.2%} vs "
                           f"{baseline['holdout']['top1']:.2%}")
    else:
        reasons.append("no held-out labelled photos")
    return Decision(promote, reasons)


def split_labelled(labelled: list[LabelledPhoto], fraction: float, seed: int = 0
                   ) -> tuple[list[LabelledPhoto], list[LabelledPhoto]]:
    """(train, held out). Per label, the photos are ordered by a hash of (seed, content hash or
    key) and the first ceil(fraction * n) are held out when the label has at least two: the same
    photo stays held out run after run while the rest of its label grows, so no later run trains
    on it."""
    by_label: dict[str, list[LabelledPhoto]] = {}
    for photo in labelled:
        by_label.setdefault(photo.label, []).append(photo)
    train, held_out = [], []
    for label in sorted(by_label):
        photos = sorted(by_label[label], key=lambda p: (hashlib.sha256(f"{seed}:{p.content_hash or p.key}".encode()).hexdigest(), p.key))
        n_out = math.ceil(fraction * len(photos)) if len(photos) >= 2 and fraction > 0 else 0
        held_out += photos[:n_out]
        train += photos[n_out:]
    return train, held_out


def retrain(request: RetrainRequest, progress: Progress | None = None,
            should_stop: ShouldStop | None = None) -> RetrainOutcome:
    """Trains, saves and evaluates a new version; compares it with `request.baseline_dir`.
    Raises `Cancelled` as soon as `should_stop()` says so (see the module's docstring)."""
    from ml.predict import Predictor
    from ml.train import BackboneSpec, TrainConfig, train

    report = progress or (lambda fraction, stage: None)

    def progress(fraction: float, stage: str) -> None:
        raise_if_stopped(should_stop)
        report(fraction, stage)

    timings: dict[str, float] = {}
    started = time.perf_counter()
    out_dir = Path(request.out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} already holds files; a version is never overwritten")

    progress(0.02, "preparing the training data")
    base_root = data.training_root(request.base_data_dir)
    base = data.load_image_folder(base_root)
    skipped: dict[str, str] = {}
    usable = []
    for photo in request.labelled:
        if photo.label in NOT_A_CLASS:
            skipped[photo.key] = "not a species"
        elif not Path(photo.path).is_file():
            skipped[photo.key] = "file missing"
        elif "/" in photo.label or photo.label.startswith("."):
            skipped[photo.key] = "label is not a folder name"
        else:
            usable.append(photo)
    train_photos, held_out = split_labelled(usable, request.holdout_fraction, request.seed)
    # A class needs two training photos (stratified validation split): a species the base data
    # lacks and with a single labelled photo waits for more.
    counts: dict[str, int] = {}
    for photo in train_photos:
        counts[photo.label] = counts.get(photo.label, 0) + 1
    known = set(base.classes)
    for photo in list(train_photos):
        if photo.label not in known and counts[photo.label] < 2:
            train_photos.remove(photo)
            skipped[photo.key] = "new species with fewer than two labelled photos"
    held_out = [p for p in held_out if p.label in known or counts.get(p.label, 0) >= 2]

    with tempfile.TemporaryDirectory(prefix="retrain-") as work:
        merged = Path(work) / "train"
        for path, label in zip(base.paths, base.labels):
            _link(path, merged / base.classes[label] / f"base_{path.name}")
        for photo in train_photos:
            _link(Path(photo.path), merged / photo.label / f"{photo.key}{Path(photo.path).suffix.lower() or '.jpg'}")
        config = TrainConfig(**{**request.train_config, "cache_dir": request.cache_dir, "progress": False, "verbose": 0})
        specs = [BackboneSpec(name, weights) for name, weights in request.backbones]
        progress(0.05, f"training on {len(base)} base + {len(train_photos)} labelled photos")
        tick = time.perf_counter()
        result = train(merged, specs, config, name=request.name, out_dir=out_dir, should_stop=should_stop,
                       on_progress=lambda fraction, stage: progress(0.05 + 0.55 * fraction, stage))
        timings["train_s"] = time.perf_counter() - tick

    benchmark = data.load_image_folder(request.benchmark_dir, [c for c in result.metadata.classes])
    items = ([(p, benchmark.classes[y]) for p, y in zip(benchmark.paths, benchmark.labels)],
             [(Path(p.path), p.label) for p in held_out])

    progress(0.6, "evaluating the new version")
    tick = time.perf_counter()
    candidate_predictor = Predictor.load(out_dir)
    candidate = evaluate_sets(candidate_predictor, items, out_dir / "evaluation",
                              lambda f: progress(0.6 + 0.2 * f, "evaluating the new version"))
    del candidate_predictor
    timings["evaluate_candidate_s"] = time.perf_counter() - tick
    baseline = None
    if request.baseline_dir is not None:
        progress(0.8, "evaluating the active version on the same photos")
        tick = time.perf_counter()
        baseline = evaluate_sets(Predictor.load(request.baseline_dir), items, out_dir / "baseline_evaluation",
                                 lambda f: progress(0.8 + 0.18 * f, "evaluating the active version on the same photos"))
        timings["evaluate_baseline_s"] = time.perf_counter() - tick
    decision = promotion_decision(candidate, baseline, request.max_benchmark_drop, touched_species(usable),
                                  request.max_class_recall_drop)
    timings["total_s"] = time.perf_counter() - started

    raise_if_stopped(should_stop)
    # The artifact's metadata says which version it is and what it scored on the benchmark.
    metadata_path = out_dir / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["version"] = request.version
    metadata["metrics"].update({
        "test_top1": candidate["benchmark"]["top1"], "test_top5": candidate["benchmark"]["top5"],
        "n_test": candidate["benchmark"]["n"], "evaluated_on": str(request.benchmark_dir),
        "holdout_top1": candidate["holdout"]["top1"], "n_holdout": candidate["holdout"]["n"],
    })
    metadata["retrain"] = {"n_base": len(base), "n_labelled_train": len(train_photos), "n_labelled_holdout": len(held_out),
                           "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    tmp = metadata_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    tmp.replace(metadata_path)
    report(1.0, "done")
    return RetrainOutcome(out_dir, metadata, candidate, baseline, decision, [p.key for p in train_photos],
                          [p.key for p in held_out], skipped, {k: round(v, 1) for k, v in timings.items()})


def evaluate_sets(predictor, items: tuple[list, list], report_dir: Path | None = None,
                  progress: Callable[[float], None] | None = None) -> dict:
    """`ml.metrics.report` of one predictor on the benchmark photos, the held-out labelled photos
    and both together; labels are compared by name, so a species the model does not know counts
    as a miss. The benchmark report carries its confusion matrix ({"classes", "counts"}: what the
    admin draws); report.json and confusion_matrix.svg are written to `report_dir`."""
    benchmark, held_out = items
    everything = list(benchmark) + list(held_out)
    probabilities = predict_paths(predictor, [p for p, _ in everything], progress)
    classes = list(predictor.classes)
    reports = {
        "benchmark": metrics.report(probabilities[: len(benchmark)], [y for _, y in benchmark], classes),
        "holdout": metrics.report(probabilities[len(benchmark):], [y for _, y in held_out], classes),
        "combined": metrics.report(probabilities, [y for _, y in everything], classes),
    }
    if benchmark:
        names = classes + sorted({y for _, y in benchmark} - set(classes))
        predicted = metrics.ranked(probabilities[: len(benchmark)], 1)[:, 0]
        counts = metrics.confusion_matrix(metrics.label_indices([y for _, y in benchmark], names), predicted, len(names))
        reports["benchmark"]["confusion_matrix"] = {"classes": names, "counts": counts.tolist()}
    reports["holdout"]["predictions"] = [
        {"path": str(p), "label": y, "predicted": classes[int(np.argmax(row))]}
        for (p, y), row in zip(held_out, probabilities[len(benchmark):])
    ]
    if report_dir is not None:
        from ml.evaluate import confusion_matrix_svg

        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "report.json").write_text(json.dumps(reports, indent=2) + "\n")
        if benchmark:
            matrix = reports["benchmark"]["confusion_matrix"]
            (report_dir / "confusion_matrix.svg").write_text(confusion_matrix_svg(
                matrix["counts"], matrix["classes"],
                title=f"{predictor.metadata.name}: top-1 {reports['benchmark']['top1']:.2%} on {len(benchmark)} benchmark photos"))
    return reports


def predict_paths(predictor, paths, progress: Callable[[float], None] | None = None, batch_size: int = 32) -> np.ndarray:
    """The predictor's probabilities for image files, decoded as prediction decodes them."""
    if not paths:
        return np.zeros((0, len(predictor.classes)), np.float32)
    chunks, done = [], 0
    for batch in data.pixel_dataset(paths, predictor.metadata.input_size, batch_size=batch_size):
        chunks.append(predictor.predict_arrays(np.asarray(batch)))
        done += len(chunks[-1])
        if progress:
            progress(done / len(paths))
    return np.concatenate(chunks)


def backbones_from_metadata(metadata: dict, weights_dir: Path | None) -> list[tuple[str, str | None]]:
    """The backbones (and weights files, looked up in `weights_dir`) an artifact was trained with,
    so a retrain reproduces the active version's recipe."""
    names = str(metadata.get("backbone", "")).split("+")
    weights = str(metadata.get("weights", "")).split("+")
    if not names or not names[0] or len(names) != len(weights):
        raise ValueError(f"the artifact's metadata names no usable backbone/weights: {metadata.get('backbone')!r}")
    specs = []
    for name, source in zip(names, weights):
        if source in ("imagenet", "none"):
            specs.append((name, None if source == "none" else "imagenet"))
            continue
        path = Path(weights_dir or "") / source
        if not path.is_file():
            raise FileNotFoundError(f"weights file {source} of backbone {name} is not in {weights_dir}")
        specs.append((name, str(path)))
    return specs


def train_config_from_metadata(metadata: dict) -> dict:
    """The baseline's training settings (TrainConfig fields), so the new version is trained alike."""
    from ml.train import TrainConfig

    known = set(TrainConfig.__dataclass_fields__) - {"cache_dir", "progress", "verbose"}
    config = dict((metadata.get("training") or {}).get("config") or {})
    return {k: v for k, v in config.items() if k in known}


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(Path(source).resolve(), target)
    except OSError:  # a filesystem without symlinks
        shutil.copyfile(source, target)
