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


# Review queue, labels and model quality


@dataclass
class ReviewItem:
    photo: Photo
    score: float  # higher: a human look is worth more
    reasons: list[str]
    # Every species some model put in its top-5, best first: [{"label", "probability", "models"}].
    candidates: list[dict]
    top1: float
    margin: float


# How much an answer that names no species adds to a photo's review score (disagreement adds 1.5).
REVIEW_KIND_WEIGHTS = {"unknown_species": 1.5, "uncertain": 1.2, "not_butterfly": 1.0}


def _review_score(photo: Photo) -> tuple[float, list[str], float, float]:
    predictions = list(photo.predictions.all())
    if not predictions:
        return 0.0, [], 0.0, 0.0
    labels = {p.label for p in predictions}
    top1 = min(p.probability for p in predictions)
    margins = [p.top[0]["probability"] - (p.top[1]["probability"] if len(p.top) > 1 else 0.0) for p in predictions if p.top]
    margin = min(margins) if margins else top1
    reasons, score = [], (1.0 - top1) + (1.0 - margin)
    if len(labels) > 1:
        # Models that confidently disagree: one of them is wrong, and a label settles which.
        score += 1.5
        reasons.append("models disagree")
    if photo.identification_kind in REVIEW_KIND_WEIGHTS:
        # The models' answer names no species: a person can (or can say it is none of ours).
        score += REVIEW_KIND_WEIGHTS[photo.identification_kind]
        reasons.append(f"answer: {photo.identification_kind.replace('_', ' ')}")
    if margin < 0.2:
        reasons.append(f"small margin to the runner-up ({margin:.0%})")
    if photo.label_flag:
        score += 3.0  # a second look at a label the models contradict comes first
        reasons.insert(0, f"label flagged: {photo.label_flag}")
    if getattr(photo, "suggested", None):
        from suggestions.selectors import suggestion_label_name

        score += 3.0  # the owner says the answer is wrong: as urgent as a flagged label
        reasons.insert(0, f"owner suggests: {suggestion_label_name(photo.suggested)}")
    return score, reasons, top1, margin


def _candidates(photo: Photo) -> list[dict]:
    best: dict[str, dict] = {}
    for prediction in photo.predictions.all():
        for item in prediction.top:
            entry = best.setdefault(item["label"], {"label": item["label"], "probability": 0.0, "models": []})
            entry["probability"] = max(entry["probability"], item["probability"])
            entry["models"].append(prediction.model_version.name)
    return sorted(best.values(), key=lambda c: -c["probability"])


def _review_item(photo: Photo) -> ReviewItem:
    score, reasons, top1, margin = _review_score(photo)
    return ReviewItem(photo, score, reasons, _candidates(photo), top1, margin)


def _photos_needing_review() -> QuerySet:
    """Classified photos no one has reviewed yet, those whose label is flagged, and those whose
    owner suggested a label after the last review ("Not right?": `suggested` is the newest)."""
    from suggestions.models import UserSuggestion

    reviewed = Exists(LabelCorrection.objects.filter(photo=OuterRef("pk")))
    answered = LabelCorrection.objects.filter(photo=OuterRef("photo"), created_at__gte=OuterRef("created_at"))
    open_suggestions = UserSuggestion.objects.filter(photo=OuterRef("pk")).filter(~Exists(answered)).order_by("-created_at", "-id")
    return (Photo.objects.filter(status=Photo.Status.DONE)
            .annotate(suggested=Subquery(open_suggestions.values("label")[:1]))
            .filter(~reviewed | ~Q(label_flag="") | Q(suggested__isnull=False)))


def photo_review_queue(*, limit: int = 50, pool: int = 2000, exclude_ids=()) -> list[ReviewItem]:
    """Photos ordered by how much a human look is worth: flagged labels first, then photos no one
    has reviewed, scored by model disagreement, low top-1 probability and a small margin between
    top-1 and top-2. Scores the `pool` newest candidates (the margin lives in the top-k JSON)."""
    queryset = (
        _photos_needing_review()
        .exclude(pk__in=list(exclude_ids))
        .select_related("owner")
        .prefetch_related(_predictions_prefetch())
        .order_by("-created_at", "-id")[:pool]
    )
    items = [_review_item(photo) for photo in queryset]
    items.sort(key=lambda item: (-item.score, item.photo.created_at, item.photo.pk))
    return items[:limit]


