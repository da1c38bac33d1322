"""Access: another user's photo is invisible through every URL and API endpoint; only staff reach
the admin (and its review queue); every form needs its CSRF token; passwords are validated."""

import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from classifier.models import LabelCorrection, Photo, Prediction
from tests.classifier.factories import PhotoFactory, PredictionFactory, UserFactory
from tests.classifier.images import upload

pytestmark = pytest.mark.django_db


def _patterns(resolver, prefix=""):
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, route)
        elif isinstance(entry, URLPattern):
            yield route, entry


def _fill(route, photo_id):
    route = route.lstrip("^").rstrip("$").replace("\\Z", "")
    route = re.sub(r"<int:\w+>", str(photo_id), route)
    route = re.sub(r"<(str:)?kind>", "original", route)
    route = re.sub(r"<(path:)?\w+>", "x", route)
    return "/" + route


PHOTO_URLS = sorted({_fill(route, 0) for route, _ in _patterns(get_resolver()) if "<int:photo_id>" in route and not route.startswith("admin/")})


def test_the_photo_urls_checked_below_are_every_photo_url_there_is():
    assert {"/photos/0/", "/photos/0/result/", "/photos/0/card/", "/photos/0/retry/", "/photos/0/delete/",
            "/photos/0/original.jpg", "/api/photos/0/"} <= set(PHOTO_URLS)


def test_another_user_reaches_none_of_my_photos_urls(user, other_user, shipped_model):
    photo = PhotoFactory(owner=user, status=Photo.Status.FAILED, failure_reason="x")
    PredictionFactory(photo=photo, model_version=shipped_model)
    intruder = Client()
    intruder.force_login(other_user)
    api = APIClient()
    api.force_authenticate(other_user)
    for template in PHOTO_URLS:
        url = template.replace("/0/", f"/{photo.pk}/")
        for kind in ("original", "display", "thumbnail"):
            url_kind = url.replace("original.jpg", f"{kind}.jpg")
            for method in ("get", "post", "delete", "put", "patch"):
                for client in (intruder, api) if url.startswith("/api/") else (intruder,):
                    response = getattr(client, method)(url_kind)
                    assert response.status_code in (404, 405), (method, url_kind, response.status_code)
                    assert b"monarch" not in response.content
    # Lists show only one's own photos.
    assert f'data-photo-id="{photo.pk}"' not in intruder.get(reverse("classifier:gallery")).content.decode()
    assert api.get("/api/photos/").json()["count"] == 0
    photo.refresh_from_db()
    assert photo.status == Photo.Status.FAILED and Prediction.objects.filter(photo=photo).count() == 1


def test_the_owner_does_reach_them(client_for, user):
    photo = PhotoFactory(owner=user)
    client = client_for(user)
    for name in ("photo_detail", "photo_result", "photo_card", "photo_delete"):
        assert client.get(reverse(f"classifier:{name}", args=[photo.pk])).status_code == 200
    for kind in ("original", "display", "thumbnail"):
        assert client.get(reverse("classifier:photo_file", args=[photo.pk, kind])).status_code == 200


def _admin_urls(photo_id):
    urls = []
    for route, _entry in _patterns(get_resolver()):
        if route.startswith("admin/") and "logout" not in route and "password_change" not in route:
            urls.append(_fill(route, photo_id))
    return sorted(set(urls))


def test_only_staff_reach_the_admin_and_the_review_queue(user, shipped_model):
    photo = PhotoFactory()
    urls = _admin_urls(photo.pk)
    assert "/admin/" in urls and any("correct" in u for u in urls) and len(urls) > 20
    client = Client()
    client.force_login(user)  # signed in, not staff
    for url in urls:
        if url.startswith("/admin/login") or "/r/" in url or url.startswith("/admin/jsi18n"):
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            assert response.status_code in (302, 404), (method, url, response.status_code)
            if response.status_code == 302:
                assert response["Location"].startswith("/admin/login/"), (url, response["Location"])
    assert not LabelCorrection.objects.exists()
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    assert staff.get(reverse("admin:classifier_photo_changelist")).status_code == 200


FORMS = [
    ("login", {"username": "u", "password": "p"}),
    ("classifier:signup", {"username": "n", "password1": "a-Long-pass-123", "password2": "a-Long-pass-123"}),
    ("classifier:upload", None),
    ("password_change", {"old_password": "correct horse battery", "new_password1": "x-Long-pass-987", "new_password2": "x-Long-pass-987"}),
    ("logout", {}),
]


@pytest.mark.parametrize("name, data", FORMS)
def test_every_form_refuses_a_post_without_its_csrf_token(user, name, data):
    client = Client(enforce_csrf_checks=True)
    if name != "classifier:signup" and name != "login":
        client.force_login(user)
    response = client.post(reverse(name), data if data is not None else {"images": [upload()]})
    assert response.status_code == 403, (name, response.status_code)
    assert not Photo.objects.exists()


def test_photo_forms_refuse_a_post_without_csrf_token(user):
    photo = PhotoFactory(owner=user, status=Photo.Status.FAILED)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    for name in ("photo_retry", "photo_delete"):
        assert client.post(reverse(f"classifier:{name}", args=[photo.pk])).status_code == 403
    photo.refresh_from_db()
    assert photo.status == Photo.Status.FAILED
    # With the token from the page the same form works.
    page = client.get(reverse("classifier:photo_delete", args=[photo.pk])).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post(reverse("classifier:photo_delete", args=[photo.pk]), {"csrfmiddlewaretoken": token}).status_code == 302


def test_session_authenticated_api_posts_need_the_csrf_token(user):
    client = APIClient(enforce_csrf_checks=True)
    client.login(username=user.username, password="correct horse battery")
    response = client.post("/api/photos/", {"image": upload()}, format="multipart")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert not Photo.objects.exists()


@pytest.mark.parametrize("password, message", [("short", "too short"), ("password123", "too common"), ("12345678901", "entirely numeric")])
def test_signup_validates_passwords(client, password, message):
    response = client.post(reverse("classifier:signup"), {"username": "newbie", "password1": password, "password2": password})
    assert response.status_code == 200 and message in response.content.decode()
    assert not client.session.get("_auth_user_id")
