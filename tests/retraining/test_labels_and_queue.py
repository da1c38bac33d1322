"""Confirmations, flags for a second look, the review queue page."""

import pytest
from django.urls import reverse

from classifier import selectors, services
from classifier.models import NOT_A_BUTTERFLY, LabelCorrection, Photo
from tests.classifier.factories import ModelVersionFactory, PhotoFactory, PredictionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(db):
    from classifier.models import ModelVersion

    ModelVersion.objects.update(is_active=False, is_default=False)
    return ModelVersionFactory(name="only", is_default=True)


def predicted(photo, model, label, probability, runner_up="viceroy", runner_up_probability=None):
    rest = round(1 - probability, 6) if runner_up_probability is None else runner_up_probability
    return PredictionFactory(photo=photo, model_version=model, label=label, probability=probability,
                             top=[{"label": label, "probability": probability}, {"label": runner_up, "probability": rest}])


def test_a_correction_the_models_strongly_contradict_is_flagged_and_a_confirmation_clears_it(model, staff):
    photo = PhotoFactory()
    predicted(photo, model, "monarch", 0.95, runner_up="viceroy", runner_up_probability=0.03)
    services.label_correct(photo=photo, new_label="peacock", corrected_by=staff)
    photo.refresh_from_db()
    assert "only says monarch at 95%" in photo.label_flag
    confirmation = services.label_confirm(photo=photo, confirmed_by=staff)
    photo.refresh_from_db()
    assert photo.label == "peacock" and photo.label_flag == "" and confirmation.is_confirmation
    # A correction the models only half doubt is not flagged.
    other = PhotoFactory()
    predicted(other, model, "monarch", 0.6, runner_up="viceroy", runner_up_probability=0.3)
    services.label_correct(photo=other, new_label="viceroy", corrected_by=staff)
    other.refresh_from_db()
    assert other.label_flag == ""


def test_confirming_the_prediction_is_a_label(model, staff):
    photo = PhotoFactory()
    predicted(photo, model, "monarch", 0.7)
    correction = services.label_confirm(photo=photo, confirmed_by=staff)
    photo.refresh_from_db()
    assert photo.label == "monarch" and correction.is_confirmation and correction.old_label == "monarch"
    assert [row.photo_id for row in selectors.labelled_photos()] == [photo.pk]


def test_queue_order_flagged_then_disagreement_then_low_confidence(model, staff):
    second = ModelVersionFactory(name="second")
    confident, unsure, disagreeing, reviewed, flagged = (PhotoFactory() for _ in range(5))
    predicted(confident, model, "monarch", 0.97, runner_up_probability=0.01)
    predicted(unsure, model, "monarch", 0.45, runner_up_probability=0.40)
    predicted(disagreeing, model, "monarch", 0.8, runner_up_probability=0.1)
    predicted(disagreeing, second, "viceroy", 0.8, runner_up="monarch", runner_up_probability=0.1)
    predicted(reviewed, model, "monarch", 0.3, runner_up_probability=0.29)
    services.label_confirm(photo=reviewed, confirmed_by=staff)
    predicted(flagged, model, "monarch", 0.96, runner_up_probability=0.02)
    services.label_correct(photo=flagged, new_label="adonis", corrected_by=staff)

    order = [item.photo.pk for item in selectors.photo_review_queue()]
    assert order == [flagged.pk, disagreeing.pk, unsure.pk, confident.pk]  # reviewed is done
    item = selectors.photo_review_queue()[1]
    assert "models disagree" in item.reasons and {c["label"] for c in item.candidates} == {"monarch", "viceroy"}


def test_review_page_confirm_correct_skip_and_bad_input(model, staff_client, staff):
    first, second = PhotoFactory(), PhotoFactory()
    predicted(first, model, "monarch", 0.40, runner_up_probability=0.35)
    predicted(second, model, "monarch", 0.90, runner_up_probability=0.05)
    url = reverse("admin:classifier_photo_review")

    page = staff_client.get(url)
    assert page.status_code == 200
    assert f'data-photo-id="{first.pk}"'.encode() in page.content
    assert b'data-key="1" data-label="monarch"' in page.content and b'data-key="2" data-label="viceroy"' in page.content
    assert reverse("admin:classifier_photo_image", args=[first.pk, "display"]).encode() in page.content

    assert staff_client.post(url, {"photo_id": first.pk, "label": "viceroy"}).status_code == 302  # correct
    first.refresh_from_db()
    assert first.label == "viceroy" and not LabelCorrection.objects.get(photo=first).is_confirmation

    staff_client.post(url, {"photo_id": second.pk, "skip": "1"})
    assert b"Nothing left to review" in staff_client.get(url).content
    assert f'data-photo-id="{second.pk}"'.encode() in staff_client.get(url + "?reset=1").content

    response = staff_client.post(url, {"photo_id": second.pk, "label": "dragon"}, follow=True)
    assert response.status_code == 200 and b"is not a species" in response.content
    assert not LabelCorrection.objects.filter(photo=second).exists()
    staff_client.post(url, {"photo_id": second.pk, "label": "monarch"})  # confirm the prediction
    assert LabelCorrection.objects.get(photo=second).is_confirmation
    assert staff_client.post(url, {"photo_id": "nope", "label": "monarch"}).status_code == 404


def test_review_queue_is_staff_only(client, model):
    from tests.classifier.factories import UserFactory

    client.force_login(UserFactory())
    response = client.get(reverse("admin:classifier_photo_review"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_not_a_butterfly_is_never_flagged(model, staff):
    photo = PhotoFactory()
    predicted(photo, model, "monarch", 0.99, runner_up_probability=0.005)
    services.label_correct(photo=photo, new_label=NOT_A_BUTTERFLY, corrected_by=staff)
    assert Photo.objects.get(pk=photo.pk).label_flag == ""
