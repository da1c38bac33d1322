"""A NUL or other control character in a parameter, cookie, form field or JSON field answers 400
with a readable message (on PostgreSQL a NUL reached a query and gave a 500), and changes nothing."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.classifier.factories import UserFactory

MESSAGE = "control character"


def test_query_parameter_with_nul_is_a_readable_400(client_for, user):
    client = client_for(user)
    response = client.get("/?species=%00")
    assert response.status_code == 400 and MESSAGE in response.content.decode()
    assert client.get("/?species=monarch%1b").status_code == 400
    assert client.get("/?species%00=x").status_code == 400  # in a name too
    assert client.get("/?species=Danaus%20plexippus%09").status_code == 200  # tab is not refused


def test_token_endpoint_with_nul_in_json_is_a_readable_400(api_client, user):
    response = api_client.post("/api/token/", {"username": "alice\u0000", "password": "x"}, format="json")
    assert response.status_code == 400 and MESSAGE in response.json()["detail"]
    response = api_client.post("/api/token/", {"username": user.username, "password": "x\u0007"}, format="json")
    assert response.status_code == 400 and "JSON field" in response.json()["detail"]
    response = api_client.post("/api/token/", {"username": "alice\u0000", "password": "x"})  # multipart form
    assert response.status_code == 400 and MESSAGE in response.json()["detail"]


def test_sign_in_and_sign_up_forms_with_nul_are_400_and_create_nothing(client, db):
    response = client.post(reverse("login"), {"username": "alice\x00", "password": "x"})
    assert response.status_code == 400 and MESSAGE in response.content.decode()
    response = client.post(reverse("classifier:signup"), {"username": "eve\x00", "password1": "a-Long-pass-123",
                                                          "password2": "a-Long-pass-123"})
    assert response.status_code == 400 and not get_user_model().objects.filter(username__startswith="eve").exists()


def test_admin_changelist_filter_with_nul_is_400(client, db):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    for url in ("/admin/classifier/photo/?label=%00", "/admin/auth/user/?q=%00", "/admin/classifier/photo/?o=1%00"):
        response = client.get(url)
        assert response.status_code == 400 and MESSAGE in response.content.decode(), url
    assert client.get("/admin/classifier/photo/").status_code == 200


def test_cookie_and_path_with_nul_are_400(client, db):
    client.cookies["sessionid"] = "abc\x00def"
    response = client.get("/accounts/login/")
    assert response.status_code == 400 and MESSAGE in response.content.decode()
    del client.cookies["sessionid"]
    assert client.get("/photos/%00/").status_code == 400


@pytest.mark.parametrize("path", ["/api/photos/?page=%00", "/api/tokens/?x=%01"])
def test_api_query_parameters_answer_json(api_client, user, path):
    api_client.force_authenticate(user)
    response = api_client.get(path)
    assert response.status_code == 400 and MESSAGE in response.json()["detail"]
