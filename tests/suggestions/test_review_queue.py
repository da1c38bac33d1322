"""A suggestion raises the photo in the staff review queue, also after a review, until staff answer it."""

import pytest

from classifier import selectors
from classifier.models import ModelVersion
from suggestions import services
from tests.classifier.factories import LabelCorrectionFactory, PhotoFactory, PredictionFactory

pytestmark = pytest.mark.django_db


def _photo(owner, probability):
    photo = PhotoFactory(owner=owner)
    PredictionFactory(photo=photo, model_version=ModelVersion.objects.get(is_default=True), label="monarch",
                      probability=probability, top=[{"label": "monarch", "probability": probability},
                                                    {"label": "viceroy", "probability": round(1 - probability, 6)}])
    return photo


def test_a_suggested_photo_comes_first_with_the_reason(owner):
    unsure = _photo(owner, 0.5)  # a low, close call: high in the queue by itself
    sure = _photo(owner, 0.99)
    assert selectors.photo_review_queue()[0].photo == unsure
    services.suggestion_create(photo=sure, user=owner, label="viceroy")
    first = selectors.photo_review_queue()[0]
    assert first.photo == sure and first.reasons[0] == "owner suggests: Viceroy"


def test_a_suggestion_after_a_review_brings_the_photo_back_until_staff_answer(owner):
    photo = _photo(owner, 0.99)
    LabelCorrectionFactory(photo=photo, old_label="", new_label="monarch", is_confirmation=True)
    assert photo not in [item.photo for item in selectors.photo_review_queue()]
    services.suggestion_create(photo=photo, user=owner, label="not a butterfly")
    assert [item.photo for item in selectors.photo_review_queue()] == [photo]
    assert selectors.photo_review_count() == 1
    LabelCorrectionFactory(photo=photo, old_label="monarch", new_label="not a butterfly")
    assert selectors.photo_review_queue() == [] and selectors.photo_review_count() == 0
