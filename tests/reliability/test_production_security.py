"""Production settings, read in a fresh process from environment variables only: cookies and
sessions are secure, rate limits count the client behind Heroku's router (per IP and per IP +
username), a Content-Security-Policy with no inline script, hashed expiring tokens, 12-character
passwords, no password reset without a mail server, database errors answer 503, and
`check --deploy` stays clean with all of it."""

import json
import re
import subprocess
import sys

from tests.deploy.conftest import ROOT, manage, production_env

BUCKET = {"AWS_STORAGE_BUCKET_NAME": "b", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}

DUMP = """
import json, django
from django.conf import settings
django.setup()
names = ["SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SECURE",
         "CSRF_COOKIE_SAMESITE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_CONTENT_TYPE_NOSNIFF",
         "X_FRAME_OPTIONS", "DEBUG", "MIDDLEWARE", "RATELIMIT_TRUST_X_FORWARDED_FOR", "RATELIMIT_ENABLE",
         "RATELIMIT_LOGIN_IP", "RATELIMIT_UPLOAD_USER", "AUTH_PASSWORD_VALIDATORS", "UPLOAD_MAX_BYTES",
         "RATELIMIT_LOGIN_IP_USERNAME", "RATELIMIT_LOGIN_IP_USERNAME_HOURLY", "CONTENT_SECURITY_POLICY", "PERMISSIONS_POLICY",
         "REST_FRAMEWORK", "PASSWORD_RESET_ENABLED", "EMAIL_BACKEND"]
print(json.dumps({name: getattr(settings, name) for name in names}, default=str))
"""


def test_production_cookies_sessions_and_limits():
    env = production_env(DJANGO_SETTINGS_MODULE="butterflysite.settings", REDIS_URL="redis://127.0.0.1:6379/0", **BUCKET)
    result = subprocess.run([sys.executable, "-c", DUMP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"] and values["SESSION_COOKIE_HTTPONLY"]
    assert values["SESSION_COOKIE_SAMESITE"] == "Lax" and values["CSRF_COOKIE_SAMESITE"] == "Lax"
    assert values["SECURE_SSL_REDIRECT"] and values["SECURE_HSTS_SECONDS"] >= 31536000
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] and values["X_FRAME_OPTIONS"] == "DENY" and not values["DEBUG"]
    assert "django.middleware.csrf.CsrfViewMiddleware" in values["MIDDLEWARE"]
    assert values["MIDDLEWARE"][-1] == "butterflysite.middleware.DatabaseUnavailableMiddleware"
    assert values["RATELIMIT_TRUST_X_FORWARDED_FOR"] and values["RATELIMIT_ENABLE"]
    assert values["RATELIMIT_LOGIN_IP"] and values["RATELIMIT_UPLOAD_USER"]
    assert len(values["AUTH_PASSWORD_VALIDATORS"]) == 4
    minimum = {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}}
    assert minimum in values["AUTH_PASSWORD_VALIDATORS"]
    # Sign-in limited per IP and per IP + username (never per username alone: no lock-out of the owner).
    assert values["RATELIMIT_LOGIN_IP_USERNAME"] and values["RATELIMIT_LOGIN_IP_USERNAME_HOURLY"]
    # No inline script may run; Permissions-Policy, no-store and control-character refusals are on.
    assert values["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]["script-src"] == ["'self'"]
    assert "https://b.s3.amazonaws.com" in values["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]["img-src"]
    for middleware in ("csp.middleware.CSPMiddleware", "butterflysite.middleware.PrivacyHeadersMiddleware",
                       "butterflysite.middleware.ControlCharacterMiddleware"):
        assert middleware in values["MIDDLEWARE"]
    assert "camera=()" in values["PERMISSIONS_POLICY"]
    # Hashed, expiring tokens only; no password reset without a mail server.
    assert values["REST_FRAMEWORK"]["DEFAULT_AUTHENTICATION_CLASSES"][0] == "knox.auth.TokenAuthentication"
    assert "rest_framework.authentication.TokenAuthentication" not in values["REST_FRAMEWORK"]["DEFAULT_AUTHENTICATION_CLASSES"]
    assert values["PASSWORD_RESET_ENABLED"] is False and values["EMAIL_BACKEND"].endswith("console.EmailBackend")
    assert values["UPLOAD_MAX_BYTES"] == 10 * 1024 * 1024


def test_check_deploy_is_clean_with_rate_limits_and_error_handlers():
    result = manage(production_env(REDIS_URL="redis://127.0.0.1:6379/0", **BUCKET), "check", "--deploy")
    output = result.stdout + result.stderr
    assert "System check identified no issues" in output, output
    assert not re.search(r"\((security|urls|django_ratelimit|csp)\.[WE]\d+\)", output), output
