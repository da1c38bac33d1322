"""API tokens: only a digest is stored, each expires, its owner lists and revokes it (API and
account page), /api/token/logout/ revokes it, a password change revokes them all, and tokens
made before (Django REST framework's plain-text keys) are hashed by a migration."""

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken

from tests.classifier.factories import UserFactory

PASSWORD = "correct horse battery"


def token_for(api_client, user):
    response = api_client.post("/api/token/", {"username": user.username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response


def works(api_client, token) -> bool:
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    status = api_client.get("/api/photos/").status_code
    api_client.credentials()
    assert status in (200, 401)
    return status == 200


def test_token_is_stored_as_a_digest_with_an_expiry_and_never_cached(api_client, user, settings):
    response = token_for(api_client, user)
    body = response.json()
    assert response["Cache-Control"] == "no-store"
    row = AuthToken.objects.get(user=user)
    assert body["token"] not in (row.digest, row.token_key) and len(row.digest) == 128  # SHA-512 hex
    assert not AuthToken.objects.filter(digest=body["token"]).exists()
    expected = timezone.now() + settings.REST_KNOX["TOKEN_TTL"]
    assert abs((row.expiry - expected).total_seconds()) < 60 and body["expiry"] == row.expiry.isoformat()
    assert works(api_client, body["token"])
    # Past its expiry the token no longer works (and its row goes).
    AuthToken.objects.filter(pk=row.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    assert not works(api_client, body["token"]) and not AuthToken.objects.filter(pk=row.pk).exists()


def test_owner_lists_and_revokes_tokens_through_the_api(api_client, user, other_user):
    first, second = token_for(api_client, user).json(), token_for(api_client, user).json()
    token_for(api_client, other_user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {first['token']}")
    listed = api_client.get("/api/tokens/")
    assert listed.status_code == 200 and listed["Cache-Control"] == "no-store"
    assert {t["id"] for t in listed.json()} == {first["id"], second["id"]}
    assert [t["current"] for t in listed.json() if t["id"] == first["id"]] == [True]
    assert all("token" not in t for t in listed.json())
    # Another user's token id is not the caller's to revoke.
    other_id = AuthToken.objects.get(user=other_user).token_key
    assert api_client.delete(f"/api/tokens/{other_id}/").status_code == 404
    assert api_client.delete(f"/api/tokens/{second['id']}/").status_code == 204
    api_client.credentials()
    assert not works(api_client, second["token"]) and works(api_client, first["token"])
    assert AuthToken.objects.filter(user=other_user).count() == 1


def test_logout_endpoint_revokes_the_token_used_or_all(api_client, user):
    first, second, third = (token_for(api_client, user).json()["token"] for _ in range(3))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert api_client.post("/api/token/logout/").status_code == 204
    api_client.credentials()
    assert not works(api_client, first) and works(api_client, second)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {second}")
    assert api_client.post("/api/token/logout/", {"all": True}, format="json").status_code == 204
    api_client.credentials()
    assert not works(api_client, second) and not works(api_client, third)


def test_password_change_revokes_every_token(client, api_client, user):
    token = token_for(api_client, user).json()["token"]
    client.force_login(user)
    response = client.post(reverse("password_change"), {"old_password": PASSWORD, "new_password1": "another-Pass-987",
                                                         "new_password2": "another-Pass-987"})
    assert response.status_code == 302
    assert not works(api_client, token) and not AuthToken.objects.filter(user=user).exists()


def test_signing_in_again_keeps_tokens(client, api_client, user):
    # Saving the user for other reasons (last_login at sign-in) revokes nothing.
    token = token_for(api_client, user).json()["token"]
    assert client.login(username=user.username, password=PASSWORD)
    assert works(api_client, token)


def test_account_page_creates_shows_once_and_revokes(client_for, api_client, user):
    client = client_for(user)
    page = client.post(reverse("accounts:token_create"))
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    token = page.context["new_token"]
    assert token in page.content.decode() and works(api_client, token)
    listing = client.get(reverse("accounts:account")).content.decode()
    row = AuthToken.objects.get(user=user)
    assert row.token_key in listing and token not in listing
    response = client.post(reverse("accounts:token_revoke", args=[row.token_key]))
    assert response.status_code == 302 and not works(api_client, token)


def test_token_limit_per_user_revokes_the_oldest(api_client, user, settings):
    from knox.settings import knox_settings

    from accounts.services import api_token_create

    limit = knox_settings.TOKEN_LIMIT_PER_USER
    tokens = [api_token_create(user=user)[1] for _ in range(limit + 1)]  # the service the endpoint calls
    assert AuthToken.objects.filter(user=user).count() == limit
    assert not works(api_client, tokens[0]) and works(api_client, tokens[-1])


@pytest.mark.django_db(transaction=True)
def test_migration_hashes_existing_plain_text_tokens(api_client):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("accounts.migrations.0001_hash_existing_api_tokens")
    user = UserFactory()
    old_key = "a3f1" * 10  # DRF's keys: 40 hexadecimal characters
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp, user_id integer)")
        try:
            cursor.execute("INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, %s, %s)",
                           [old_key, timezone.now(), user.pk])
            with connection.schema_editor() as schema_editor:
                migration.hash_existing_tokens(apps, schema_editor)
            cursor.execute("SELECT COUNT(*) FROM authtoken_token")
            assert cursor.fetchone()[0] == 0  # no plain-text key is left
        finally:
            cursor.execute("DROP TABLE authtoken_token")
    row = AuthToken.objects.get(user=user)
    assert row.digest != old_key and row.expiry > timezone.now()
    assert works(api_client, old_key)
