import re

import pytest
from django.urls import reverse

from classifier.models import Photo
from tests.classifier.conftest import media_files
from tests.classifier.factories import PhotoFactory, PredictionFactory, UserFactory, answer_fields
from tests.classifier.images import image_bytes, upload

pytestmark = pytest.mark.django_db


def test_signup_logs_in_and_leads_to_upload(client):
    response = client.post(
        reverse("classifier:signup"),
        {"username": "newbie", "password1": "a-Long-pass-123", "password2": "a-Long-pass-123"},
    )
    assert response.status_code == 302 and response["Location"] == reverse("classifier:upload")
    assert client.get(reverse("classifier:gallery")).status_code == 200


def test_signup_errors_are_shown(client):
    response = client.post(reverse("classifier:signup"), {"username": "x", "password1": "a", "password2": "b"})
    assert response.status_code == 200 and b"class=\"error\"" in response.content


def test_login_logout_and_password_change(client):
    UserFactory(username="ann")
    response = client.post(reverse("login"), {"username": "ann", "password": "correct horse battery"})
    assert response.status_code == 302 and response["Location"] == reverse("classifier:gallery")
    response = client.post(
        reverse("password_change"),
        {"old_password": "correct horse battery", "new_password1": "another-Pass-987", "new_password2": "another-Pass-987"},
    )
    assert response.status_code == 302
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("classifier:upload")).status_code == 302  # signed out: to login
    assert client.login(username="ann", password="another-Pass-987")


def test_pages_need_login(client):
    for url in (reverse("classifier:upload"), reverse("classifier:photo_detail", args=[1])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_upload_one_photo_goes_to_its_page_which_polls(client_for, user, media_root, django_capture_on_commit_callbacks):
    client = client_for(user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("classifier:upload"), {"images": [upload()]})
    photo = Photo.objects.get(owner=user)
    assert response.status_code == 302 and response["Location"] == reverse("classifier:photo_detail", args=[photo.pk])
    assert len(callbacks) == 1
    page = client.get(response["Location"]).content.decode()
    assert 'data-photo-status="pending"' in page and reverse("classifier:photo_result", args=[photo.pk]) in page


def test_upload_several_goes_to_gallery(client_for, user):
    client = client_for(user)
    response = client.post(reverse("classifier:upload"), {"images": [upload(content=image_bytes(color=(i, 0, 0))) for i in range(3)]})
    assert response.status_code == 302 and response["Location"] == reverse("classifier:gallery")
    page = client.get(reverse("classifier:gallery")).content.decode()
    assert page.count('data-photo-status="pending"') == 3


def test_bad_upload_shows_a_form_error_and_keeps_nothing(client_for, user, media_root):
    client = client_for(user)
    response = client.post(reverse("classifier:upload"), {"images": [upload("evil.jpg", content=b"<script>")]})
    assert response.status_code == 400
    assert "not a JPEG, PNG or WebP image" in response.content.decode()
    response = client.post(reverse("classifier:upload"), {})
    assert response.status_code == 400 and "Choose at least one photo" in response.content.decode()
    assert Photo.objects.count() == 0 and media_files(media_root) == []


def test_result_fragment_shows_the_answer_and_the_models_side_by_side(client_for, user, shipped_model, second_model):
    photo = PhotoFactory(owner=user, **answer_fields("uncertain", None, [("monarch", 0.55), ("viceroy", 0.4)]))
    PredictionFactory(photo=photo, model_version=shipped_model, label="monarch", probability=0.4)
    PredictionFactory(photo=photo, model_version=second_model, label="viceroy", probability=0.7, latency_ms=87.2)
    html = client_for(user).get(reverse("classifier:photo_result", args=[photo.pk])).content.decode()
    assert 'data-photo-status="done"' in html and "data-poll-url" not in html
    assert 'data-agreement="disagree"' in html and "models disagree" in html
    assert 'data-kind="uncertain"' in html and "Monarch or Viceroy? Compare them" in html
    assert f'data-model="{shipped_model.name}"' in html and f'data-version="{second_model.version}"' in html
    assert f"v{second_model.number} · trained " in html  # versions in words, no milliseconds


def test_failed_photo_shows_reason_and_retry(client_for, user, django_capture_on_commit_callbacks):
    photo = PhotoFactory(owner=user, status=Photo.Status.FAILED, failure_reason="Classification failed: model gone")
    client = client_for(user)
    html = client.get(reverse("classifier:photo_detail", args=[photo.pk])).content.decode()
    assert "model gone" in html and 'id="retry-button"' in html
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("classifier:photo_retry", args=[photo.pk]))
    assert response.status_code == 302 and len(callbacks) == 1
    photo.refresh_from_db()
    assert photo.status == Photo.Status.PENDING
    assert client.get(reverse("classifier:photo_retry", args=[photo.pk])).status_code == 405


def test_gallery_paginates_and_filters(client_for, user, shipped_model):
    for i in range(26):
        label = "monarch" if i % 2 else "julia"
        photo = PhotoFactory(owner=user, **answer_fields("species", label))
        PredictionFactory(photo=photo, model_version=shipped_model, label=label)
    client = client_for(user)
    first = client.get(reverse("classifier:gallery")).content.decode()
    assert first.count('class="photo-card') == 24 and "Page 1 of 2" in first
    ids = [int(i) for i in re.findall(r'data-photo-id="(\d+)"', first)]
    assert ids == sorted(ids, reverse=True)
    assert client.get(reverse("classifier:gallery") + "?page=2").content.decode().count('class="photo-card') == 2
    filtered = client.get(reverse("classifier:gallery") + "?species=julia").content.decode()
    assert filtered.count('class="photo-card') == 13 and 'data-species="monarch"' not in filtered
    assert client.get(reverse("classifier:gallery") + "?page=zzz").status_code == 200


def test_images_are_served_only_to_their_owner(client_for, user, other_user):
    photo = PhotoFactory(owner=user)
    client = client_for(user)
    for kind in ("original", "display", "thumbnail"):
        response = client.get(reverse("classifier:photo_file", args=[photo.pk, kind]))
        assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
        assert response["Cache-Control"].startswith("private")
    assert client.get(reverse("classifier:photo_file", args=[photo.pk, "secret"])).status_code == 404
    client.force_login(other_user)
    for name in ("photo_detail", "photo_result", "photo_card", "photo_delete"):
        assert client.get(reverse(f"classifier:{name}", args=[photo.pk])).status_code == 404
    assert client.get(reverse("classifier:photo_file", args=[photo.pk, "original"])).status_code == 404
    assert client.post(reverse("classifier:photo_delete", args=[photo.pk])).status_code == 404
    assert client.post(reverse("classifier:photo_retry", args=[photo.pk])).status_code == 404
    assert Photo.objects.filter(pk=photo.pk).exists()


def test_no_public_media_route(client_for, user):
    photo = PhotoFactory(owner=user)
    assert client_for(user).get("/media/" + photo.original.name).status_code == 404


def test_delete_asks_then_removes_photo_and_files(client_for, user, media_root, django_capture_on_commit_callbacks):
    photo = PhotoFactory(owner=user)
    client = client_for(user)
    assert b'id="confirm-delete"' in client.get(reverse("classifier:photo_delete", args=[photo.pk])).content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("classifier:photo_delete", args=[photo.pk]))
    assert response.status_code == 302 and not Photo.objects.exists() and media_files(media_root) == []
