"""Issue 12 without a browser: landing, species pages, the model version admin page."""

import pytest
from django.urls import reverse

from classifier.models import ModelVersion
from ml import species as catalogue
from tests.classifier.factories import PhotoFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_signed_out_root_is_the_landing_page_signed_in_root_is_the_gallery(client):
    page = client.get("/").content.decode()
    assert "Which butterfly is it?" in page and reverse("classifier:signup") in page
    assert reverse("classifier:species_list") in page
    client.force_login(UserFactory())
    assert 'id="landing"' not in client.get("/").content.decode()


def test_species_list_and_page(client):
    page = client.get(reverse("classifier:species_list")).content.decode()
    assert page.count('class="species-card"') == 49
    viceroy = catalogue.get("viceroy")
    page = client.get(reverse("classifier:species_detail", args=[viceroy.slug])).content.decode()
    assert viceroy.scientific_name in page and viceroy.note.split(";")[0][:40] in page
    assert all(f"/static/{path}" in page for path in viceroy.reference_images)
    assert client.get(reverse("classifier:species_detail", args=["nope"])).status_code == 404


def test_species_page_lists_only_the_users_own_photos_of_that_species(client):
    owner = UserFactory()
    mine = PhotoFactory(owner=owner, label="viceroy")
    other_species = PhotoFactory(owner=owner, label="monarch")
    someone_elses = PhotoFactory(label="viceroy")
    client.force_login(owner)
    page = client.get(reverse("classifier:species_detail", args=[catalogue.get("viceroy").slug])).content.decode()
    assert f'data-photo-id="{mine.pk}"' in page
    assert f'data-photo-id="{other_species.pk}"' not in page and f'data-photo-id="{someone_elses.pk}"' not in page


def test_model_version_page_shows_metrics_as_a_table_and_no_editable_training_ids(client):
    version = ModelVersion.objects.get(is_default=True)
    ModelVersion.objects.filter(pk=version.pk).update(training_photo_ids=[3, 5])
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:classifier_modelversion_change", args=[version.pk])).content.decode()
    assert 'id="metrics-table"' in page and "<th scope=\"row\">test_top1</th>" in page
    assert 'name="training_photo_ids"' not in page and 'name="metrics"' not in page
    assert "2 staff-labelled photos: 3, 5" in page


def test_admin_photo_list_marks_answers_that_name_no_species_as_a_warning(client):
    from tests.classifier.factories import PredictionFactory

    uncertain = PhotoFactory(identification={"kind": "uncertain", "label": None, "scores": {},
                                             "candidates": [{"label": "monarch", "probability": 0.5},
                                                            {"label": "viceroy", "probability": 0.4}]},
                             identification_kind="uncertain")
    sure = PhotoFactory(identification={"kind": "species", "label": "monarch", "scores": {},
                                        "candidates": [{"label": "monarch", "probability": 0.97}]},
                        identification_kind="species", identification_label="monarch")
    for photo in (uncertain, sure):
        PredictionFactory(photo=photo, model_version=ModelVersion.objects.get(is_default=True))
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:classifier_photo_changelist")).content.decode()
    rows = {pk: row for pk, row in ((int(m.split('"')[0]), m) for m in page.split('name="_selected_action" value="')[1:])}
    assert "icon-alert.svg" in rows[uncertain.pk] and "uncertain: Monarch or Viceroy" in rows[uncertain.pk]
    assert "icon-alert.svg" not in rows[sure.pk] and "icon-yes.svg" not in rows[uncertain.pk]
