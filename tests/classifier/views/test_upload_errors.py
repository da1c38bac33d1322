"""Upload refusals in the page (form errors) and in the API (JSON 400/413/429), nothing kept."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from classifier.models import Photo
from tests.classifier.conftest import media_files
from tests.classifier.images import image_bytes, upload

pytestmark = pytest.mark.django_db


def _signed_in_with_token(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get(reverse("classifier:upload")).content.decode()
    return client, re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def test_more_files_than_allowed_is_a_form_error_even_through_the_csrf_check(user, settings, media_root):
    # Django stops parsing at DATA_UPLOAD_MAX_NUMBER_FILES, inside the CSRF middleware: the
    # page must still say what is wrong, under the file field.
    client, token = _signed_in_with_token(user)
    files = [upload(f"p{i}.jpg", content=image_bytes(color=(i, 0, 0))) for i in range(settings.UPLOAD_MAX_FILES + 1)]
    response = client.post(reverse("classifier:upload"), {"csrfmiddlewaretoken": token, "images": files})
    html = response.content.decode()
    assert response.status_code == 400
    assert f"Upload at most {settings.UPLOAD_MAX_FILES} photos at once." in html and 'id="upload-form"' in html
    assert Photo.objects.count() == 0 and media_files(media_root) == []


def test_a_huge_number_of_files_is_refused_the_same_way(user, settings, media_root):
    client, token = _signed_in_with_token(user)
    files = [upload(f"p{i}.jpg", content=b"x") for i in range(1000)]
    response = client.post(reverse("classifier:upload"), {"csrfmiddlewaretoken": token, "images": files})
    assert response.status_code == 400 and "Upload at most" in response.content.decode()
    assert Photo.objects.count() == 0 and media_files(media_root) == []


@pytest.mark.parametrize("field", ["image", "file", "photos", "images[]"])
def test_a_wrong_field_name_is_a_form_error(client_for, user, media_root, field):
    response = client_for(user).post(reverse("classifier:upload"), {field: [upload()]})
    assert response.status_code == 400 and "Choose at least one photo" in response.content.decode()
    assert Photo.objects.count() == 0 and media_files(media_root) == []


@pytest.mark.parametrize(
    "content, message",
    [(b"<html><script>alert(1)</script></html>", "not a JPEG, PNG or WebP"), (image_bytes("PNG") + b"<html></html>", "other data appended")],
)
def test_bad_file_is_a_form_error_naming_the_file(client_for, user, media_root, content, message):
    response = client_for(user).post(reverse("classifier:upload"), {"images": [upload("holiday.jpg", content=content)]})
    html = response.content.decode()
    assert response.status_code == 400 and message in html and "holiday.jpg" in html and "<script>" not in html
    assert Photo.objects.count() == 0 and media_files(media_root) == []


def test_oversized_file_is_a_form_error(client_for, user, settings, media_root):
    settings.UPLOAD_MAX_BYTES = 3000
    response = client_for(user).post(reverse("classifier:upload"), {"images": [upload(content=image_bytes(size=(300, 300)) + b"\0" * 4000)]})
    assert response.status_code == 400 and "larger than" in response.content.decode()
    assert Photo.objects.count() == 0 and media_files(media_root) == []


def test_hostile_file_names_in_a_real_multipart_body(client_for, user, media_root):
    # Django's parser keeps only the printable last part of the name; storage ignores it anyway.
    photo_bytes = image_bytes()
    boundary = "BoUnDaRy"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"../../../tmp/evil\x01\x1b.jpg\"\r\n"
        "Content-Type: text/html\r\n\r\n"
    ).encode() + photo_bytes + f"\r\n--{boundary}--\r\n".encode()
    client = client_for(user)
    response = client.generic("POST", reverse("classifier:upload"), body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 302
    photo = Photo.objects.get()
    assert all(path.resolve().is_relative_to(media_root.resolve()) for path in media_root.rglob("*"))
    assert "evil" not in photo.original.name and "tmp" not in photo.original.name


# API


def test_api_refuses_too_many_files_and_wrong_fields_as_json(api_client, user, settings, media_root):
    api_client.force_authenticate(user)
    many = {"image": [upload(content=b"x") for _ in range(settings.UPLOAD_MAX_FILES + 5)]}
    response = api_client.post("/api/photos/", many, format="multipart")
    assert response.status_code == 400 and "Upload at most" in response.json()["detail"]
    two = {"image": [upload(), upload()]}
    response = api_client.post("/api/photos/", two, format="multipart")
    assert response.status_code == 400 and '"image"' in response.json()["detail"]
    response = api_client.post("/api/photos/", {"images": upload()}, format="multipart")
    assert response.status_code == 400 and '"image"' in response.json()["detail"]
    for content, message in [(b"", "empty"), (image_bytes("PNG") + b"<html>", "other data appended"),
                             (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "not a JPEG, PNG or WebP")]:
        response = api_client.post("/api/photos/", {"image": upload(content=content)}, format="multipart")
        assert response.status_code == 400 and message in response.json()["detail"], response.content
    assert Photo.objects.count() == 0 and media_files(media_root) == []


# Rate limits


def test_upload_is_rate_limited_per_user_then_per_ip(client_for, user, other_user, settings):
    settings.RATELIMIT_UPLOAD_USER = "3/m"
    settings.RATELIMIT_UPLOAD_IP = "6/m"
    client = client_for(user)
    statuses = [client.post(reverse("classifier:upload"), {"images": [upload(content=b"junk")]}).status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    response = client.post(reverse("classifier:upload"), {"images": [upload()]})
    assert response.status_code == 429 and "Too many attempts" in response.content.decode()
    assert int(response["Retry-After"]) >= 1
    assert not Photo.objects.exists()
    # Another user from the same address: their own budget, until the address's runs out.
    client.force_login(other_user)
    assert client.post(reverse("classifier:upload"), {"images": [upload()]}).status_code == 302
    assert client.post(reverse("classifier:upload"), {"images": [upload()]}).status_code == 429
    # Looking is never limited.
    assert client.get(reverse("classifier:gallery")).status_code == 200


def test_api_upload_is_rate_limited_as_json(api_client, user, settings):
    settings.RATELIMIT_UPLOAD_USER = "2/m"
    api_client.force_authenticate(user)
    codes = [api_client.post("/api/photos/", {"image": upload()}, format="multipart").status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    response = api_client.post("/api/photos/", {"image": upload()}, format="multipart")
    assert "Too many attempts" in response.json()["detail"] and response["Retry-After"]
    assert Photo.objects.count() == 2


def test_sign_in_is_rate_limited_per_ip_and_username_and_per_ip(client, api_client, user, settings):
    settings.RATELIMIT_LOGIN_IP_USERNAME = "3/m"
    settings.RATELIMIT_LOGIN_IP = "6/m"
    codes = [client.post(reverse("login"), {"username": user.username, "password": "wrong"}).status_code for _ in range(3)]
    assert codes == [200, 200, 200]  # the form again, with its error
    # From this address the right password no longer helps for this account (guessing stops here) ...
    response = client.post(reverse("login"), {"username": user.username, "password": "correct horse battery"})
    assert response.status_code == 429 and "_auth_user_id" not in client.session
    # ... nor through the token endpoint, which shares the budget.
    response = api_client.post("/api/token/", {"username": user.username, "password": "correct horse battery"}, format="json")
    assert response.status_code == 429 and "Too many attempts" in response.json()["detail"]
    # Other usernames from this address: until the address's own limit.
    codes = [client.post(reverse("login"), {"username": f"someone{i}", "password": "x"}).status_code for i in range(3)]
    assert codes == [200, 429, 429]
    # The owner, from another address, is not locked out (tests/security/test_sign_in_limits.py).
    response = client.post(reverse("login"), {"username": user.username, "password": "correct horse battery"}, REMOTE_ADDR="10.9.9.9")
    assert response.status_code == 302


def test_client_address_behind_the_router_is_the_last_forwarded_entry(client, user, settings):
    settings.RATELIMIT_TRUST_X_FORWARDED_FOR = True
    settings.RATELIMIT_LOGIN_IP = "2/m"
    settings.RATELIMIT_LOGIN_IP_USERNAME = ""
    # A client that forges the first X-Forwarded-For entry is still counted by its real address.
    for forged in ("1.1.1.1", "2.2.2.2"):
        assert client.post(reverse("login"), {"username": "a", "password": "b"}, HTTP_X_FORWARDED_FOR=f"{forged}, 9.9.9.9").status_code == 200
    assert client.post(reverse("login"), {"username": "a", "password": "b"}, HTTP_X_FORWARDED_FOR="3.3.3.3, 9.9.9.9").status_code == 429
    assert client.post(reverse("login"), {"username": "a", "password": "b"}, HTTP_X_FORWARDED_FOR="9.9.9.8").status_code == 200
