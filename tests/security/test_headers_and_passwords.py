"""Headers (a Content-Security-Policy with no inline scripts, Permissions-Policy, no-store on
credentials and private pages), passwords of at least 12 characters, password reset by email
(console in development, SMTP from the environment in production, off without one) and
rate-limited, and permission checks on the retraining admin's views."""

import re
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse

from tests.classifier.factories import PhotoFactory, UserFactory
from tests.deploy.conftest import ROOT, production_env

TEMPLATES = [path for folder in ("templates", "accounts/templates") for path in (ROOT / folder).rglob("*.html")]


def directives(response) -> dict:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in (p.strip() for p in policy.split(";")) if part}


def test_every_page_has_a_policy_that_allows_no_inline_script(client_for, user):
    client = client_for(user)
    photo = PhotoFactory(owner=user)
    for url in ("/", "/upload/", f"/photos/{photo.pk}/", "/accounts/", "/accounts/login/", "/accounts/password_change/"):
        response = client.get(url)
        assert response.status_code == 200, url
        policy = directives(response)
        assert policy["script-src"] == ["'self'"] and policy["object-src"] == ["'none'"], url
        assert policy["frame-ancestors"] == ["'none'"] and policy["default-src"] == ["'self'"]
        assert "camera=()" in response["Permissions-Policy"] and "geolocation=()" in response["Permissions-Policy"]
        # No inline script in what was rendered: every <script> has a src, no on* handler attribute.
        html = response.content.decode()
        assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html)), url
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), url


def test_no_template_has_an_inline_script_or_handler():
    assert TEMPLATES
    for path in TEMPLATES:
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"inline <script> in {path}"
        assert not re.search(r"<[^>]+\son(click|change|submit|load|input|keydown|keyup)\s*=", text), path


def test_private_pages_and_credentials_are_no_store(client_for, api_client, user):
    client = client_for(user)
    photo = PhotoFactory(owner=user)
    for url in ("/", f"/photos/{photo.pk}/", f"/photos/{photo.pk}/result/", "/accounts/", "/upload/", "/admin/login/"):
        assert "no-store" in client.get(url)["Cache-Control"], url
    api_client.force_authenticate(user)
    assert api_client.get("/api/photos/")["Cache-Control"] == "no-store"
    assert api_client.get(f"/api/photos/{photo.pk}/")["Cache-Control"] == "no-store"
    # A photo's own file keeps its private, short cache (the view sets it).
    assert client.get(f"/photos/{photo.pk}/thumbnail.jpg")["Cache-Control"].startswith("private")


def test_passwords_need_twelve_characters(client, db):
    response = client.post(reverse("classifier:signup"), {"username": "newbie", "password1": "Abcdefgh-19", "password2": "Abcdefgh-19"})
    assert response.status_code == 200 and "at least 12 characters" in response.content.decode()
    response = client.post(reverse("classifier:signup"), {"username": "newbie", "password1": "Abcdefgh-190", "password2": "Abcdefgh-190"})
    assert response.status_code == 302


def test_password_reset_sends_a_working_link_and_is_rate_limited(client, user, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert "Forgot your password?" in client.get(reverse("login")).content.decode()
    response = client.post(reverse("password_reset"), {"email": user.email})
    assert response.status_code == 302 and len(mail.outbox) == 1
    link = re.search(r"https?://[^/\s]+(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form_url = client.get(link).url  # Django swaps the token for a session key, then shows the form
    response = client.post(form_url, {"new_password1": "brand-New-pass-42", "new_password2": "brand-New-pass-42"})
    assert response.status_code == 302 and client.login(username=user.username, password="brand-New-pass-42")
    # At most RATELIMIT_PASSWORD_RESET_IP (5 an hour) per address: mail bombing stops.
    codes = [client.post(reverse("password_reset"), {"email": user.email}).status_code for _ in range(5)]
    assert codes == [302, 302, 302, 302, 429] and len(mail.outbox) == 5


DUMP_EMAIL = """
import json, django
from django.conf import settings
django.setup()
from django.urls import NoReverseMatch, reverse
try:
    reset = reverse("password_reset")
except NoReverseMatch:
    reset = None
print(json.dumps({"backend": settings.EMAIL_BACKEND, "reset": reset, "host": getattr(settings, "EMAIL_HOST", "")}))
"""


@pytest.mark.parametrize("email, backend, reset", [
    ({}, "django.core.mail.backends.console.EmailBackend", None),
    ({"EMAIL_HOST": "smtp.example.org", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p"},
     "django.core.mail.backends.smtp.EmailBackend", "/accounts/password_reset/"),
])
def test_production_password_reset_needs_smtp(email, backend, reset):
    env = production_env(DJANGO_SETTINGS_MODULE="butterflysite.settings", AWS_STORAGE_BUCKET_NAME="b",
                         AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="secret", **email)
    result = subprocess.run([sys.executable, "-c", DUMP_EMAIL], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    import json

    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["backend"] == backend and values["reset"] == reset


def test_retrain_views_check_permissions(client, db):
    from retraining.models import RetrainRun

    staff = UserFactory(is_staff=True)  # staff, but no permission on retrain runs
    client.force_login(staff)
    urls = [reverse("admin:retraining_retrainrun_image", args=[1, "candidate"]),
            reverse("admin:retraining_retrainrun_export"), reverse("admin:retraining_retrainrun_start"),
            reverse("admin:retraining_retrainrun_promote", args=[1])]
    for url in urls:
        assert client.get(url).status_code == 403, url
    staff.user_permissions.add(Permission.objects.get(codename="view_retrainrun"))
    # With the view permission the image view looks the run up (none here: 404), the others still refuse.
    assert client.get(urls[0]).status_code == 404
    assert client.get(urls[1]).status_code == 403
    assert not RetrainRun.objects.exists()