def photo_review_item(photo_id: int) -> ReviewItem | None:
    photo = Photo.objects.filter(pk=photo_id).prefetch_related(_predictions_prefetch()).first()
    return None if photo is None else _review_item(photo)


def photo_review_count() -> int:
    return _photos_needing_review().count()


@dataclass
class LabelledPhoto:
    photo_id: int
    label: str
    original: str  # storage name of the original upload
    sha256: str
    labelled_by: str
    labelled_at: object
    confirmed: bool  # the last review agreed with the label shown
    flag: str
    previous_label: str = ""  # what the photo was called before the first staff label (the prediction)


def labelled_photos(*, include_flagged: bool = True, include_not_butterfly: bool = True) -> list[LabelledPhoto]:
    """Photos staff corrected or confirmed, with who labelled them last and when."""
    queryset = Photo.objects.exclude(label="").order_by("pk")
    if not include_flagged:
        queryset = queryset.filter(label_flag="")
    if not include_not_butterfly:
        queryset = queryset.exclude(label=NOT_A_BUTTERFLY)
    first, last = {}, {}
    for correction in (LabelCorrection.objects.filter(photo__in=queryset).select_related("corrected_by")
                       .order_by("photo_id", "created_at", "id")):
        first.setdefault(correction.photo_id, correction)
        last[correction.photo_id] = correction
    rows = []
    for photo in queryset:
        correction = last.get(photo.pk)
        rows.append(LabelledPhoto(
            photo_id=photo.pk, label=photo.label, original=photo.original.name, sha256=photo.sha256,
            labelled_by=(correction.corrected_by.get_username() if correction and correction.corrected_by else ""),
            labelled_at=correction.created_at if correction else None,
            confirmed=bool(correction and correction.is_confirmation), flag=photo.label_flag,
            previous_label=first[photo.pk].old_label if photo.pk in first else "",
        ))
    return rows


def model_version_field_accuracy(model_version: ModelVersion, *, period: str = "week") -> dict:
    """Top-1 of the version's predictions on photos users uploaded and staff labelled (corrected
    or confirmed; "not a butterfly" excluded), per `period` of upload and overall. Photos whose
    labels trained this version are left out: they are not held out."""
    from django.db.models import Sum
    from django.db.models.functions import TruncDay, TruncMonth, TruncWeek

    trunc = {"day": TruncDay, "week": TruncWeek, "month": TruncMonth}[period]
    predictions = (
        Prediction.objects.filter(model_version=model_version)
        .exclude(photo__label="")
        .exclude(photo__label=NOT_A_BUTTERFLY)
        .exclude(photo_id__in=list(model_version.training_photo_ids or []))
    )
    correct = Case(When(label=F("photo__label"), then=Value(1)), default=Value(0))
    rows = (
        predictions.annotate(period=trunc("photo__created_at"))
        .values("period")
        .annotate(n=Count("id"), correct=Sum(correct))
        .order_by("period")
    )
    series = [{"period": r["period"], "n": r["n"], "correct": r["correct"], "accuracy": r["correct"] / r["n"]} for r in rows]
    n = sum(r["n"] for r in series)
    right = sum(r["correct"] for r in series)
    return {"n": n, "correct": right, "accuracy": (right / n) if n else None, "series": series}


def model_version_benchmark_report(model_version: ModelVersion) -> dict | None:
    """The version's report on the benchmark test set, from its artifact's evaluation/report.json
    (`python -m ml evaluate --report-dir` or a retrain writes it): top1, top5, per-class recall."""
    import json

    from classifier import artifacts

    try:
        directory = artifacts.artifact_dir(model_version) / "evaluation"
        report = json.loads((directory / "report.json").read_text())
    except (OSError, ValueError):  # artifacts.ArtifactUnavailable is an OSError
        return None
    report = report.get("benchmark", report)  # a retrain's report holds several photo sets
    per_class = {label: {"recall": v.get("recall"), "support": v.get("support")}
                 for label, v in (report.get("per_class") or {}).items()}
    image = directory / "confusion_matrix.png"
    return {"top1": report.get("top1"), "top5": report.get("top5"), "n": report.get("n"), "per_class": per_class,
            "confusion_matrix": image if image.is_file() else None}
