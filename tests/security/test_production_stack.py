"""The issue's probes again, against the production stack as a dyno runs it: gunicorn from the
Procfile with production settings from the environment, PostgreSQL, Redis (rate limits) and a
private bucket on moto_server, spoken to over HTTP behind a pretend TLS-terminating router.

- a NUL in a parameter or JSON field: 400 with a message (it was a 500 on PostgreSQL);
- 40 wrong admin passwords from one address: limited; the owner, from another, signs in;
- a token: hashed, revoked by /api/token/logout/;
- account deletion: every object of the user's photos leaves the bucket; the export holds the originals;
- CSP (images from the bucket's endpoint only), Permissions-Policy, no-store.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import zipfile

import pytest
import requests

from scripts.harness import procfile_command
from tests.classifier.images import image_bytes
from tests.deploy.conftest import HOST, ROOT, bucket_env, free_port, manage, production_env, stop, wait_until

pytestmark = pytest.mark.deploy

HTTPS = {"X-Forwarded-Proto": "https", "Host": HOST}
PASSWORDS = {"root": "root-pass-4567", "alice": "alice-pass-123", "bob": "bob-pass-1234"}


class Browser:
    """Cookies by hand (production cookies are Secure; this talks plain HTTP to gunicorn), from one
    client address (the router's last X-Forwarded-For entry)."""

    def __init__(self, base: str, address: str):
        self.base, self.address, self.cookies = base, address, {}

    def request(self, method, path, **kwargs):
        headers = {**HTTPS, "X-Forwarded-For": self.address, **kwargs.pop("headers", {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = requests.request(method, self.base + path, headers=headers, allow_redirects=False, timeout=30, **kwargs)
        for cookie in response.raw.headers.getlist("Set-Cookie"):
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response

    def post_form(self, path, data, form_path=None):
        page = self.request("GET", form_path or path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        return self.request("POST", path, data={**data, "csrfmiddlewaretoken": token},
                            headers={"Referer": f"https://{HOST}{form_path or path}"})


@pytest.fixture
def stack(bucket, postgres_database, redis_url, tmp_path):
    env = production_env(**bucket_env(bucket), DATABASE_URL=postgres_database, REDIS_URL=redis_url,
                         ML_ARTIFACTS_CACHE_DIR=tmp_path / "artifact-cache", PORT=free_port(), WEB_CONCURRENCY=2,
                         DJANGO_STATIC_ROOT=tmp_path / "staticfiles",
                         # Default counts in windows that cannot roll over in the middle of the test.
                         RATELIMIT_LOGIN_IP="30/h", RATELIMIT_LOGIN_IP_USERNAME="10/h", RATELIMIT_LOGIN_IP_USERNAME_HOURLY="30/d")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    release = subprocess.run(["bash", "-c", procfile_command("release")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert release.returncode == 0, release.stdout + release.stderr
    manage(env, "shell", "-c", (
        "from django.contrib.auth.models import User\n"
        f"User.objects.create_superuser('root', 'root@example.org', {PASSWORDS['root']!r})\n"
        f"User.objects.create_user('alice', 'alice@example.org', {PASSWORDS['alice']!r})\n"
        f"User.objects.create_user('bob', 'bob@example.org', {PASSWORDS['bob']!r})\n"
    ))
    log = tmp_path / "web.log"
    web = subprocess.Popen(["bash", "-c", procfile_command("web")], cwd=ROOT, env=env, start_new_session=True,
                           stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{env['PORT']}"
    try:
        def up():
            assert web.poll() is None, log.read_text()[-3000:]
            try:
                return requests.get(base + "/accounts/login/", headers=HTTPS, timeout=5).status_code == 200
            except requests.RequestException:  # not listening yet, or still loading
                return False

        wait_until(up, 120, what="gunicorn")
        yield {"base": base, "env": env, "bucket": bucket, "log": log}
    finally:
        stop(web)


def objects(bucket) -> set[str]:
    return {item["Key"] for item in bucket["client"].list_objects_v2(Bucket=bucket["name"]).get("Contents", [])}


def token(base, username, address="192.0.2.10"):
    response = requests.post(base + "/api/token/", json={"username": username, "password": PASSWORDS[username]},
                             headers={**HTTPS, "X-Forwarded-For": address}, timeout=10)
    assert response.status_code == 200, response.text
    return response


def upload(base, key):
    response = requests.post(base + "/api/photos/", files={"image": ("p.jpg", image_bytes(), "image/jpeg")},
                             headers={**HTTPS, "Authorization": f"Token {key}"}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_issue_probes_on_the_production_stack(stack):
    base, bucket = stack["base"], stack["bucket"]

    # NUL bytes: 400 with a message on PostgreSQL (they were 500s with a traceback).
    alice = Browser(base, "192.0.2.10")
    assert alice.post_form("/accounts/login/", {"username": "alice", "password": PASSWORDS["alice"]}).status_code == 302
    response = alice.request("GET", "/?species=%00")
    assert response.status_code == 400 and "control character" in response.text
    response = requests.post(base + "/api/token/", data=json.dumps({"username": "alice\u0000", "password": "x"}),
                             headers={**HTTPS, "Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400 and "control character" in response.json()["detail"]
    root = Browser(base, "192.0.2.20")
    assert root.post_form("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORDS["root"]}).status_code == 302
    for url in ("/admin/classifier/photo/?label=%00", "/admin/auth/user/?q=%00"):
        assert root.request("GET", url).status_code == 400, url
    assert "Traceback" not in stack["log"].read_text()

    # 40 wrong admin passwords from one address: limited; the owner from another signs in at once.
    guesser = Browser(base, "203.0.113.66")
    codes = [guesser.post_form("/admin/login/", {"username": "root", "password": f"guess-{i}"}).status_code for i in range(40)]
    assert codes.count(429) >= 29 and codes[:10] == [200] * 10, codes
    assert guesser.post_form("/admin/login/", {"username": "root", "password": PASSWORDS["root"]}).status_code == 429
    owner = Browser(base, "198.51.100.7")
    assert owner.post_form("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORDS["root"]},
                           form_path="/admin/login/").status_code == 302

    # A token: only its digest in PostgreSQL, an expiry, revoked by /api/token/logout/.
    issued = token(base, "alice").json()
    assert issued["expiry"] and token(base, "alice").headers["Cache-Control"] == "no-store"
    stored = manage(stack["env"], "shell", "-c",
                    "from knox.models import AuthToken; print(list(AuthToken.objects.values_list('digest', 'token_key')))")
    assert issued["token"][:15] in stored.stdout and issued["token"] not in stored.stdout
    auth = {**HTTPS, "Authorization": f"Token {issued['token']}"}
    assert requests.post(base + "/api/token/logout/", headers=auth, timeout=10).status_code == 204
    assert requests.get(base + "/api/photos/", headers=auth, timeout=10).status_code == 401

    # Headers: scripts from the site only, images from the site and the bucket's endpoint.
    page = alice.request("GET", "/")
    policy = page.headers["Content-Security-Policy"]
    script_src = policy.split("script-src")[1].split(";")[0]
    assert script_src.strip() == "'self'" and bucket["endpoint"] in policy
    assert "camera=()" in page.headers["Permissions-Policy"] and page.headers["Cache-Control"] == "no-store"

    # Export, then account deletion: every object of alice's photos leaves the bucket; bob's stay.
    alice_key, bob_key = token(base, "alice").json()["token"], token(base, "bob").json()["token"]
    alice_photos = [upload(base, alice_key) for _ in range(2)]
    before_bob = objects(bucket)
    upload(base, bob_key)
    bob_objects = objects(bucket) - before_bob
    assert len(before_bob) == 6 and len(bob_objects) == 3
    export = alice.request("GET", "/accounts/export/")
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    assert sorted(n for n in archive.namelist() if n.startswith("originals/")) == sorted(f"originals/{i}.jpg" for i in alice_photos)
    assert archive.read(f"originals/{alice_photos[0]}.jpg") == image_bytes()
    response = alice.post_form("/accounts/delete/", {"password": PASSWORDS["alice"]})
    assert response.status_code == 302
    assert objects(bucket) == bob_objects, objects(bucket)
    assert requests.get(base + "/api/photos/", headers={**HTTPS, "Authorization": f"Token {alice_key}"}, timeout=10).status_code == 401
