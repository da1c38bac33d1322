"""Ensembles of trained models: averaged probabilities, kept only when they measurably help.

(The other kind of ensemble, concatenated features of several backbones under one head, is a
single model built by `ml.train.train` with several `BackboneSpec`s.)
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from ml import metrics


def average_probabilities(probabilities: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    stacked = np.stack(probabilities)
    weights = np.ones(len(probabilities)) if weights is None else np.asarray(weights, dtype=np.float64)
    return np.tensordot(weights / weights.sum(), stacked, axes=1)


def best_subset(val_probabilities: dict[str, np.ndarray], val_labels: np.ndarray, min_gain: float = 0.0) -> tuple[tuple[str, ...], float]:
    """The subset of models whose averaged probabilities score best on validation. A bigger
    ensemble must beat the best smaller one by more than `min_gain` to be chosen, since every
    member costs inference time."""
    names = list(val_probabilities)
    best: tuple[tuple[str, ...], float] = ((), -1.0)
    for size in range(1, len(names) + 1):
        for subset in combinations(names, size):
            score = metrics.top_k_accuracy(average_probabilities([val_probabilities[n] for n in subset]), val_labels, 1)
            if score > best[1] + (min_gain if best[0] else 0.0):
                best = (subset, score)
    return best
