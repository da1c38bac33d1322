"""Staff labels: corrections and confirmations, and flags on labels the models strongly contradict."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from classifier.models import NOT_A_BUTTERFLY, LabelCorrection, Photo, Prediction

# A label is flagged for a second look when every active model that classified the photo puts
# another species at least this high and the label itself at most LABEL_FLAG_MAX_LABEL_PROBABILITY.
LABEL_FLAG_PROBABILITY = 0.8
LABEL_FLAG_MAX_LABEL_PROBABILITY = 0.05


def _label_flag_reason(photo_id: int, label: str) -> str:
    """Why the current models strongly contradict `label`, or "" when they do not."""
    if label == NOT_A_BUTTERFLY:
        return ""
    predictions = list(
        Prediction.objects.filter(photo_id=photo_id, model_version__is_active=True).select_related("model_version")
    )
    if not predictions:
        return ""
    reasons = []
    for prediction in predictions:
        label_probability = next((t["probability"] for t in prediction.top if t["label"] == label), 0.0)
        if prediction.label == label or prediction.probability < LABEL_FLAG_PROBABILITY:
            return ""
        if label_probability > LABEL_FLAG_MAX_LABEL_PROBABILITY:
            return ""
        reasons.append(
            f"{prediction.model_version.name} says {prediction.label} at {prediction.probability:.0%} "
            f"({label}: {label_probability:.0%})"
        )
    return "; ".join(reasons)[:300]


def _check_label(new_label: str) -> str:
    from classifier.selectors import label_choices

    new_label = (new_label or "").strip()
    if new_label not in label_choices():
        raise ValidationError(f'"{new_label}" is not a species of an active model nor "{NOT_A_BUTTERFLY}".')
    return new_label


def label_correct(*, photo: Photo, new_label: str, corrected_by) -> LabelCorrection | None:
    """Sets the photo's label and appends who/when/old/new; None when the label is unchanged.
    A label the current models strongly contradict is flagged for a second look."""
    from classifier.selectors import photo_annotate

    new_label = _check_label(new_label)
    with transaction.atomic():
        locked = Photo.objects.select_for_update().get(pk=photo.pk)
        old_label = photo_annotate(Photo.objects.filter(pk=photo.pk)).values_list("effective_label", flat=True)[0] or ""
        if locked.label == new_label:
            return None
        correction = LabelCorrection.objects.create(
            photo=locked, corrected_by=corrected_by, old_label=old_label, new_label=new_label,
            is_confirmation=old_label == new_label,
        )
        flag = _label_flag_reason(photo.pk, new_label)
        Photo.objects.filter(pk=photo.pk).update(label=new_label, label_flag=flag)
    photo.label, photo.label_flag = new_label, flag
    return correction


def label_confirm(*, photo: Photo, confirmed_by, label: str | None = None) -> LabelCorrection:
    """A reviewer agrees with the label shown (the default model's prediction, or the current,
    possibly flagged, label): recorded as a confirmation, which is a label too, and clears the flag."""
    from classifier.selectors import photo_annotate

    with transaction.atomic():
        locked = Photo.objects.select_for_update().get(pk=photo.pk)
        shown = photo_annotate(Photo.objects.filter(pk=photo.pk)).values_list("effective_label", flat=True)[0] or ""
        label = _check_label(label if label is not None else shown)
        correction = LabelCorrection.objects.create(
            photo=locked, corrected_by=confirmed_by, old_label=shown, new_label=label, is_confirmation=shown == label
        )
        Photo.objects.filter(pk=photo.pk).update(label=label, label_flag="")
    photo.label, photo.label_flag = label, ""
    return correction


def labels_correct_bulk(*, photos, new_label: str, corrected_by) -> int:
    """Corrects several photos in one transaction; returns how many changed."""
    with transaction.atomic():
        changed = [label_correct(photo=photo, new_label=new_label, corrected_by=corrected_by) for photo in photos]
    return sum(1 for c in changed if c is not None)


def labels_flag_contradicted() -> int:
    """Re-checks every staff label against the active models (e.g. after a new version is
    promoted): flags the ones they strongly contradict. Returns how many are flagged now.
    Labels a reviewer confirmed after the models' predictions are left alone."""
    flagged = 0
    for photo_id, label in Photo.objects.exclude(label="").filter(label_flag="").values_list("pk", "label"):
        last = LabelCorrection.objects.filter(photo_id=photo_id).order_by("-created_at", "-id").first()
        newest_prediction = Prediction.objects.filter(photo_id=photo_id).order_by("-created_at").first()
        if last and last.is_confirmation and newest_prediction and last.created_at >= newest_prediction.created_at:
            continue
        reason = _label_flag_reason(photo_id, label)
        if reason:
            flagged += Photo.objects.filter(pk=photo_id, label=label).update(label_flag=reason)
    return flagged

