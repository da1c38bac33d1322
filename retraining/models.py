"""Retraining runs: a new model version trained from the base data plus staff labels, evaluated
against the active version on the same held-out photos, promoted only when it is not worse.

Models hold data and constraints only; every write goes through retraining/services.py.
"""

from django.conf import settings
from django.db import models

from classifier.models import ModelVersion


class RetrainRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Decision(models.TextChoices):
        UNDECIDED = "", "—"
        PROMOTED = "promoted", "Promoted"
        REJECTED = "rejected", "Not promoted"
        OVERRIDDEN = "overridden", "Promoted by staff override"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # 0..1 and a short description of the step, updated while it runs (the admin page polls).
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written every RETRAIN_HEARTBEAT_SECONDS by the process running the run: a running run whose
    # heartbeat is older than RETRAIN_HEARTBEAT_TIMEOUT lost its worker (retrain_runs_fail_lost).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The Celery task's id, so a cancel can revoke it.
    task_id = models.CharField(max_length=64, blank=True)
    # Staff asked to stop: a queued run is cancelled at once, a running one stops at its next check.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # What was asked: include_flagged, holdout_fraction, promote (False: evaluate only), ...
    options = models.JSONField(default=dict, blank=True)
    baseline = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="retrain_runs_as_baseline"
    )
    candidate = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="retrain_runs_as_candidate"
    )
    # Staff-labelled photos used: trained on, and held out for the comparison.
    training_photo_ids = models.JSONField(default=list, blank=True)
    holdout_photo_ids = models.JSONField(default=list, blank=True)
    # Both models measured on the same photos: {"benchmark": {...}, "holdout": {...}, "combined": {...}}.
    candidate_report = models.JSONField(default=dict, blank=True)
    baseline_report = models.JSONField(default=dict, blank=True)
    # The new version's artifact folder: its reports and confusion matrices are in evaluation/ (the
    # new version) and baseline_evaluation/ (the version it was compared with).
    report_dir = models.CharField(max_length=500, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    decision = models.CharField(max_length=12, choices=Decision.choices, blank=True, default="")
    decision_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one run queued or running, whatever the timing of two requests: they would
            # take the same version number and race for the promotion.
            models.UniqueConstraint(
                models.Value(True), condition=models.Q(status__in=["queued", "running"]), name="retrain_one_active_run"
            ),
        ]

    def __str__(self):
        return f"Retrain run {self.pk}"
