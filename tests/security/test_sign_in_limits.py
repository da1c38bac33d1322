"""Every sign-in surface (the sign-in page, the admin's sign-in page, the API token endpoint) is
limited per client IP and per IP + username: a guesser from one address is stopped, and the owner,
from another address, still signs in (a per-username limit let anyone lock the owner out)."""

import pytest
from django.urls import reverse

from tests.classifier.factories import UserFactory

ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _windows_that_do_not_roll_over_mid_test(settings):
    # django-ratelimit counts in fixed windows: a minute's window may end in the middle of a test's
    # 40 requests and start counting again. The counts are the defaults; the windows are an hour.
    settings.RATELIMIT_LOGIN_IP = "30/h"
    settings.RATELIMIT_LOGIN_IP_USERNAME = "10/h"
    settings.RATELIMIT_LOGIN_IP_USERNAME_HOURLY = "30/d"


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


def test_forty_wrong_admin_passwords_from_one_ip_are_limited_and_the_owner_still_signs_in(client, superuser):
    codes = [
        client.post("/admin/login/", {"username": "root", "password": f"guess-{i}"}, REMOTE_ADDR=ATTACKER).status_code
        for i in range(40)
    ]
    # The IP + username limit (10 a minute by default) stops the guessing: the rest are refused unseen.
    assert codes[:10] == [200] * 10 and codes[10:] == [429] * 30, codes
    # The right password from the guesser's address is refused too (no oracle) ...
    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD}, REMOTE_ADDR=ATTACKER)
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert "_auth_user_id" not in client.session
    # ... while the owner, from their own address, signs in to the admin at once.
    response = client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD}, REMOTE_ADDR=OWNER)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.session["_auth_user_id"] == str(superuser.pk)


def test_sign_in_page_and_token_endpoint_share_the_limit_without_locking_the_owner_out(client, api_client, user):
    for i in range(10):
        client.post(reverse("login"), {"username": user.username, "password": f"guess-{i}"}, REMOTE_ADDR=ATTACKER)
    response = api_client.post("/api/token/", {"username": user.username, "password": PASSWORD}, format="json",
                               REMOTE_ADDR=ATTACKER)
    assert response.status_code == 429 and "Too many attempts" in response.json()["detail"]
    response = api_client.post("/api/token/", {"username": user.username, "password": PASSWORD}, format="json",
                               REMOTE_ADDR=OWNER)
    assert response.status_code == 200 and response.json()["token"]
    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD}, REMOTE_ADDR=OWNER)
    assert response.status_code == 302


def test_many_usernames_from_one_ip_hit_the_ip_limit(client, db, settings):
    codes = [client.post("/admin/login/", {"username": f"name{i}", "password": "x"}, REMOTE_ADDR=ATTACKER).status_code
             for i in range(32)]
    assert codes[:30] == [200] * 30 and codes[30:] == [429, 429]


def test_guessing_backs_off_to_the_hourly_window(client, user, settings):
    settings.RATELIMIT_LOGIN_IP_USERNAME = "3/h"  # the short window (a minute by default)
    settings.RATELIMIT_LOGIN_IP_USERNAME_HOURLY = "5/d"  # the long one (an hour by default)
    codes = [client.post(reverse("login"), {"username": user.username, "password": "x"}, REMOTE_ADDR=ATTACKER).status_code
             for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # Once the short window is over (turned off here rather than waited for), the long window
    # still stops the guesser after 5 attempts in all.
    settings.RATELIMIT_LOGIN_IP_USERNAME = ""
    codes = [client.post(reverse("login"), {"username": user.username, "password": "x"}, REMOTE_ADDR=ATTACKER).status_code
             for _ in range(2)]
    assert codes == [200, 429]
