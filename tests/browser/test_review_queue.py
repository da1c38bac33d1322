"""The staff review queue (retraining loop, docs/retraining.md) driven from the keyboard in a
real browser (Debian's Chromium, Playwright)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from classifier import services
from classifier.models import LabelCorrection, ModelVersion, Photo
from tests.classifier.factories import ModelVersionFactory, PredictionFactory, UserFactory

pytestmark = pytest.mark.browser


def _photo(owner, path, model, top):
    photo = services.photos_create(owner=owner, uploads=[SimpleUploadedFile(path.name, path.read_bytes(), "image/jpeg")])[0]
    Photo.objects.filter(pk=photo.pk).update(status=Photo.Status.DONE)
    PredictionFactory(photo=photo, model_version=model, label=top[0][0], probability=top[0][1],
                      top=[{"label": label, "probability": p} for label, p in top])
    return photo


def test_staff_confirm_correct_and_skip_with_the_keyboard(page, live_server, butterflies_dir, screenshot,
                                                          django_capture_on_commit_callbacks):
    ModelVersion.objects.update(is_active=False, is_default=False)
    model = ModelVersionFactory(name="small", is_default=True)
    owner = UserFactory()
    staff = UserFactory(username="curator", is_staff=True, is_superuser=True)
    viceroy, monarch, peacock = (sorted((butterflies_dir / "test" / s).iterdir())[0] for s in ("viceroy", "monarch", "peacock"))
    with django_capture_on_commit_callbacks(execute=False):  # no worker: the predictions are given
        unsure = _photo(owner, viceroy, model, [("monarch", 0.46), ("viceroy", 0.41), ("julia", 0.05)])
        likely = _photo(owner, monarch, model, [("monarch", 0.72), ("viceroy", 0.20)])
        sure = _photo(owner, peacock, model, [("peacock", 0.97), ("adonis", 0.01)])

    page.goto(f"{live_server.url}/admin/login/?next=/admin/classifier/photo/review/")
    page.fill("input[name=username]", staff.username)
    page.fill("input[name=password]", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_selector(f'#review[data-photo-id="{unsure.pk}"]')
    assert page.locator("#review-image").evaluate("img => img.naturalWidth") > 0
    screenshot("admin-review-queue")

    page.keyboard.press("2")  # the runner-up, viceroy: a correction
    page.wait_for_selector(f'#review[data-photo-id="{likely.pk}"]')
    page.keyboard.press("1")  # the label shown, monarch: a confirmation
    page.wait_for_selector(f'#review[data-photo-id="{sure.pk}"]')
    page.keyboard.press("s")
    page.wait_for_selector("#review-empty")

    corrections = {c.photo_id: c for c in LabelCorrection.objects.all()}
    assert corrections[unsure.pk].new_label == "viceroy" and not corrections[unsure.pk].is_confirmation
    assert corrections[likely.pk].new_label == "monarch" and corrections[likely.pk].is_confirmation
    assert sure.pk not in corrections and corrections[unsure.pk].corrected_by == staff
