"""Reads of photos: model versions, the photo lists and filters, the per-model results and the
one answer a photo shows (photo_answer)."""

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
    """Adds predicted_label (default model's top-1), answer_label (the species of the answer shown,
    see photo_answer: the staff label, else the models' answer; blank for every other kind),
    effective_label (staff label, else the answer's species, else the default model's top-1: what
    a reviewer confirms), n_labels (distinct top-1 labels across models) and is_corrected."""
    default_prediction = Prediction.objects.filter(photo=OuterRef("pk"), model_version__is_default=True)
    any_prediction = Prediction.objects.filter(photo=OuterRef("pk")).order_by(
        "-model_version__is_default", "model_version_id"
    )
    return queryset.annotate(
        predicted_label=Coalesce(
            Subquery(default_prediction.values("label")[:1]),
            Subquery(any_prediction.values("label")[:1]),
            output_field=CharField(),
        ),
        answer_label=Case(
            When(label=NOT_A_BUTTERFLY, then=Value("")),
            When(~Q(label=""), then=F("label")),
            default=F("identification_label"),
            output_field=CharField(),
        ),
        n_labels=Count("predictions__label", distinct=True),
        is_corrected=Exists(LabelCorrection.objects.filter(photo=OuterRef("pk"))),
    ).annotate(effective_label=Coalesce(NullIf(F("label"), Value("")), NullIf(F("identification_label"), Value("")),
                                        F("predicted_label"), output_field=CharField()))


def photo_filter_disagreeing(queryset: QuerySet) -> QuerySet:
    return photo_annotate(queryset).filter(n_labels__gt=1)


def photo_filter_answer_kind(queryset: QuerySet, kind: str) -> QuerySet:
    """Photos whose answer (photo_answer: a staff label overrides the models') is of this kind."""
    staff_kind = Case(When(label="", then=Value("")), When(label=NOT_A_BUTTERFLY, then=Value("not_butterfly")),
                      default=Value("species"), output_field=CharField())
    return queryset.annotate(answer_kind=Coalesce(NullIf(staff_kind, Value("")), F("identification_kind"),
                                                  output_field=CharField())).filter(answer_kind=kind)


def photo_filter_corrected(queryset: QuerySet, corrected: bool) -> QuerySet:
    return photo_annotate(queryset).filter(is_corrected=corrected)


def photo_filter_species(queryset: QuerySet, species: str) -> QuerySet:
    return photo_annotate(queryset).filter(answer_label=species)


def photo_filter_model_version(queryset: QuerySet, model_version_id: int) -> QuerySet:
    return queryset.filter(predictions__model_version_id=model_version_id).distinct()


def photo_list_for_user(user, *, species: str | None = None) -> QuerySet:
    """The user's own photos, newest first, with their predictions prefetched."""
    queryset = photo_annotate(Photo.objects.filter(owner=user))
    if species:
        queryset = queryset.filter(answer_label=species)
    return queryset.prefetch_related(_predictions_prefetch()).order_by("-created_at", "-id")


def photo_species_for_user(user) -> list[str]:
    labels = photo_annotate(Photo.objects.filter(owner=user)).values_list("answer_label", flat=True)
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
    # Pending longer than the sweep's age: its task was probably lost (no worker running), so the
    # page says so and offers Retry instead of spinning forever.
    age = timedelta(seconds=settings.CLASSIFIER_SWEEP_PENDING_SECONDS)
    return photo.status == Photo.Status.PENDING and timezone.now() - photo.queued_at > age


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


@dataclass
class PhotoResults:
    models: list[ModelResult] = field(default_factory=list)
    # "agree" / "disagree" across models' top-1, "single" with one model, "" with none.
    agreement: str = ""


def photo_results(photo: Photo) -> PhotoResults:
    """Per-model top-k side by side and whether the models agree (the detail under the answer)."""
    results = PhotoResults()
    for prediction in photo.predictions.all():
        version = prediction.model_version
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
            )
        )
    if results.models:
        labels = {m.label for m in results.models}
        results.agreement = "single" if len(results.models) == 1 else ("agree" if len(labels) == 1 else "disagree")
    return results


# The answer: one per photo


@dataclass
class Answer:
    kind: str  # species | uncertain | unknown_species | not_butterfly (ml.identify.KINDS)
    label: str | None  # the species' class key (kind "species" only)
    name: str | None
    scientific_name: str | None
    # [{"label", "probability", "name"}]: the look-alikes of an uncertain answer, the runners-up
    # of a species, the nearest known species otherwise; none for a staff label.
    candidates: list[dict]
    source: str  # "models" or "staff"

    def as_api(self) -> dict:
        """The API's "identification" (the CLI's line for the same file and models, plus source)."""
        return {"kind": self.kind, "label": self.label, "name": self.name, "scientific_name": self.scientific_name,
                "candidates": [{"label": c["label"], "probability": c["probability"]} for c in self.candidates],
                "source": self.source}

    @property
    def heading(self) -> str:
        if self.kind == "species":
            return self.name or ""
        if self.kind == "uncertain":
            return " or ".join(c["name"] for c in self.candidates)
        if self.kind == "unknown_species":
            return "A butterfly or moth this site does not know"
        return "Not a butterfly"


def _species_names(key: str) -> tuple[str, str | None]:
    from ml import species

    try:
        found = species.get(key)
    except KeyError:  # a class staff or a retrained model added after the catalogue
        return species.name(key), None
    return found.name, found.scientific_name


def photo_answer(photo: Photo) -> Answer | None:
    """What pages, the API and the admin show as the photo's identification: a staff label
    overrides the models' answer (source "staff"; the models' answer stays stored beside it),
    else the stored models' answer (source "models"); None while there is neither."""
    if photo.label == NOT_A_BUTTERFLY:
        return Answer("not_butterfly", None, None, None, [], "staff")
    if photo.label:
        return Answer("species", photo.label, *_species_names(photo.label), [], "staff")
    if not photo.identification:
        return None
    from ml.identify import Identification

    identification = Identification.from_dict(photo.identification)
    candidates = [{"label": c.label, "probability": c.probability, "name": _species_names(c.label)[0]}
                  for c in identification.candidates]
    name, scientific_name = _species_names(identification.label) if identification.label else (None, None)
    return Answer(identification.kind, identification.label, name, scientific_name, candidates, "models")


def photo_corrections(photo: Photo) -> QuerySet:
    return photo.corrections.select_related("corrected_by").order_by("-created_at", "-id")
