"""Evaluating an artifact on an ImageFolder: top-1, top-5, per-class precision/recall
(`ml.metrics`), the confusion matrix, and a JSON report. Folders are matched to the model's
classes by name; folders the model does not know are reported and skipped.

The confusion matrix is drawn as SVG by `confusion_matrix_svg`, in plain Python: the admin draws
it at request time from a stored report, with neither matplotlib nor TensorFlow (importing this
module imports neither).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from ml import data, metrics

CONFUSION_MATRIX_FILE = "confusion_matrix.svg"


def evaluate(artifact_dir, data_dir, *, report_dir=None, batch_size: int = 32, progress: bool = True,
             predictor=None) -> dict:
    """The report of an artifact (or `predictor`, an `ml.predict.Predictor`) on `data_dir`; with
    `report_dir`, also writes report.json and confusion_matrix.svg there."""
    from tqdm import tqdm

    from ml.predict import Predictor

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
    counts = metrics.confusion_matrix(folder.labels, probabilities.argmax(1), len(classes))
    report.update({
        "confusion_matrix": {"classes": list(classes), "counts": counts.tolist()},
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
        (report_dir / CONFUSION_MATRIX_FILE).write_text(confusion_matrix_svg(
            counts, classes, title=f"{predictor.metadata.name}: top-1 {report['top1']:.2%} on {report['n']} photos"))
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


def confusion_matrix_svg(counts, classes, title: str = "") -> str:
    """A confusion matrix (rows: true species, columns: predicted, `counts[true][predicted]`) as a
    standalone SVG document. Each cell is shaded by its share of its row, so the diagonal reads as
    each species' recall; non-zero cells show their count, and a tooltip names both species."""
    counts = np.asarray(counts, dtype=np.int64).reshape(len(classes), len(classes))
    n = len(classes)
    cell, font = (14, 9) if n > 20 else (26, 11)
    label_width = round(font * 0.62 * max((len(name) for name in classes), default=1)) + 8
    title_height = font + 14 if title else 0
    left, top = 18 + label_width, title_height + 18 + label_width
    width, height = left + n * cell + 10, top + n * cell + 10
    row_totals = counts.sum(axis=1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="{font}" role="img">',
        f"<title>{escape(title or 'confusion matrix')}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
    ]
    if title:
        parts.append(f'<text x="{width / 2:g}" y="{font + 6}" text-anchor="middle" font-size="{font + 2}">'
                     f"{escape(title)}</text>")
    parts.append(f'<text x="{left + n * cell / 2:g}" y="{title_height + 12}" text-anchor="middle">predicted</text>')
    parts.append(f'<text transform="translate(12 {top + n * cell / 2:g}) rotate(-90)" text-anchor="middle">true</text>')
    for i, name in enumerate(classes):
        middle = i * cell + cell / 2
        parts.append(f'<text x="{left - 4}" y="{top + middle:g}" text-anchor="end" dominant-baseline="central">'
                     f"{escape(name)}</text>")
        parts.append(f'<text transform="translate({left + middle:g} {top - 4}) rotate(-90)" '
                     f'dominant-baseline="central">{escape(name)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{n * cell}" height="{n * cell}" fill="#fff" stroke="#bbb"/>')
    for i, j in zip(*np.nonzero(counts)):
        count, share = int(counts[i, j]), counts[i, j] / row_totals[i]
        x, y = left + j * cell, top + i * cell
        parts.append(
            f'<g><title>true {escape(classes[i])}, predicted {escape(classes[j])}: {count}</title>'
            f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_blue(share)}"/>'
            f'<text x="{x + cell / 2:g}" y="{y + cell / 2:g}" text-anchor="middle" dominant-baseline="central" '
            f'font-size="{font - 1}" fill="{"#fff" if share > 0.5 else "#08306b"}">{count}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _blue(share: float) -> str:
    """From light (#deebf7, a few photos) to dark blue (#08306b, the whole row)."""
    light, dark = (0xDE, 0xEB, 0xF7), (0x08, 0x30, 0x6B)
    return "#" + "".join(f"{round(a + (b - a) * float(share)):02x}" for a, b in zip(light, dark))
