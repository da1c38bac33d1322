"""Reads for staff: the review queue, the labelled photos, and each model version's quality."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)

from classifier.models import NOT_A_BUTTERFLY, LabelCorrection, ModelVersion, Photo, Prediction
from classifier.selectors.photos import _predictions_prefetch

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
        report = json.loads((artifacts.artifact_dir(model_version) / "evaluation" / "report.json").read_text())
    except (OSError, ValueError):  # artifacts.ArtifactUnavailable is an OSError
        return None
    report = report.get("benchmark", report)  # a retrain's report holds several photo sets
    per_class = {label: {"recall": v.get("recall"), "support": v.get("support")}
                 for label, v in (report.get("per_class") or {}).items()}
    return {"top1": report.get("top1"), "top5": report.get("top5"), "n": report.get("n"), "per_class": per_class,
            "confusion_matrix": report.get("confusion_matrix") or None}  # {"classes", "counts"}, drawn as SVG
