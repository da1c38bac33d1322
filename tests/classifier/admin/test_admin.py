import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from classifier.models import NOT_A_BUTTERFLY, LabelCorrection, ModelVersion, Photo
from tests.classifier.factories import (
    LabelCorrectionFactory,
    PhotoFactory,
    PredictionFactory,
    UserFactory,
    answer_fields,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    staff = UserFactory(is_staff=True, is_superuser=True, username="staffer")
    client.force_login(staff)
    client.staff = staff
    return client


@pytest.fixture
def photos(shipped_model, second_model):
    agree, disagree = PhotoFactory(**answer_fields("species", "monarch")), PhotoFactory()
    unsure = PhotoFactory(**answer_fields("uncertain", None, [("julia", 0.5), ("monarch", 0.4)]))
    PredictionFactory(photo=agree, model_version=shipped_model, label="monarch")
    PredictionFactory(photo=agree, model_version=second_model, label="monarch")
    PredictionFactory(photo=disagree, model_version=shipped_model, label="monarch")
    PredictionFactory(photo=disagree, model_version=second_model, label="viceroy")
    PredictionFactory(photo=unsure, model_version=shipped_model, label="julia", probability=0.1)
    LabelCorrectionFactory(photo=agree)
    return {"agree": agree, "disagree": disagree, "unsure": unsure}


def _ids(response):
    return {photo.pk for photo in response.context["cl"].result_list}


def test_changelist_filters(staff_client, photos, shipped_model, second_model):
    url = reverse("admin:classifier_photo_changelist")
    assert _ids(staff_client.get(url)) == {p.pk for p in photos.values()}
    assert _ids(staff_client.get(url + "?disagree=yes")) == {photos["disagree"].pk}
    assert _ids(staff_client.get(url + "?answer=uncertain")) == {photos["unsure"].pk}
    assert _ids(staff_client.get(url + "?corrected=yes")) == {photos["agree"].pk}
    assert _ids(staff_client.get(url + "?corrected=no")) == {photos["disagree"].pk, photos["unsure"].pk}
    assert _ids(staff_client.get(url + "?species=monarch")) == {photos["agree"].pk}
    assert _ids(staff_client.get(url + f"?model_version={second_model.pk}")) == {photos["agree"].pk, photos["disagree"].pk}
    assert _ids(staff_client.get(url + "?corrected=no&answer=uncertain")) == {photos["unsure"].pk}
    html = staff_client.get(url).content.decode()
    assert "uncertain: Julia or Monarch" in html and "species: Monarch" in html


def test_change_page_shows_predictions_inline_and_staff_sees_images(staff_client, photos, shipped_model, second_model):
    photo = photos["disagree"]
    html = staff_client.get(reverse("admin:classifier_photo_change", args=[photo.pk])).content.decode()
    assert str(shipped_model) in html and str(second_model) in html and "viceroy — 90.0%" in html
    assert reverse("admin:classifier_photo_correct", args=[photo.pk]) in html
    response = staff_client.get(reverse("admin:classifier_photo_image", args=[photo.pk, "thumbnail"]))
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"


def test_non_staff_cannot_use_admin_image_view(client, photos):
    user = photos["agree"].owner
    client.force_login(user)
    response = client.get(reverse("admin:classifier_photo_image", args=[photos["agree"].pk, "original"]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_single_correction(staff_client, photos):
    photo = photos["disagree"]
    url = reverse("admin:classifier_photo_correct", args=[photo.pk])
    page = staff_client.get(url).content.decode()
    assert f'<option value="{NOT_A_BUTTERFLY}">' in page and '<option value="monarch">' in page
    response = staff_client.post(url, {"new_label": NOT_A_BUTTERFLY})
    assert response.status_code == 302
    photo.refresh_from_db()
    assert photo.label == NOT_A_BUTTERFLY
    correction = LabelCorrection.objects.get(photo=photo)
    assert (correction.old_label, correction.new_label, correction.corrected_by) == ("monarch", NOT_A_BUTTERFLY, staff_client.staff)
    response = staff_client.post(url, {"new_label": "a dragon"})
    assert response.status_code == 200 and LabelCorrection.objects.filter(photo=photo).count() == 1


def test_bulk_correction_with_intermediate_page(staff_client, photos):
    url = reverse("admin:classifier_photo_changelist")
    ids = [photos["disagree"].pk, photos["unsure"].pk]
    response = staff_client.post(url, {"action": "correct_label_action", ACTION_CHECKBOX_NAME: ids})
    assert response.status_code == 200 and b'id="correct-label-form"' in response.content
    assert not Photo.objects.exclude(label="").exclude(pk=photos["agree"].pk).exists()
    response = staff_client.post(url, {"action": "correct_label_action", ACTION_CHECKBOX_NAME: ids, "apply": "1", "new_label": "peacock"})
    assert response.status_code == 302
    assert set(Photo.objects.filter(label="peacock").values_list("pk", flat=True)) == set(ids)
    assert LabelCorrection.objects.filter(new_label="peacock").count() == 2


def test_corrections_are_append_only_in_admin(staff_client, photos):
    correction = LabelCorrection.objects.first()
    assert staff_client.get(reverse("admin:classifier_labelcorrection_add")).status_code == 403
    assert staff_client.post(reverse("admin:classifier_labelcorrection_delete", args=[correction.pk]), {"post": "yes"}).status_code == 403
    assert LabelCorrection.objects.filter(pk=correction.pk).exists()


def test_model_version_actions(staff_client, shipped_model, second_model):
    url = reverse("admin:classifier_modelversion_changelist")
    staff_client.post(url, {"action": "deactivate", ACTION_CHECKBOX_NAME: [second_model.pk]})
    assert not ModelVersion.objects.get(pk=second_model.pk).is_active
    staff_client.post(url, {"action": "activate", ACTION_CHECKBOX_NAME: [second_model.pk]})
    assert ModelVersion.objects.get(pk=second_model.pk).is_active
    staff_client.post(url, {"action": "make_default", ACTION_CHECKBOX_NAME: [second_model.pk]})
    assert list(ModelVersion.objects.filter(is_default=True)) == [second_model]
