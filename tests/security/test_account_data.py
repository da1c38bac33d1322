"""Account deletion by its owner (confirmed with the password) and in the admin removes the photos
and every stored file (original, display copy, thumbnail); "download my data" is a zip of the
originals and answers.json; deleting one photo still removes its files."""

import io
import json
import zipfile

from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.urls import reverse
from knox.models import AuthToken

from accounts.services import api_token_create
from classifier import services
from classifier.models import Photo
from tests.classifier.conftest import media_files
from tests.classifier.factories import LabelCorrectionFactory, PhotoFactory, PredictionFactory, UserFactory

PASSWORD = "correct horse battery"


def photos_with_files(owner, count=2):
    photos = [PhotoFactory(owner=owner) for _ in range(count)]
    for photo in photos:
        PredictionFactory(photo=photo)
    return photos


def names(photos):
    return [name for photo in photos for name in (photo.original.name, photo.display.name, photo.thumbnail.name)]


def test_wrong_password_deletes_nothing(client_for, user, django_capture_on_commit_callbacks):
    photos = photos_with_files(user)
    client = client_for(user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("accounts:delete"), {"password": "not my password"})
    assert response.status_code == 400 and "nothing was deleted" in response.content.decode()
    assert get_user_model().objects.filter(pk=user.pk).exists() and Photo.objects.filter(owner=user).count() == 2
    assert all(default_storage.exists(name) for name in names(photos))


def test_owner_deletes_account_with_every_file(client_for, user, other_user, media_root, django_capture_on_commit_callbacks):
    photos, kept = photos_with_files(user), photos_with_files(other_user, 1)
    api_token_create(user=user)
    client = client_for(user)
    assert client.get(reverse("accounts:delete")).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("accounts:delete"), {"password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert not get_user_model().objects.filter(pk=user.pk).exists() and not Photo.objects.filter(pk__in=[p.pk for p in photos]).exists()
    assert not AuthToken.objects.filter(user_id=user.pk).exists()
    assert not any(default_storage.exists(name) for name in names(photos))
    assert media_files(media_root) == sorted(names(kept))  # only the other user's files are left
    assert "_auth_user_id" not in client.session


def test_admin_deleting_a_user_deletes_their_files(client, user, media_root, django_capture_on_commit_callbacks):
    photos = photos_with_files(user)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:auth_user_delete", args=[user.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not get_user_model().objects.filter(pk=user.pk).exists()
    assert not any(default_storage.exists(name) for name in names(photos)) and media_files(media_root) == []


def test_admin_deleting_a_photo_and_the_service_delete_its_files(client, user, media_root, django_capture_on_commit_callbacks):
    in_admin, by_service = photos_with_files(user)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(reverse("admin:classifier_photo_delete", args=[in_admin.pk]), {"post": "yes"}).status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        services.photo_delete(photo=by_service)
    assert media_files(media_root) == []


def test_files_stay_when_the_deletion_rolls_back(user, django_capture_on_commit_callbacks):
    from django.db import transaction

    (photo,) = photos_with_files(user, 1)
    photo_id, stored = photo.pk, names([photo])
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                photo.delete()
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert Photo.objects.filter(pk=photo_id).exists() and all(default_storage.exists(n) for n in stored)


def test_export_is_a_zip_of_originals_and_answers(client_for, user, other_user):
    photos = photos_with_files(user)
    LabelCorrectionFactory(photo=photos[0], old_label="", new_label="viceroy")
    photos_with_files(other_user, 1)
    client = client_for(user)
    response = client.get(reverse("accounts:export"))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert "attachment" in response["Content-Disposition"] and response["Cache-Control"] == "no-store"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    answers = json.loads(archive.read("answers.json"))
    assert answers["username"] == user.username and {p["id"] for p in answers["photos"]} == {p.pk for p in photos}
    for photo in photos:
        entry = next(p for p in answers["photos"] if p["id"] == photo.pk)
        with default_storage.open(photo.original.name, "rb") as original:
            assert archive.read(entry["original_in_zip"]) == original.read()
        assert entry["predictions"] and entry["predictions"][0]["top"][0]["label"] == "monarch"
    first = next(p for p in answers["photos"] if p["id"] == photos[0].pk)
    assert [c["new_label"] for c in first["label_history"]] == ["viceroy"]
    assert len([n for n in archive.namelist() if n.startswith("originals/")]) == 2


def test_account_pages_need_sign_in(client, db):
    for name in ("accounts:account", "accounts:export", "accounts:delete"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), name
