import pytest
from django.http import Http404

from classifier import selectors
from classifier.models import NOT_A_BUTTERFLY, Photo
from tests.classifier.factories import (
    LabelCorrectionFactory,
    ModelVersionFactory,
    PhotoFactory,
    PredictionFactory,
    answer_fields,
)

pytestmark = pytest.mark.django_db


def test_photo_list_for_user_is_own_photos_newest_first(user, other_user):
    older, newer = PhotoFactory(owner=user), PhotoFactory(owner=user)
    PhotoFactory(owner=other_user)
    assert list(selectors.photo_list_for_user(user)) == [newer, older]


def test_photo_get_for_user_is_404_for_someone_elses_or_missing_photo(user, other_user):
    mine, theirs = PhotoFactory(owner=user), PhotoFactory(owner=other_user)
    assert selectors.photo_get_for_user(user, mine.pk) == mine
    for photo_id in (theirs.pk, 999999, "abc"):
        with pytest.raises(Http404):
            selectors.photo_get_for_user(user, photo_id)


def test_species_filter_uses_the_staff_label_else_the_models_answer(user, shipped_model, second_model):
    monarch = PhotoFactory(owner=user, **answer_fields("species", "monarch"))
    viceroy = PhotoFactory(owner=user, **answer_fields("species", "monarch"), label="viceroy")
    corrected = PhotoFactory(owner=user, **answer_fields("species", "monarch"), label=NOT_A_BUTTERFLY)
    unsure = PhotoFactory(owner=user, **answer_fields("uncertain", None, [("monarch", 0.5), ("viceroy", 0.4)]))
    for photo in (monarch, viceroy, corrected, unsure):
        PredictionFactory(photo=photo, model_version=shipped_model, label="monarch")
        PredictionFactory(photo=photo, model_version=second_model, label="peacock")  # not the default

    assert list(selectors.photo_list_for_user(user, species="monarch")) == [monarch]
    assert list(selectors.photo_list_for_user(user, species="viceroy")) == [viceroy]
    assert list(selectors.photo_list_for_user(user, species="peacock")) == []
    assert selectors.photo_species_for_user(user) == ["monarch", "viceroy"]


def test_disagreement_answer_kind_and_corrected_filters(shipped_model, second_model):
    agree, disagree = PhotoFactory(**answer_fields("species", "monarch")), PhotoFactory()
    unsure = PhotoFactory(**answer_fields("uncertain", None, [("julia", 0.5), ("monarch", 0.4)]))
    unknown, single = PhotoFactory(**answer_fields("unknown_species")), PhotoFactory(label=NOT_A_BUTTERFLY)
    for photo, labels, probability, is_unknown in (
        (agree, ("monarch", "monarch"), 0.9, False),
        (disagree, ("monarch", "viceroy"), 0.9, False),
        (unsure, ("julia", "julia"), 0.3, False),
        (unknown, ("julia", "julia"), 0.8, True),
    ):
        PredictionFactory(photo=photo, model_version=shipped_model, label=labels[0], probability=probability, unknown=is_unknown)
        PredictionFactory(photo=photo, model_version=second_model, label=labels[1], probability=0.95)
    PredictionFactory(photo=single, model_version=shipped_model)
    LabelCorrectionFactory(photo=agree)

    all_photos = Photo.objects.all()
    assert set(selectors.photo_filter_disagreeing(all_photos)) == {disagree}
    assert set(selectors.photo_filter_answer_kind(all_photos, "uncertain")) == {unsure}
    assert set(selectors.photo_filter_answer_kind(all_photos, "unknown_species")) == {unknown}
    assert set(selectors.photo_filter_answer_kind(all_photos, "not_butterfly")) == {single}  # a staff label
    assert set(selectors.photo_filter_answer_kind(all_photos, "species")) == {agree}
    assert set(selectors.photo_filter_corrected(all_photos, True)) == {agree}
    assert set(selectors.photo_filter_corrected(all_photos, False)) == {disagree, unsure, unknown, single}
    assert set(selectors.photo_filter_model_version(all_photos, second_model.pk)) == {agree, disagree, unsure, unknown}
    # Filters compose (the admin applies several on one queryset).
    both = selectors.photo_filter_answer_kind(selectors.photo_filter_corrected(all_photos, False), "uncertain")
    assert set(both) == {unsure}


def test_photo_results_side_by_side(user, shipped_model, second_model):
    photo = PhotoFactory(owner=user)
    PredictionFactory(photo=photo, model_version=shipped_model, label="monarch", probability=0.45)
    PredictionFactory(photo=photo, model_version=second_model, label="viceroy", probability=0.8)
    results = selectors.photo_results(selectors.photo_get_for_user(user, photo.pk))
    assert [m.model for m in results.models] == [shipped_model.name, second_model.name]  # default first
    assert results.agreement == "disagree"
    assert results.models[0].top[0] == {"label": "monarch", "probability": 0.45, "percent": 45.0}


def test_photo_results_single_model_and_none(user, shipped_model):
    empty = PhotoFactory(owner=user, status=Photo.Status.PENDING)
    assert selectors.photo_results(empty).agreement == ""
    photo = PhotoFactory(owner=user)
    PredictionFactory(photo=photo, model_version=shipped_model)
    assert selectors.photo_results(photo).agreement == "single"


def test_label_choices_are_active_classes_plus_not_a_butterfly(shipped_model):
    ModelVersionFactory(classes=["zzz only inactive"], is_active=False)
    choices = selectors.label_choices()
    assert choices[-1] == NOT_A_BUTTERFLY
    assert set(shipped_model.classes) <= set(choices) and "zzz only inactive" not in choices


def test_stale_pending_photo(user):
    from datetime import timedelta

    from django.utils import timezone

    fresh = PhotoFactory(owner=user, status=Photo.Status.PENDING)
    stale = PhotoFactory(owner=user, status=Photo.Status.PENDING, queued_at=timezone.now() - timedelta(minutes=10))
    assert not selectors.photo_is_stale(fresh) and selectors.photo_is_stale(stale)
