"""Production settings, read in a fresh process from nothing but environment variables."""

import json
import re
import subprocess
import sys

import pytest

from tests.deploy.conftest import ROOT, manage, production_env

pytestmark = pytest.mark.deploy

BUCKET = {
    "AWS_STORAGE_BUCKET_NAME": "butterflysite-media",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "example-secret",
}

DUMP = """
import json, django
from django.conf import settings
django.setup()
names = [
    "DEBUG", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "STORAGES", "AWS_STORAGE_BUCKET_NAME",
    "AWS_DEFAULT_ACL", "AWS_QUERYSTRING_AUTH", "AWS_QUERYSTRING_EXPIRE", "AWS_S3_ACCESS_KEY_ID",
    "AWS_S3_REGION_NAME", "CELERY_BROKER_URL", "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT",
    "CELERY_TASK_ACKS_LATE", "CELERY_TASK_REJECT_ON_WORKER_LOST", "CELERY_WORKER_CONCURRENCY",
    "CELERY_WORKER_PREFETCH_MULTIPLIER",
]
out = {name: getattr(settings, name, None) for name in names}
out["DATABASE"] = {k: settings.DATABASES["default"][k] for k in ("ENGINE", "NAME", "HOST")}
out["CACHE"] = settings.CACHES["default"]
out["BROKER_USE_SSL"] = repr(getattr(settings, "CELERY_BROKER_USE_SSL", None))
print(json.dumps(out, default=str))
"""


def read_settings(**env):
    result = subprocess.run(
        [sys.executable, "-c", DUMP], cwd=ROOT, env=production_env(DJANGO_SETTINGS_MODULE="butterflysite.settings", **env),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_prints_no_warnings():
    result = manage(production_env(**BUCKET, REDIS_URL="redis://127.0.0.1:6379/0"), "check", "--deploy")
    output = result.stdout + result.stderr
    assert "System check identified no issues" in output, output
    assert not re.search(r"\(security\.[WE]\d+\)", output), output


def test_check_deploy_flags_a_weak_secret_key():
    # The check above can fail: a short key is reported (so "no warnings" means something).
    env = production_env(**BUCKET)
    env["DJANGO_SECRET_KEY"] = "short"
    result = manage(env, "check", "--deploy", check=False)
    assert "security.W009" in result.stdout + result.stderr


def test_everything_comes_from_the_environment():
    values = read_settings(
        **BUCKET,
        DJANGO_ALLOWED_HOSTS="my-app-1234.herokuapp.com,butterflies.example.org",
        DATABASE_URL="postgres://u:p@db.example.com:5432/d1",
        REDIS_URL="redis://h:6379/0",
        AWS_QUERYSTRING_EXPIRE="120",
        CELERY_WORKER_CONCURRENCY="3",
    )
    assert values["DEBUG"] is False
    assert values["ALLOWED_HOSTS"] == ["my-app-1234.herokuapp.com", "butterflies.example.org"]
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_HSTS_SECONDS"] >= 31536000
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"]
    assert values["DATABASE"] == {"ENGINE": "django.db.backends.postgresql", "NAME": "d1", "HOST": "db.example.com"}
    assert values["CELERY_BROKER_URL"] == "redis://h:6379/0"
    assert values["CACHE"]["LOCATION"] == "redis://h:6379/0"
    assert values["STORAGES"]["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    assert values["STORAGES"]["staticfiles"]["BACKEND"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert values["AWS_DEFAULT_ACL"] is None and values["AWS_QUERYSTRING_AUTH"] is True
    assert values["AWS_QUERYSTRING_EXPIRE"] == 120
    assert values["CELERY_TASK_ACKS_LATE"] and values["CELERY_TASK_REJECT_ON_WORKER_LOST"]
    assert values["CELERY_WORKER_CONCURRENCY"] == 3
    # On Redis a worker busy with a batch reserves nothing more: idle workers take the rest.
    assert values["CELERY_WORKER_PREFETCH_MULTIPLIER"] == 1
    assert 0 < values["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"] < 30  # Heroku kills 30 s after SIGTERM


def test_bucketeer_addon_variables_are_understood():
    values = read_settings(
        BUCKETEER_BUCKET_NAME="bucketeer-0000", BUCKETEER_AWS_ACCESS_KEY_ID="AKIABUCKETEER",
        BUCKETEER_AWS_SECRET_ACCESS_KEY="s", BUCKETEER_AWS_REGION="eu-west-1",
    )
    assert values["AWS_STORAGE_BUCKET_NAME"] == "bucketeer-0000"
    assert values["AWS_S3_ACCESS_KEY_ID"] == "AKIABUCKETEER"
    assert values["AWS_S3_REGION_NAME"] == "eu-west-1"


def test_heroku_key_value_store_tls_urls_work_with_self_signed_certificates():
    values = read_settings(**BUCKET, REDIS_URL="rediss://:pw@ec2-1-2-3-4.compute-1.amazonaws.com:6380")
    assert values["CELERY_BROKER_URL"].startswith("rediss://")
    assert "VerifyMode.CERT_NONE" in values["BROKER_USE_SSL"]
    assert values["CACHE"]["OPTIONS"] == {"ssl_cert_reqs": "none"}


@pytest.mark.parametrize(
    "missing, message",
    [("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY"), ("AWS_STORAGE_BUCKET_NAME", "AWS_STORAGE_BUCKET_NAME")],
)
def test_production_refuses_to_start_without(missing, message):
    env = production_env(**BUCKET)
    env.pop(missing)
    result = manage(env, "check", check=False)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_app_json_names_only_what_the_processes_read_and_sizes_every_process_type():
    app = json.loads((ROOT / "app.json").read_text())
    process_types = {line.split(":")[0] for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line}
    assert set(app["formation"]) == process_types - {"release"}
    readers = "".join((ROOT / path).read_text() for path in ("butterflysite/settings.py", "gunicorn.conf.py"))
    read_by_tensorflow = {"TF_CPP_MIN_LOG_LEVEL"}  # the trainer's TensorFlow reads it itself
    stale = [name for name in app["env"] if f'"{name}"' not in readers and name not in read_by_tensorflow]
    assert stale == [], f"app.json sets config vars nothing reads: {stale}"
    defaults = {name: var["value"] for name, var in app["env"].items() if "value" in var}
    assert defaults["CLASSIFIER_BATCH_SIZE"] == "4" and app["formation"]["worker"]["size"] == "standard-1x"
