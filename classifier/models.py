"""Data: photos, the model versions that classify them, their predictions, label corrections.

Models hold data and constraints only; every write goes through classifier/services/.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

NOT_A_BUTTERFLY = "not a butterfly"


def unguessable_name(prefix: str, extension: str) -> str:
    """A storage name nobody can guess or enumerate: <prefix>/<uuid4 hex>.<ext>."""
    return f"{prefix}/{uuid.uuid4().hex}.{extension}"


class ModelVersion(models.Model):
    name = models.CharField(max_length=100)
    backbone = models.CharField(max_length=200, blank=True)
    version = models.CharField(max_length=100)
    classes = models.JSONField(default=list)
    metrics = models.JSONField(default=dict, blank=True)
    unknown_threshold = models.FloatField(default=0.0)
    # Relative to settings.ML_ARTIFACTS_DIR when the artifact lives there, else absolute.
    artifact_path = models.CharField(max_length=500)
    is_active = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # 1 for a shipped or first model of this name; each retrain of it adds one.
    number = models.PositiveIntegerField(default=1)
    # sha256 over the (path, content) of every training photo (ml.data.fingerprint).
    training_data_fingerprint = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The version this one was trained to replace: where a roll back returns to.
    replaces = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replaced_by"
    )
    # Photos whose staff labels trained it: left out of its field accuracy, which must be held out.
    training_photo_ids = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-is_default", "name", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="unique_model_name_version"),
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_model_version"
            ),
        ]

    def __str__(self):
        return f"{self.name} {self.version}"


class Photo(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Classifying"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="photos")
    original = models.FileField(max_length=200)
    display = models.FileField(max_length=200, blank=True)
    thumbnail = models.FileField(max_length=200, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    image_format = models.CharField(max_length=10)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    failure_reason = models.TextField(blank=True)
    # The label staff set; blank until someone corrects it (then LabelCorrection rows say who/when).
    label = models.CharField(max_length=200, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # When the photo was last queued for classification (upload or retry).
    queued_at = models.DateTimeField(default=timezone.now)
    classified_at = models.DateTimeField(null=True, blank=True)
    # A worker classifying this photo in a batch (classifier/services/, photos_classify_batch):
    # the claimant (its task id) and when the claim lapses, so a dead worker's photos are reclaimed.
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    claim_expires = models.DateTimeField(null=True, blank=True)
    # Why the current label deserves a second look (e.g. the models strongly say otherwise);
    # blank when it does not. Flagged labels are left out of retraining until confirmed.
    label_flag = models.CharField(max_length=300, blank=True, default="")
    # The models' one answer (ml.identify.Identification.to_dict(): kind, label, candidates,
    # scores), computed from the active models' predictions and the open-set signals; its kind and
    # label are copied out for filtering. All blank until the photo is identified.
    identification = models.JSONField(null=True, blank=True)
    identification_kind = models.CharField(max_length=20, blank=True, default="", db_index=True)
    identification_label = models.CharField(max_length=200, blank=True, default="", db_index=True)
    # What the open-set model said about the photo (ml.identify.Identifier.signals), kept so the
    # answer can be recomputed from new predictions without running it again.
    openset_signals = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="photo_owner_created")]

    def __str__(self):
        return f"Photo {self.pk}"


class Prediction(models.Model):
    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    # [{"label": str, "probability": float}, ...], best first.
    top = models.JSONField(default=list)
    # Top-1, denormalised so selectors can filter and compare in SQL.
    label = models.CharField(max_length=200, db_index=True)
    probability = models.FloatField()
    unknown = models.BooleanField(default=False)
    latency_ms = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-model_version__is_default", "model_version__name", "model_version_id"]
        constraints = [
            models.UniqueConstraint(fields=["photo", "model_version"], name="unique_prediction_per_model_version")
        ]

    def __str__(self):
        return f"{self.model_version}: {self.label} ({self.probability:.2f})"


class LabelCorrection(models.Model):
    """Append-only history of label changes: rows are created, never edited or deleted."""

    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="corrections")
    corrected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="label_corrections"
    )
    old_label = models.CharField(max_length=200, blank=True)
    new_label = models.CharField(max_length=200)
    # A reviewer agreed with the label shown (the prediction, or a flagged label): a label too.
    is_confirmation = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.old_label or '-'} -> {self.new_label}"
