"""Model versions: registering artifacts (shipped, retrained, published to storage), the default,
activation, promotion and roll back."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from butterflysite import artifact_store
from classifier import artifacts
from classifier.models import ModelVersion

logger = logging.getLogger(__name__)


def model_version_register(*, artifact_dir, active: bool = True, default: bool = False, using: str = "default") -> ModelVersion:
    return _model_version_register(artifact_dir=artifact_dir, active=active, default=default, using=using)[0]


def _model_version_register(*, artifact_dir, active, default, using) -> tuple[ModelVersion, bool]:
    """Registers (or finds) the ModelVersion of an artifact directory; idempotent.

    The version is metadata's "version", else its "created" timestamp, so retraining into the
    same directory makes a new version and retires the old one.
    """
    try:
        directory = artifacts.local_dir(artifact_dir)
    except artifacts.ArtifactUnavailable as error:
        raise ValidationError(str(error)) from None
    # A model published to object storage keeps its "storage:<prefix>/<name>" reference.
    location = str(artifact_dir) if artifact_store.is_stored(str(artifact_dir)) else artifacts.artifact_location(directory)
    data = artifacts.read_metadata(directory)
    name = str(data.get("name") or directory.name)
    version = str(data.get("version") or data.get("created") or "1")
    with transaction.atomic(using=using):
        model_version, created = ModelVersion.objects.using(using).get_or_create(
            name=name,
            version=version,
            defaults={
                "backbone": str(data.get("backbone", "")),
                "classes": list(data["classes"]),
                "metrics": data.get("metrics") or {},
                "unknown_threshold": float(data.get("unknown_threshold") or 0.0),
                "artifact_path": location,
                "is_active": active,
                "training_data_fingerprint": str(data.get("training_data_fingerprint", ""))[:100],
            },
        )
        # The directory now holds this version: older versions registered from it are retired.
        ModelVersion.objects.using(using).filter(artifact_path=location).exclude(pk=model_version.pk).update(
            is_active=False, is_default=False
        )
        if default:
            model_version_make_default(model_version=model_version, using=using)
    return model_version, created


def model_version_make_default(*, model_version: ModelVersion, using: str = "default") -> ModelVersion:
    with transaction.atomic(using=using):
        ModelVersion.objects.using(using).filter(is_default=True).exclude(pk=model_version.pk).update(is_default=False)
        ModelVersion.objects.using(using).filter(pk=model_version.pk).update(is_default=True, is_active=True)
    model_version.is_default, model_version.is_active = True, True
    return model_version


def model_version_register_trained(*, artifact_dir, number: int, created_by=None, replaces: ModelVersion | None = None,
                                   training_photo_ids=()) -> ModelVersion:
    """Registers a retrained artifact, inactive until promoted, with who made it, from which
    version, and which staff-labelled photos trained it."""
    model_version = model_version_register(artifact_dir=artifact_dir, active=False)
    ModelVersion.objects.filter(pk=model_version.pk).update(
        number=number, created_by=created_by, replaces=replaces, training_photo_ids=sorted(set(training_photo_ids))
    )
    model_version.refresh_from_db()
    return model_version


def model_version_next_number(*, name: str) -> int:
    return (ModelVersion.objects.filter(name=name).aggregate(n=Max("number"))["n"] or 0) + 1


def model_version_promote(*, model_version: ModelVersion, replaces: ModelVersion | None = None) -> ModelVersion:
    """Makes the version the active default; the version it replaces stops classifying (workers
    read the active set on every task, so no restart is needed)."""
    with transaction.atomic():
        model_version_make_default(model_version=model_version)
        if replaces is not None and replaces.pk != model_version.pk:
            model_version_set_active(model_version=replaces, active=False)
    return model_version


def model_version_roll_back(*, model_version: ModelVersion) -> ModelVersion:
    """Returns to the version this one replaced: that one becomes the active default again and
    this one is deactivated. Returns the version now in use."""
    previous = model_version.replaces
    if previous is None:
        raise ValidationError(f"{model_version} replaced no earlier version; there is nothing to roll back to.")
    return model_version_promote(model_version=previous, replaces=model_version)


def model_version_set_active(*, model_version: ModelVersion, active: bool) -> ModelVersion:
    updates = {"is_active": active}
    if not active:
        updates["is_default"] = False
    ModelVersion.objects.filter(pk=model_version.pk).update(**updates)
    for key, value in updates.items():
        setattr(model_version, key, value)
    return model_version


def model_versions_register_shipped(*, using: str = "default") -> list[ModelVersion]:
    """Registers every artifact artifacts/manifest.json lists, active, with its default flagged."""
    root = Path(settings.ML_ARTIFACTS_DIR)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        logger.warning("no %s: no shipped model registered", manifest_path)
        return []
    manifest = json.loads(manifest_path.read_text())
    default = manifest.get("default")
    registered = []
    for name in manifest.get("artifacts", []):
        try:
            version, created = _model_version_register(artifact_dir=root / name, active=True, default=False, using=using)
        except ValidationError as error:
            logger.warning("shipped artifact %s not registered: %s", name, error.message)
            continue
        # A newly shipped default takes over; an existing one is left as staff set it.
        has_default = ModelVersion.objects.using(using).filter(is_default=True).exists()
        if name == default and (created or not has_default):
            model_version_make_default(model_version=version, using=using)
        registered.append(version)
    return registered
