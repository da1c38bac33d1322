"""Issue 12's admin points in a real browser: user suggestions listed and filtered, model version pages
with metrics as tables and per-class recall and no editable training-ids box."""

import pytest

from classifier.models import ModelVersion
from suggestions import services as suggestion_services
from tests.classifier.factories import PhotoFactory, UserFactory

pytestmark = [pytest.mark.browser]


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def staff(transactional_db):
    return UserFactory(username="curator", is_staff=True, is_superuser=True)


def test_suggestions_are_listed_and_filtered(page, live_server, staff, sign_in_as, screenshot):
    owner = UserFactory(username="ada")
    waiting = PhotoFactory(owner=owner)
    decided = PhotoFactory(owner=owner, label="monarch")
    suggestion_services.suggestion_create(photo=waiting, user=owner, label="viceroy")
    suggestion_services.suggestion_create(photo=decided, user=owner, label="not a butterfly")
    sign_in_as(page, staff)
    page.goto(live_server.url + "/admin/suggestions/usersuggestion/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert "Viceroy" in page.locator("#result_list").inner_text()
    screenshot("admin-suggestions")
    page.get_by_role("link", name="waiting for staff").click()
    assert page.locator("#result_list tbody tr").count() == 1
    assert f"Photo {waiting.pk} " in page.locator("#result_list tbody").inner_text()
    page.goto(live_server.url + "/admin/suggestions/usersuggestion/")
    page.get_by_role("link", name="Not a butterfly", exact=True).click()
    assert f"Photo {decided.pk} " in page.locator("#result_list tbody").inner_text()
    assert page.locator("#result_list tbody tr").count() == 1


def test_model_version_page_shows_tables_and_no_editable_ids(page, live_server, staff, sign_in_as, screenshot):
    version = ModelVersion.objects.get(is_default=True)
    ModelVersion.objects.filter(pk=version.pk).update(training_photo_ids=[4, 9])
    sign_in_as(page, staff)
    page.goto(live_server.url + f"/admin/classifier/modelversion/{version.pk}/change/")
    metrics = page.locator("#metrics-table")
    assert metrics.is_visible() and "test_top1" in metrics.inner_text()
    assert page.locator("textarea").count() == 0
    assert "2 staff-labelled photos: 4, 9" in page.locator("body").inner_text()
    # The shipped default artifact carries its benchmark report (evaluation/report.json).
    assert page.locator("#per-class-recall").is_visible()
    assert page.locator("#per-class-recall tbody tr").count() >= 49
    screenshot("admin-model-version")


def test_an_answer_that_names_no_species_reads_as_a_warning(page, live_server, staff, sign_in_as, screenshot):
    from tests.classifier.factories import PredictionFactory

    def answered(kind, label, candidates):
        photo = PhotoFactory(identification={"kind": kind, "label": label, "scores": {},
                                             "candidates": [{"label": k, "probability": p} for k, p in candidates]},
                             identification_kind=kind, identification_label=label or "")
        PredictionFactory(photo=photo, model_version=ModelVersion.objects.get(is_default=True), label=candidates[0][0],
                          probability=candidates[0][1])
        return photo

    unsure = answered("uncertain", None, [("monarch", 0.5), ("viceroy", 0.4)])
    sure = answered("species", "peacock", [("peacock", 0.98)])
    sign_in_as(page, staff)
    page.goto(live_server.url + "/admin/classifier/photo/")
    unsure_row = page.locator("#result_list tbody tr").filter(has=page.locator(f'input[value="{unsure.pk}"]'))
    sure_row = page.locator("#result_list tbody tr").filter(has=page.locator(f'input[value="{sure.pk}"]'))
    warning = unsure_row.locator(".answer-warning img")
    assert warning.is_visible() and warning.get_attribute("alt") == "Warning:"
    assert "icon-alert.svg" in warning.get_attribute("src")
    assert unsure_row.locator('img[src*="icon-yes"]').count() == 0  # no green tick for an unsure answer
    assert sure_row.locator(".answer-warning").count() == 0
    screenshot("admin-photo-list")
