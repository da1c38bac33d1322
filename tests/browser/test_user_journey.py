"""A person in a real browser: sign up, upload real photos, watch the results arrive, browse the
gallery, delete a photo; and a staff member correcting a label in the admin.

The photos are classified by a real Celery worker process with the shipped models.
"""

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from classifier.models import LabelCorrection, Photo, Prediction

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "a-Long-and-unusual-passphrase-77"


def _real_photos(butterflies_dir, species, n):
    return sorted((butterflies_dir / "test" / species).glob("*.jpg"))[:n]


def _sign_up(page, base_url, username):
    page.goto(f"{base_url}/accounts/signup/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(re.compile(r"/upload/$"))


def test_sign_up_upload_see_results_browse_and_delete(page, live_server, live_worker, butterflies_dir, screenshot):
    base = live_server.url
    _sign_up(page, base, "ada")
    assert get_user_model().objects.filter(username="ada").exists()

    # One photo: the page returns at once showing "classifying", then turns into the result.
    monarch = _real_photos(butterflies_dir, "monarch", 1)[0]
    page.set_input_files("input[name=images]", str(monarch))
    page.click("#upload-submit")
    page.wait_for_url(re.compile(r"/photos/\d+/$"))
    result = page.locator("#photo-result")
    result.wait_for()
    page.wait_for_selector("#photo-result[data-photo-status=done]", timeout=180_000)
    screenshot("photo-result")
    models = page.locator("#photo-result [data-model]")
    assert models.count() == Prediction.objects.values("model_version").distinct().count() >= 1
    for i in range(models.count()):
        top = models.nth(i).locator("[data-label]")
        assert top.count() == 5
        assert top.first.get_attribute("data-label") == "monarch"
    assert page.locator("#agreement").count() == 1

    # Several at once, from the gallery's upload page.
    page.goto(f"{base}/upload/")
    peacocks = _real_photos(butterflies_dir, "peacock", 2)
    page.set_input_files("input[name=images]", [str(p) for p in peacocks])
    page.click("#upload-submit")
    page.wait_for_url(f"{base}/")  # the gallery (not r"/$", which /upload/ itself matches while the form sends)
    cards = page.locator("#gallery [data-photo-id]")
    assert cards.count() == 3
    # The gallery polls: every card turns from "classifying" into a species without a reload.
    # (a locator, not wait_for_function: the Content-Security-Policy forbids the eval that needs)
    expect(page.locator("#gallery [data-photo-status=done]")).to_have_count(3, timeout=240_000)
    screenshot("gallery")
    labels = sorted(page.locator("#gallery [data-species]").evaluate_all("els => els.map(e => e.dataset.species)"))
    assert labels == ["monarch", "peacock", "peacock"]

    # Filter by species (the choices list the species of finished photos, so reload first).
    page.reload()
    page.select_option("#species", "peacock")
    page.wait_for_url(re.compile(r"species=peacock"))
    assert page.locator("#gallery [data-photo-id]").count() == 2

    # Delete the monarch: its row and files go.
    monarch_photo = Photo.objects.get(owner__username="ada", predictions__label="monarch", predictions__model_version__is_default=True)
    page.goto(f"{base}/photos/{monarch_photo.pk}/")
    page.click("#delete-link")
    page.click("#confirm-delete")
    page.wait_for_url(re.compile(r"/$"))
    assert not Photo.objects.filter(pk=monarch_photo.pk).exists()
    assert page.locator("#gallery [data-photo-id]").count() == 2


def test_other_users_photo_is_not_found_in_the_browser(page, live_server, live_worker, butterflies_dir):
    from tests.classifier.factories import PhotoFactory, UserFactory

    photo = PhotoFactory(owner=UserFactory(username="owner"))
    _sign_up(page, live_server.url, "intruder")
    for path in (f"/photos/{photo.pk}/", f"/photos/{photo.pk}/display.jpg", f"/photos/{photo.pk}/original.jpg"):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 404, path


def test_staff_corrects_a_label_in_the_admin(page, live_server, live_worker, butterflies_dir, screenshot):
    from tests.classifier.factories import UserFactory

    owner = UserFactory(username="uploader")
    staff = UserFactory(username="curator", is_staff=True, is_superuser=True)
    # A real photo, classified by the worker, as a user would have uploaded it.
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", owner.username)
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit], input[type=submit]")
    page.goto(f"{live_server.url}/upload/")
    page.set_input_files("input[name=images]", str(_real_photos(butterflies_dir, "viceroy", 1)[0]))
    page.click("#upload-submit")
    page.wait_for_selector("#photo-result[data-photo-status=done]", timeout=180_000)
    photo = Photo.objects.get(owner=owner)
    page.context.clear_cookies()

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", staff.username)
    page.fill("input[name=password]", "correct horse battery")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/classifier/photo/{photo.pk}/change/")
    screenshot("admin-photo")
    page.click("#correct-label-tool")
    page.select_option("select[name=new_label]", "monarch")
    screenshot("admin-correct-label")
    page.click("#correct-label-submit")
    page.wait_for_url(re.compile(rf"/admin/classifier/photo/{photo.pk}/change/$"))
    assert "monarch" in page.locator("ul.messagelist").inner_text()

    # The old label is what the photo was taken to be: the default model's prediction.
    correction = LabelCorrection.objects.get(photo=photo)
    assert (correction.old_label, correction.new_label, correction.corrected_by) == ("viceroy", "monarch", staff)
    photo.refresh_from_db()
    assert photo.label == "monarch"
