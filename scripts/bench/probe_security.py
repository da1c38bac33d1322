#!/usr/bin/env python3
"""Probes of issue 13 (items 1, 3, 5, 6, 7 and 8) against the web process as production runs it
(docs/reliability.md, "Sign-in, tokens, input, accounts and headers"):

    flock /tmp/butterflysite-bench.lock .venv/bin/python scripts/bench/probe_security.py [--root /path/to/checkout]

Starts a scratch PostgreSQL database on --postgres, Redis database 5 of --redis (rate limits),
a private bucket on moto_server and the Procfile's `web` command of --root with production
settings, bound to loopback, then reports what each probe got. Client addresses are set the way
Heroku's router does (the last X-Forwarded-For entry). Probes after the sign-in probe use accounts
it did not touch (the old per-username limit locked those for a minute). Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.classifier.images
import harness as h  # noqa: E402
from probe_uploads import HOST, HTTPS, Session, bucket_objects, timed_get  # noqa: E402

PASSWORD = "probe-password-123456"


class From(Session):
    """A browser at one client address."""

    def __init__(self, base: str, address: str):
        super().__init__(base)
        self.address = address

    def request(self, method, path, timeout=60, **kwargs):
        headers = {"X-Forwarded-For": self.address, **kwargs.pop("headers", {})}
        return super().request(method, path, timeout=timeout, headers=headers, **kwargs)

    def post_form(self, path, data, form_path=None):
        token = self.csrf(form_path or path)
        return self.request("POST", path, data={**data, "csrfmiddlewaretoken": token},
                            headers={"Referer": f"https://{HOST}{form_path or path}"})


def shell(env, root, code) -> str:
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]


def api(base, method, path, token=None, address="192.0.2.1", **kwargs):
    headers = {**HTTPS, "X-Forwarded-For": address, **({"Authorization": f"Token {token}"} if token else {})}
    return requests.request(method, base + path, headers=headers, timeout=60, **kwargs)


def new_token(base, username, password=PASSWORD, address="192.0.2.1"):
    response = api(base, "POST", "/api/token/", json={"username": username, "password": password}, address=address)
    return response.json().get("token"), response


def probe_sign_in(base) -> dict:
    # Item 1: 40 wrong admin passwords for a superuser from one address, then the right one from it
    # and from another address.
    guesser = From(base, "203.0.113.66")
    codes = [guesser.post_form("/admin/login/", {"username": "root", "password": f"guess-{i}"}).status_code for i in range(40)]
    same = guesser.post_form("/admin/login/", {"username": "root", "password": PASSWORD}).status_code
    owner = From(base, "198.51.100.7").post_form("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD},
                                                  form_path="/admin/login/").status_code
    # Item 6: 10 bad attempts on /accounts/login/ from one address; the owner's right password from another.
    attacker = From(base, "203.0.113.77")
    bad = [attacker.post_form("/accounts/login/", {"username": "owner", "password": f"x-{i}"}).status_code for i in range(10)]
    owner_page = From(base, "198.51.100.8").post_form("/accounts/login/", {"username": "owner", "password": PASSWORD}).status_code
    owner_token = new_token(base, "owner", address="198.51.100.9")[1].status_code
    return {"admin_40_wrong_statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
            "admin_right_password_same_address": same, "admin_right_password_other_address": owner,
            "login_10_bad_statuses": {str(c): bad.count(c) for c in sorted(set(bad))},
            "owner_login_other_address": owner_page, "owner_token_other_address": owner_token}


def probe_tokens(base, env, root) -> dict:
    # Item 3: a token after an explicit logout, after a password change, and whether the database holds it.
    token, response = new_token(base, "tokens")
    figures = {"token_response_cache_control": response.headers.get("Cache-Control"),
               "token_expiry_in_response": response.json().get("expiry")}
    dump = subprocess.run([sys.executable, "manage.py", "dumpdata"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    figures["token_in_plain_text_in_database"] = token in dump.stdout
    figures["logout_endpoint"] = api(base, "POST", "/api/token/logout/", token).status_code
    figures["token_after_logout"] = api(base, "GET", "/api/photos/", token).status_code
    token, _ = new_token(base, "tokens")
    browser = From(base, "192.0.2.30")
    browser.login("tokens", PASSWORD)
    changed = browser.post_form("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": "Another-pass-98765",
                                                                "new_password2": "Another-pass-98765"})
    figures["password_change"] = changed.status_code
    figures["token_after_password_change"] = api(base, "GET", "/api/photos/", token).status_code
    figures["token_list_endpoint"] = api(base, "GET", "/api/tokens/", new_token(base, "tokens", "Another-pass-98765")[0]).status_code
    return figures


def probe_nul(base, log: Path) -> dict:
    # Item 5: a NUL in a query parameter, a JSON field and an admin filter (on PostgreSQL).
    user = From(base, "192.0.2.40")
    user.login("viewer", PASSWORD)
    root = From(base, "192.0.2.41")
    root.post_form("/admin/login/?next=/admin/", {"username": "root2", "password": PASSWORD}, form_path="/admin/login/")
    figures = {
        "gallery_species_nul": user.request("GET", "/?species=%00").status_code,
        "token_username_nul": requests.post(
            base + "/api/token/", data=json.dumps({"username": "alice\u0000", "password": "x"}),
            headers={**HTTPS, "Content-Type": "application/json", "X-Forwarded-For": "192.0.2.42"}, timeout=60).status_code,
        "admin_photo_filter_nul": root.request("GET", "/admin/classifier/photo/?label=%00").status_code,
        "admin_user_search_nul": root.request("GET", "/admin/auth/user/?q=%00").status_code,
    }
    figures["tracebacks_in_log"] = log.read_text(errors="replace").count("Traceback")
    return figures


def probe_accounts(base, env, root) -> dict:
    # Item 7: a user with 2 photos deleted in the admin: objects left in the bucket; self-service pages.
    token, _ = new_token(base, "leaver")
    from tests.classifier.images import image_bytes

    before = {o["key"] for o in bucket_objects(env)}
    for _ in range(2):
        api(base, "POST", "/api/photos/", token, files={"image": ("p.jpg", image_bytes(), "image/jpeg")})
    stored = {o["key"] for o in bucket_objects(env)} - before
    user_id = shell(env, root, "from django.contrib.auth.models import User; print(User.objects.get(username='leaver').pk)")
    admin = From(base, "192.0.2.50")
    admin.post_form("/admin/login/?next=/admin/", {"username": "root2", "password": PASSWORD}, form_path="/admin/login/")
    deleted = admin.post_form(f"/admin/auth/user/{user_id}/delete/", {"post": "yes"}).status_code
    left = stored & {o["key"] for o in bucket_objects(env)}
    user = From(base, "192.0.2.51")
    user.login("viewer", PASSWORD)
    return {"objects_stored_for_2_photos": len(stored), "admin_user_delete": deleted, "objects_left_after_delete": len(left),
            "self_service_delete_page": user.request("GET", "/accounts/delete/").status_code,
            "export_page": user.request("GET", "/accounts/export/").status_code}


def probe_headers(base) -> dict:
    # Item 8: CSP, Permissions-Policy, no-store, 8-character passwords, password reset, retrain report view.
    user = From(base, "192.0.2.60")
    user.login("viewer", PASSWORD)
    gallery = user.request("GET", "/")
    signup = From(base, "192.0.2.61").post_form("/accounts/signup/", {"username": "short", "password1": "Xk9#mPq2",
                                                                      "password2": "Xk9#mPq2"})
    reset_page = From(base, "192.0.2.62")
    reset_status = reset_page.request("GET", "/accounts/password_reset/").status_code
    resets = []
    if reset_status == 200:
        resets = [reset_page.post_form("/accounts/password_reset/", {"email": "viewer@example.org"}).status_code for _ in range(8)]
    staff = From(base, "192.0.2.63")
    staff.post_form("/admin/login/?next=/admin/", {"username": "staff", "password": PASSWORD}, form_path="/admin/login/")
    return {"content_security_policy": gallery.headers.get("Content-Security-Policy"),
            "permissions_policy": gallery.headers.get("Permissions-Policy"),
            "gallery_cache_control": gallery.headers.get("Cache-Control"),
            "signup_with_8_characters": "accepted" if signup.status_code == 302 else f"refused ({signup.status_code})",
            "password_reset_page": reset_status,
            "password_reset_8_requests": {str(c): resets.count(c) for c in sorted(set(resets))},
            "retrain_report_image_staff_without_permission": staff.request(
                "GET", "/admin/retraining/retrainrun/1/report/candidate.svg").status_code}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=h.ROOT, help="checkout whose Procfile web command runs")
    parser.add_argument("--postgres", default=os.environ.get("DATABASE_URL", h.DEFAULT_DATABASE_URL))
    parser.add_argument("--redis", default=h.DEFAULT_REDIS_URL)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="probe-security-"))
    web = None
    try:
        with h.moto_server(work) as bucket, h.scratch_database(args.postgres) as database_url:
            port = h.free_port()
            env = h.production_env(host=HOST, **bucket, DATABASE_URL=database_url, REDIS_URL=h.redis_db(args.redis, 5),
                                   PORT=port, WEB_CONCURRENCY=2, PYTHONPATH=root, DJANGO_STATIC_ROOT=work / "staticfiles",
                                   ML_ARTIFACTS_CACHE_DIR=work / "artifacts", GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}")
            import redis

            redis.Redis.from_url(env["REDIS_URL"]).flushdb()  # rate-limit counters of an earlier run
            for command in (["collectstatic", "--noinput", "-v", "0"], ["migrate", "--noinput", "-v", "0"]):
                subprocess.run([sys.executable, "manage.py", *command], cwd=root, env=env, check=True,
                               capture_output=True, timeout=600)
            shell(env, root, "from django.contrib.auth.models import User; "
                             f"User.objects.create_superuser('root', 'root@example.org', {PASSWORD!r}); "
                             f"User.objects.create_superuser('root2', 'root2@example.org', {PASSWORD!r}); "
                             f"User.objects.create_user('staff', 'staff@example.org', {PASSWORD!r}, is_staff=True); "
                             + "; ".join(f"User.objects.create_user({u!r}, '{u}@example.org', {PASSWORD!r})"
                                         for u in ("owner", "viewer", "tokens", "leaver")) + "; print('ok')")
            web_command = h.procfile_command("web") if root == h.ROOT else next(
                line.partition(":")[2].strip() for line in (root / "Procfile").read_text().splitlines() if line.startswith("web:"))
            log = work / "web.log"
            web = subprocess.Popen(["bash", "-c", web_command], cwd=root, env=env, start_new_session=True,
                                   stdout=open(log, "wb"), stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            h.wait_until(lambda: timed_get(base, "/accounts/login/", 5)[0] == 200, 120, what="gunicorn")
            git = subprocess.run(["git", "log", "-1", "--format=%h"], cwd=root, capture_output=True, text=True).stdout.strip()
            figures = {"root": str(root), "commit": git or None}
            figures["sign_in"] = probe_sign_in(base)
            figures["tokens"] = probe_tokens(base, env, root)
            figures["nul"] = probe_nul(base, log)
            figures["accounts"] = probe_accounts(base, env, root)
            figures["headers"] = probe_headers(base)
            h.report(figures, args.json)
    finally:
        if web is not None:
            h.stop(web)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
