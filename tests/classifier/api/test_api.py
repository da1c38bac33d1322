import pytest

from classifier.models import Photo
from tests.classifier.conftest import media_files
from tests.classifier.factories import PhotoFactory, PredictionFactory, UserFactory
from tests.classifier.images import image_bytes, upload

pytestmark = pytest.mark.django_db


def _token(api_client, username):
    response = api_client.post("/api/token/", {"username": username, "password": "correct horse battery"}, format="json")
    assert response.status_code == 200
    return response.json()["token"]


def test_token_then_upload_then_get(api_client, user, media_root, django_capture_on_commit_callbacks):
    token = _token(api_client, user.username)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api_client.post("/api/photos/", {"image": upload()}, format="multipart")
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "status", "url"} and body["status"] == "pending"
    assert body["url"].endswith(f"/api/photos/{body['id']}/")
    assert len(callbacks) == 1

    detail = api_client.get(f"/api/photos/{body['id']}/").json()
    assert detail["status"] == "pending" and detail["predictions"] == []


def test_token_errors_are_readable(api_client):
    UserFactory(username="bob")
    response = api_client.post("/api/token/", {"username": "bob", "password": "wrong"}, format="json")
    assert response.status_code == 400 and "Unable to sign in" in response.json()["detail"]
    response = api_client.post("/api/token/", "not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["detail"]
    response = api_client.post("/api/token/", {}, format="json")
    assert response.status_code == 400 and "username" in response.json()["detail"]


def test_detail_lists_every_models_top_k(api_client, user, shipped_model, second_model):
    photo = PhotoFactory(owner=user)
    PredictionFactory(photo=photo, model_version=shipped_model, label="monarch", probability=0.9)
    PredictionFactory(photo=photo, model_version=second_model, label="monarch", probability=0.8)
    api_client.force_authenticate(user)
    body = api_client.get(f"/api/photos/{photo.pk}/").json()
    assert body["id"] == photo.pk and body["status"] == "done" and body["agreement"] == "agree"
    assert [(p["model"], p["version"]) for p in body["predictions"]] == [
        (shipped_model.name, shipped_model.version),
        (second_model.name, second_model.version),
    ]
    assert body["predictions"][0]["top"][0] == {"label": "monarch", "probability": 0.9}


def test_list_is_own_photos_paginated(api_client, user, other_user, settings):
    mine = [PhotoFactory(owner=user) for _ in range(3)]
    PhotoFactory(owner=other_user)
    api_client.force_authenticate(user)
    body = api_client.get("/api/photos/").json()
    assert body["count"] == 3 and [p["id"] for p in body["results"]] == [p.pk for p in reversed(mine)]
    assert {"next", "previous"} <= set(body)


def test_someone_elses_photo_is_404(api_client, user, other_user):
    photo = PhotoFactory(owner=other_user)
    api_client.force_authenticate(user)
    response = api_client.get(f"/api/photos/{photo.pk}/")
    assert response.status_code == 404 and response.json()["detail"]
    assert api_client.delete(f"/api/photos/{photo.pk}/").status_code == 404
    assert Photo.objects.filter(pk=photo.pk).exists()


def test_delete_own_photo(api_client, user, media_root, django_capture_on_commit_callbacks):
    photo = PhotoFactory(owner=user)
    api_client.force_authenticate(user)
    with django_capture_on_commit_callbacks(execute=True):
        assert api_client.delete(f"/api/photos/{photo.pk}/").status_code == 204
    assert media_files(media_root) == []


def test_authentication_required(api_client):
    response = api_client.get("/api/photos/")
    assert response.status_code == 401 and "credentials" in response.json()["detail"]
    api_client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert api_client.get("/api/photos/").status_code == 401


def test_bad_uploads_are_json_errors_and_leave_nothing(api_client, user, media_root, settings):
    api_client.force_authenticate(user)
    response = api_client.post("/api/photos/", {"image": upload(content=b"GIF89a nonsense")}, format="multipart")
    assert response.status_code == 400 and "not a JPEG, PNG or WebP" in response.json()["detail"]
    response = api_client.post("/api/photos/", {}, format="multipart")
    assert response.status_code == 400 and '"image"' in response.json()["detail"]
    response = api_client.post("/api/photos/", {"image": "text"}, format="json")
    assert response.status_code == 415 and response.json()["detail"]
    settings.UPLOAD_MAX_BYTES = 2000
    response = api_client.post("/api/photos/", {"image": upload(content=image_bytes(size=(300, 300)) + b"\0" * 3000)}, format="multipart")
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    big = upload(content=image_bytes(size=(300, 300)) + b"\0" * 100_000)
    response = api_client.post("/api/photos/", {"image": big}, format="multipart")
    assert response.status_code == 413
    assert Photo.objects.count() == 0 and media_files(media_root) == []
