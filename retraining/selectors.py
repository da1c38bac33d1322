"""Reads for the retraining loop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.http import Http404
from django.utils import timezone

from retraining.models import RetrainRun

# Below this progress the time left is not estimated: the first steps (copying photos, loading
# TensorFlow) say little about how long the rest takes.
ESTIMATE_FROM_PROGRESS = 0.1


def retrain_run_list():
    return RetrainRun.objects.select_related("baseline", "candidate", "requested_by")


def retrain_run_active() -> RetrainRun | None:
    return RetrainRun.objects.filter(status__in=(RetrainRun.Status.QUEUED, RetrainRun.Status.RUNNING)).first()


@dataclass(frozen=True)
class RunTiming:
    elapsed_s: float | None  # since it started (to its end, once finished); None while queued
    remaining_s: float | None  # estimated time left while running; None until progress says enough
    waiting_s: float | None  # how long a queued run has waited for a trainer
    heartbeat_age_s: float | None  # how long ago the running run's worker last reported


def retrain_run_timing(run: RetrainRun, now: datetime | None = None) -> RunTiming:
    """Elapsed time, and the time left estimated from the progress so far: elapsed × (1 − p) / p,
    as if the rest went at the average pace until now."""
    now = now or timezone.now()
    running = run.status == RetrainRun.Status.RUNNING
    elapsed = remaining = None
    if run.started_at is not None:
        elapsed = max(((now if running or run.finished_at is None else run.finished_at) - run.started_at).total_seconds(), 0.0)
        if running and run.progress >= ESTIMATE_FROM_PROGRESS:
            remaining = elapsed * (1 - run.progress) / run.progress
    waiting = (now - run.created_at).total_seconds() if run.status == RetrainRun.Status.QUEUED else None
    heartbeat = (now - run.heartbeat_at).total_seconds() if running and run.heartbeat_at else None
    return RunTiming(elapsed, remaining, waiting, heartbeat)


def retrain_run_confusion_matrix_svg(run: RetrainRun, which: str) -> str:
    """The benchmark confusion matrix of the run's new version ("candidate") or of the version it
    was compared with ("baseline"), measured in this run, drawn as SVG from the report stored
    with the run (the database: no file of the trainer's disk, no matplotlib)."""
    from ml.evaluate import confusion_matrix_svg

    report = {"candidate": run.candidate_report, "baseline": run.baseline_report}.get(which) or {}
    benchmark = report.get("benchmark") or {}
    matrix = benchmark.get("confusion_matrix")
    if not matrix:
        raise Http404("No such report.")
    version = run.candidate if which == "candidate" else run.baseline
    title = f"{version or which}: top-1 {benchmark['top1']:.2%} on {benchmark['n']} benchmark photos"
    return confusion_matrix_svg(matrix["counts"], matrix["classes"], title=title)


def promotion_rule_text() -> str:
    from ml.retrain import promotion_rule  # no TensorFlow: the module imports it only to train

    return promotion_rule(settings.RETRAIN_MAX_BENCHMARK_DROP, settings.RETRAIN_MAX_CLASS_RECALL_DROP)
