"""The Heroku setup end to end, on this machine: the Procfile's release, web and worker commands,
production settings from environment variables only, PostgreSQL, Redis, and a private bucket on
a real S3-compatible server (moto_server, its own process, spoken to over HTTP).

Upload through the API, classify in the worker (which reads the photo back from the bucket),
view through the site (a redirect to a short-lived signed URL, for the owner only), delete
(objects leave the bucket).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from scripts.harness import procfile_command
from tests.deploy.conftest import HOST, ROOT, bucket_env, free_port, manage, production_env, stop, wait_until

pytestmark = pytest.mark.deploy


HTTPS = {"X-Forwarded-Proto": "https", "Host": HOST}  # what Heroku's router adds


class Browser:
    """Cookies by hand: production cookies are Secure, and this test talks plain HTTP to gunicorn
    behind a pretend TLS-terminating router, as dynos do."""

    def __init__(self, base: str):
        self.base = base
        self.cookies: dict[str, str] = {}

    def request(self, method, path, **kwargs):
        headers = {**HTTPS, **kwargs.pop("headers", {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = requests.request(method, self.base + path, headers=headers, allow_redirects=False, timeout=30, **kwargs)
        for cookie in response.raw.headers.getlist("Set-Cookie"):
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
            assert "Secure" in cookie, f"cookie {name} is not Secure"
        return response

    def login(self, username, password):
        page = self.request("GET", "/accounts/login/")
        assert page.status_code == 200, page.status_code
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = self.request(
            "POST", "/accounts/login/", data={"username": username, "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"https://{HOST}/accounts/login/"},
        )
        assert response.status_code == 302, response.text[:500]


@pytest.fixture
def site(bucket, postgres_database, redis_url, tmp_path):
    env = production_env(
        **bucket_env(bucket), DATABASE_URL=postgres_database, REDIS_URL=redis_url,
        ML_ARTIFACTS_CACHE_DIR=tmp_path / "artifact-cache", PORT=free_port(), WEB_CONCURRENCY=1,
        CELERY_WORKER_CONCURRENCY=1, DJANGO_STATIC_ROOT=tmp_path / "staticfiles",
    )
    # The build step (Heroku's Python buildpack runs collectstatic), then the release phase.
    manage(env, "collectstatic", "--noinput", "-v", "0")
    assert list((tmp_path / "staticfiles").rglob("*.css.br")), "whitenoise should pre-compress"
    release = subprocess.run(["bash", "-c", procfile_command("release")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert release.returncode == 0, release.stdout + release.stderr
    manage(env, "shell", "-c", (
        "from django.contrib.auth.models import User\n"
        "User.objects.create_user('alice', password='alice-pass-123')\n"
        "User.objects.create_user('bob', password='bob-pass-123')\n"
    ))
    logs = {name: tmp_path / f"{name}.log" for name in ("web", "worker")}
    processes = {}
    try:
        for name in ("web", "worker"):
            processes[name] = subprocess.Popen(
                ["bash", "-c", procfile_command(name)], cwd=ROOT, env=env, start_new_session=True,
                stdout=open(logs[name], "wb"), stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{env['PORT']}"

        def web_up():
            assert processes["web"].poll() is None, logs["web"].read_text()[-3000:]
            try:
                return requests.get(base + "/accounts/login/", headers=HTTPS, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(web_up, 60, what="gunicorn")
        yield {"base": base, "env": env, "bucket": bucket, "logs": logs, "processes": processes}
    finally:
        for process in processes.values():
            stop(process)


def objects(bucket) -> dict[str, int]:
    listing = bucket["client"].list_objects_v2(Bucket=bucket["name"])
    return {item["Key"]: item["Size"] for item in listing.get("Contents", [])}


def test_upload_classify_view_delete_against_a_private_bucket(site, butterflies_dir):
    base, bucket = site["base"], site["bucket"]
    photo_path = sorted((butterflies_dir / "test" / "monarch").iterdir())[0]
    photo_bytes = photo_path.read_bytes()

    # http:// is redirected to https:// (Heroku's router sets X-Forwarded-Proto).
    plain = requests.get(base + "/accounts/login/", headers={"Host": HOST}, allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
    assert "max-age=" in requests.get(base + "/accounts/login/", headers=HTTPS, timeout=10).headers["Strict-Transport-Security"]

    # Upload through the API.
    token = requests.post(base + "/api/token/", json={"username": "alice", "password": "alice-pass-123"},
                          headers=HTTPS, timeout=10).json()["token"]
    auth = {**HTTPS, "Authorization": f"Token {token}"}
    created = requests.post(base + "/api/photos/", files={"image": (photo_path.name, photo_bytes, "image/jpeg")},
                            headers=auth, timeout=30)
    assert created.status_code == 202, created.text
    photo_id = created.json()["id"]
    stored = objects(bucket)
    assert len(stored) == 3, stored  # original, display size, thumbnail: in the bucket, not on disk
    assert not (ROOT / "var" / "media" / "originals").exists() or not any(
        p.name in {Path(k).name for k in stored} for p in (ROOT / "var" / "media" / "originals").iterdir()
    )

    # The worker (another process) reads the photo back from the bucket and classifies it.
    def classified():
        data = requests.get(f"{base}/api/photos/{photo_id}/", headers=auth, timeout=10).json()
        assert data["status"] != "failed", (data, site["logs"]["worker"].read_text()[-3000:])
        return data if data["status"] == "done" else None

    data = wait_until(classified, 180, interval=0.5, what="the worker to classify the photo")
    assert data["predictions"][0]["top"][0]["label"] == "monarch"

    # Objects are private: no URL without a signature works.
    original_key = next(k for k in stored if k.startswith("originals/"))
    assert requests.get(f"{bucket['endpoint']}/{bucket['name']}/{original_key}", timeout=10).status_code == 403
    assert bucket["client"].get_object(Bucket=bucket["name"], Key=original_key)["Body"].read() == photo_bytes

    # The owner's browser gets a short-lived signed URL...
    alice = Browser(base)
    alice.login("alice", "alice-pass-123")
    page = alice.request("GET", f"/photos/{photo_id}/")
    assert page.status_code == 200 and "monarch" in page.text.lower()
    # Static files: hashed names, served compressed and cached for ever by whitenoise.
    css = re.search(r'href="(/static/css/site\.[0-9a-f]{12}\.css)"', page.text).group(1)
    static = requests.get(base + css, headers={**HTTPS, "Accept-Encoding": "br, gzip"}, timeout=10)
    assert static.status_code == 200 and static.headers["Content-Encoding"] in {"br", "gzip"}
    assert "immutable" in static.headers["Cache-Control"]
    redirect = alice.request("GET", f"/photos/{photo_id}/original.jpg")
    assert redirect.status_code == 302, redirect.status_code
    signed = redirect.headers["Location"]
    # Cached no longer than the signed URL it points to stays valid (AWS_QUERYSTRING_EXPIRE, 300 s).
    assert redirect.headers["Cache-Control"] == "private, max-age=150", redirect.headers["Cache-Control"]
    query = parse_qs(urlsplit(signed).query)
    assert urlsplit(signed).path == f"/{bucket['name']}/{original_key}"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"][0]
    assert query["X-Amz-Expires"] == ["300"]  # AWS_QUERYSTRING_EXPIRE
    fetched = requests.get(signed, timeout=10)
    assert fetched.status_code == 200 and fetched.content == photo_bytes

    # ...and nobody else gets one.
    bob = Browser(base)
    bob.login("bob", "bob-pass-123")
    assert bob.request("GET", f"/photos/{photo_id}/original.jpg").status_code == 404
    assert bob.request("GET", f"/photos/{photo_id}/").status_code == 404
    assert Browser(base).request("GET", f"/photos/{photo_id}/original.jpg").status_code == 302  # to the login page
    assert "X-Amz" not in Browser(base).request("GET", f"/photos/{photo_id}/original.jpg").headers["Location"]

    # Delete: the row and every object go.
    deleted = requests.delete(f"{base}/api/photos/{photo_id}/", headers=auth, timeout=30)
    assert deleted.status_code == 204
    wait_until(lambda: objects(bucket) == {}, 30, what="the objects to leave the bucket")
    assert requests.get(f"{base}/api/photos/{photo_id}/", headers=auth, timeout=10).status_code == 404
