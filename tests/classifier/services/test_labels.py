import pytest
from django.core.exceptions import ValidationError

from classifier import services
from classifier.models import NOT_A_BUTTERFLY, LabelCorrection, ModelVersion
from tests.classifier.factories import PhotoFactory, PredictionFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_label_correct_keeps_who_when_old_and_new(shipped_model):
    staff = UserFactory(is_staff=True)
    photo = PhotoFactory()
    PredictionFactory(photo=photo, model_version=shipped_model, label="monarch")

    first = services.label_correct(photo=photo, new_label="viceroy", corrected_by=staff)
    second = services.label_correct(photo=photo, new_label=NOT_A_BUTTERFLY, corrected_by=staff)

    photo.refresh_from_db()
    assert photo.label == NOT_A_BUTTERFLY
    assert (first.old_label, first.new_label, first.corrected_by) == ("monarch", "viceroy", staff)
    assert (second.old_label, second.new_label) == ("viceroy", NOT_A_BUTTERFLY)
    assert first.created_at <= second.created_at
    assert LabelCorrection.objects.filter(photo=photo).count() == 2


def test_same_label_again_records_nothing(shipped_model):
    staff = UserFactory(is_staff=True)
    photo = PhotoFactory()
    services.label_correct(photo=photo, new_label="monarch", corrected_by=staff)
    assert services.label_correct(photo=photo, new_label="monarch", corrected_by=staff) is None
    assert LabelCorrection.objects.count() == 1


def test_label_must_be_a_class_of_an_active_model(shipped_model, second_model):
    staff = UserFactory(is_staff=True)
    photo = PhotoFactory()
    with pytest.raises(ValidationError):
        services.label_correct(photo=photo, new_label="dragon", corrected_by=staff)
    ModelVersion.objects.exclude(pk=second_model.pk).update(is_active=False)
    with pytest.raises(ValidationError):
        services.label_correct(photo=photo, new_label="adonis", corrected_by=staff)  # only in the inactive model
    assert services.label_correct(photo=photo, new_label="peacock", corrected_by=staff).new_label == "peacock"
    photo.refresh_from_db()
    assert photo.label == "peacock"


def test_bulk_correction_counts_changes_and_is_atomic(shipped_model):
    staff = UserFactory(is_staff=True)
    photos = [PhotoFactory() for _ in range(3)]
    services.label_correct(photo=photos[0], new_label="julia", corrected_by=staff)
    assert services.labels_correct_bulk(photos=photos, new_label="julia", corrected_by=staff) == 2
    with pytest.raises(ValidationError):
        services.labels_correct_bulk(photos=photos, new_label="no such species", corrected_by=staff)
    assert LabelCorrection.objects.count() == 3
