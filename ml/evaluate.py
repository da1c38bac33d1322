"""Evaluating an artifact on an ImageFolder: top-1, top-5, per-class precision/recall
(`ml.metrics`), a confusion-matrix PNG and a JSON report. Folders are matched to the model's
classes by name; folders the model does not know are reported and skipped."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ml import data, metrics
from ml.predict import Predictor


def evaluate(artifact_dir, data_dir, *, report_dir=None, batch_size: int = 32, progress: bool = True,
             predictor: Predictor | None = None) -> dict:
    from tqdm import tqdm

    predictor = predictor or Predictor.load(artifact_dir)
    classes = predictor.classes
    root = Path(data_dir)
    skipped = data.unknown_folders(root, classes)
    folder = data.load_image_folder(root, classes)

    started = time.perf_counter()
    chunks = []
    pipeline = data.pixel_dataset(folder.paths, predictor.metadata.input_size, batch_size=batch_size)
    with tqdm(total=len(folder), desc="evaluate", unit="img", disable=not progress, file=sys.stderr) as bar:
        for batch in pipeline:
            chunks.append(predictor.predict_arrays(np.asarray(batch)))
            bar.update(len(chunks[-1]))
    probabilities = np.concatenate(chunks)
    report = metrics_report(probabilities, folder.labels, classes, predictor.metadata.unknown_threshold)
    report.update({
        "artifact": str(artifact_dir),
        "model": predictor.metadata.name,
        "data_dir": str(root),
        "skipped_folders": skipped,
        "seconds": round(time.perf_counter() - started, 1),
    })
    if report_dir is not None:
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        save_confusion_matrix(probabilities.argmax(1), folder.labels, classes, report_dir / "confusion_matrix.png",
                              title=f"{predictor.metadata.name}: top-1 {report['top1']:.2%} on {report['n']} photos")
    return report


def metrics_report(probabilities: np.ndarray, labels: np.ndarray, classes: list[str], unknown_threshold: float = 0.0) -> dict:
    """`ml.metrics.report` for integer labels (indices into `classes`), plus how many known
    photos the open-set threshold would wrongly reject."""
    report = metrics.report(probabilities, [classes[label] for label in labels], classes)
    report.update({
        "unknown_threshold": float(unknown_threshold),
        "wrongly_rejected": float(np.mean(probabilities.max(1) < unknown_threshold)) if len(labels) else None,
    })
    return report


def save_confusion_matrix(predicted, labels, classes, path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    matrix = metrics.confusion_matrix(labels, predicted, len(classes))
    size = max(6, 0.22 * len(classes))
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    axes.set_yticks(range(len(classes)), classes, fontsize=6)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
