"""Reads for the retraining loop."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import Http404

from retraining.models import RetrainRun


def retrain_run_list():
    return RetrainRun.objects.select_related("baseline", "candidate", "requested_by")


def retrain_run_active() -> RetrainRun | None:
    return RetrainRun.objects.filter(status__in=(RetrainRun.Status.QUEUED, RetrainRun.Status.RUNNING)).first()


def retrain_run_report_image(run: RetrainRun, which: str) -> Path:
    """The benchmark confusion matrix of the run's new version ("candidate") or of the version it
    was compared with ("baseline"), measured in this run."""
    folder = {"candidate": "evaluation", "baseline": "baseline_evaluation"}.get(which)
    if not folder or not run.report_dir:
        raise Http404("No such report.")
    path = Path(run.report_dir) / folder / "confusion_matrix.png"
    if not path.is_file():
        raise Http404("No such report.")
    return path


def promotion_rule_text() -> str:
    from ml.retrain import promotion_rule  # no TensorFlow: the module imports it only to train

    return promotion_rule(settings.RETRAIN_MAX_BENCHMARK_DROP, settings.RETRAIN_MAX_CLASS_RECALL_DROP)
