"""Retraining settings: Django settings of the same name win, else the environment, else these
defaults (the team's ../shared data and weights, next to the checkout)."""

import os
from pathlib import Path

from django.conf import settings

_SHARED = Path(settings.BASE_DIR).parent / "shared"


def _setting(name, default, cast=str):
    if hasattr(settings, name):
        return getattr(settings, name)
    value = os.environ.get(name)
    return cast(value) if value not in (None, "") else default


def base_data_dir() -> Path:
    """The ImageFolder the base models were trained on (its train/ split)."""
    return Path(_setting("RETRAIN_BASE_DATA_DIR", _SHARED / "data" / "butterflies50" / "train"))


def benchmark_dir() -> Path:
    """The fixed benchmark test set every version is measured on."""
    return Path(_setting("RETRAIN_BENCHMARK_DIR", _SHARED / "data" / "butterflies50" / "test"))


def weights_dir() -> Path:
    return Path(_setting("RETRAIN_WEIGHTS_DIR", _SHARED / "weights"))


def output_dir() -> Path:
    """Where retrained artifacts are written (one new directory per version)."""
    return Path(_setting("RETRAIN_OUTPUT_DIR", Path(settings.ML_ARTIFACTS_DIR) / "retrained"))


def cache_dir() -> str:
    """The backbone feature cache: shared by every retrain, so only new photos run the backbones."""
    return str(_setting("RETRAIN_CACHE_DIR", os.environ.get("ML_CACHE_DIR") or Path(settings.VAR_DIR) / "feature-cache"))


def holdout_fraction() -> float:
    return float(_setting("RETRAIN_HOLDOUT_FRACTION", 0.25, float))


def max_benchmark_drop() -> float:
    """How far (a fraction, 0.005 = half a point) benchmark top-1 may fall before a promotion is refused."""
    return float(_setting("RETRAIN_MAX_BENCHMARK_DROP", 0.005, float))


def max_class_recall_drop() -> float:
    """How far the benchmark recall of a species the labels touch may fall (0.15: 3 of 20 photos)."""
    return float(_setting("RETRAIN_MAX_CLASS_RECALL_DROP", 0.15, float))


def task_queue() -> str:
    # The classification queue by default, so the ordinary worker runs it; a dedicated worker
    # (-Q retrain, RETRAIN_TASK_QUEUE=retrain) keeps long retrains from delaying photos.
    return _setting("RETRAIN_TASK_QUEUE", settings.CLASSIFIER_TASK_QUEUE)
