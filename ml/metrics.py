"""Classification metrics from probabilities, numpy only: the one implementation that evaluation,
retraining, training, ensembles and the scripts use.

True labels are indices into the model's classes; `label_indices` maps label names to them, with
-1 for a species the model does not know. A -1 label is never predicted, so it counts as a miss.
Ranking breaks ties towards the lower class index, as `argmax` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNKNOWN = -1


def label_indices(names: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """The index of each label name in `classes`; UNKNOWN (-1) for a name the model does not know."""
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index.get(name, UNKNOWN) for name in names], dtype=np.int64)


def ranked(probabilities: np.ndarray, k: int) -> np.ndarray:
    """The indices of each row's k most probable classes, most probable first."""
    return np.argsort(-np.asarray(probabilities), axis=1, kind="stable")[:, :k]


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """The fraction of rows whose true label is among their k most probable classes; None when
    there are no rows."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return None
    hits = (ranked(probabilities, k) == labels[:, None]).any(axis=1)
    return float(hits.mean())


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[true, predicted] over `n_classes` classes; rows with an UNKNOWN label are left out."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    known = labels != UNKNOWN
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (labels[known], predicted[known]), 1)
    return counts


def per_class(labels: Sequence[str], predicted: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support of each true label name (0 where undefined), from the
    top-1 predicted name of each row. Precision counts every row predicted as the species."""
    labels, predicted = np.asarray(labels, dtype=object), np.asarray(predicted, dtype=object)
    result = {}
    for name in sorted(set(labels.tolist())):
        true, chosen = labels == name, predicted == name
        hits = int(np.sum(true & chosen))
        support, n_chosen = int(true.sum()), int(chosen.sum())
        precision = hits / n_chosen if n_chosen else 0.0
        recall = hits / support
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                        "support": support}
    return result


def report(probabilities: np.ndarray, label_names: Sequence[str], classes: Sequence[str]) -> dict:
    """n, top1, top5 and per_class (keyed by label name, species the model does not know included)
    of one model's probabilities over `classes` for photos whose true labels are `label_names`."""
    label_names = list(label_names)
    if not label_names:
        return {"n": 0, "top1": None, "top5": None, "per_class": {}}
    probabilities = np.asarray(probabilities)
    labels = label_indices(label_names, classes)
    predicted = [classes[i] for i in ranked(probabilities, 1)[:, 0]]
    return {
        "n": len(label_names),
        "top1": top_k_accuracy(probabilities, labels, 1),
        "top5": top_k_accuracy(probabilities, labels, 5),
        "per_class": per_class(label_names, predicted),
    }
