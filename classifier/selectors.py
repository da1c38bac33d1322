"""Reads. Views, the API, the admin and tasks query through these functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, NullIf
from django.http import Http404
from django.utils import timezone

from classifier.models import NOT_A_BUTTERFLY, LabelCorrection, ModelVersion, Photo, Prediction

# A photo still "classifying" after this long probably lost its task (no worker running):
# the page says so and offers Retry instead of spinning forever.
STALE_PENDING_AFTER = timedelta(minutes=5)


# Model versions


def model_version_list_active() -> list[ModelVersion]:
    return list(ModelVersion.objects.filter(is_active=True).order_by("-is_default", "name", "id"))


def model_version_get_default() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_default=True).first()


def label_choices() -> list[str]:
    """Labels staff may give a photo: every class of an active model, plus 'not a butterfly'."""
    labels = set()
    for classes in ModelVersion.objects.filter(is_active=True).values_list("classes", flat=True):
        labels.update(classes or [])
    return sorted(labels) + [NOT_A_BUTTERFLY]


# Photos


def _predictions_prefetch() -> Prefetch:
    return Prefetch(
        "predictions",
        queryset=Prediction.objects.select_related("model_version").order_by(
            "-model_version__is_default", "model_version__name", "model_version_id"
        ),
    )


def photo_annotate(queryset: QuerySet) -> QuerySet:
    """Adds predicted_label (default model's top-1), effective_label (correction, else predicted),
    n_labels (distinct top-1 labels across models), unsure (a model is below the threshold or
    says unknown) and is_corrected."""
    default_prediction = Prediction.objects.filter(photo=OuterRef("pk"), model_version__is_default=True)
    any_prediction = Prediction.objects.filter(photo=OuterRef("pk")).order_by(
        "-model_version__is_default", "model_version_id"
    )
    unsure = Prediction.objects.filter(photo=OuterRef("pk")).filter(
        Q(probability__lt=settings.ML_LOW_CONFIDENCE) | Q(unknown=True)
    )
    return queryset.annotate(
        predicted_label=Coalesce(
            Subquery(default_prediction.values("label")[:1]),
            Subquery(any_prediction.values("label")[:1]),
            output_field=CharField(),
        ),
        n_labels=Count("predictions__label", distinct=True),
        unsure=Exists(unsure),
        is_corrected=Exists(LabelCorrection.objects.filter(photo=OuterRef("pk"))),
    ).annotate(effective_label=Coalesce(NullIf(F("label"), Value("")), F("predicted_label"), output_field=CharField()))


def photo_filter_disagreeing(queryset: QuerySet) -> QuerySet:
    return photo_annotate(queryset).filter(n_labels__gt=1)


def photo_filter_low_confidence(queryset: QuerySet) -> QuerySet:
    return photo_annotate(queryset).filter(unsure=True)


def photo_filter_corrected(queryset: QuerySet, corrected: bool) -> QuerySet:
    return photo_annotate(queryset).filter(is_corrected=corrected)


def photo_filter_species(queryset: QuerySet, species: str) -> QuerySet:
    return photo_annotate(queryset).filter(effective_label=species)


def photo_filter_model_version(queryset: QuerySet, model_version_id: int) -> QuerySet:
    return queryset.filter(predictions__model_version_id=model_version_id).distinct()


def photo_list_for_user(user, *, species: str | None = None) -> QuerySet:
    """The user's own photos, newest first, with their predictions prefetched."""
    queryset = photo_annotate(Photo.objects.filter(owner=user))
    if species:
        queryset = queryset.filter(effective_label=species)
    return queryset.prefetch_related(_predictions_prefetch()).order_by("-created_at", "-id")


def photo_species_for_user(user) -> list[str]:
    labels = photo_annotate(Photo.objects.filter(owner=user)).values_list("effective_label", flat=True)
    return sorted({label for label in labels if label})


def photo_get_for_user(user, photo_id) -> Photo:
    """One of the user's photos; 404 for anyone else's id, exactly as for an id that does not exist."""
    try:
        return photo_annotate(Photo.objects.filter(owner=user)).prefetch_related(_predictions_prefetch()).get(pk=photo_id)
    except (Photo.DoesNotExist, ValueError, TypeError):
        raise Http404("No such photo.") from None


def photo_get_for_staff(photo_id) -> Photo:
    try:
        return Photo.objects.get(pk=photo_id)
    except (Photo.DoesNotExist, ValueError, TypeError):
        raise Http404("No such photo.") from None


def photo_is_stale(photo: Photo) -> bool:
    return photo.status == Photo.Status.PENDING and timezone.now() - photo.queued_at > STALE_PENDING_AFTER


# Results, as pages and the API show them


@dataclass
class ModelResult:
    model: str
    version: str
    backbone: str
    is_default: bool
    top: list[dict]
    label: str
    probability: float
    unknown: bool
    latency_ms: float
    unsure: bool


@dataclass
class PhotoResults:
    models: list[ModelResult] = field(default_factory=list)
    # "agree" / "disagree" across models' top-1, "single" with one model, "" with none.
    agreement: str = ""
    unsure: bool = False
    best_label: str = ""
    best_probability: float = 0.0


def photo_results(photo: Photo) -> PhotoResults:
    """Per-model top-k side by side, whether the models agree, whether the result is unsure."""
    results = PhotoResults()
    for prediction in photo.predictions.all():
        version = prediction.model_version
        unsure = prediction.unknown or prediction.probability < settings.ML_LOW_CONFIDENCE
        results.models.append(
            ModelResult(
                model=version.name,
                version=version.version,
                backbone=version.backbone,
                is_default=version.is_default,
                top=[{"label": t["label"], "probability": t["probability"], "percent": round(100 * t["probability"], 1)} for t in prediction.top],
                label=prediction.label,
                probability=prediction.probability,
                unknown=prediction.unknown,
                latency_ms=prediction.latency_ms,
                unsure=unsure,
            )
        )
    if results.models:
        labels = {m.label for m in results.models}
        results.agreement = "single" if len(results.models) == 1 else ("agree" if len(labels) == 1 else "disagree")
        results.unsure = any(m.unsure for m in results.models)
        best = max(results.models, key=lambda m: m.probability)
        results.best_label, results.best_probability = best.label, best.probability
    return results


def photo_corrections(photo: Photo) -> QuerySet:
    return photo.corrections.select_related("corrected_by").order_by("-created_at", "-id")
