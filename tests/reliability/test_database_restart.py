"""The database restarting under load: a throwaway PostgreSQL cluster of the test's own is stopped
and started while clients keep using the API and the pages through gunicorn. Requests that hit
the outage get 503 + Retry-After (never a 500), and every request succeeds again soon after."""

import http.cookiejar
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.reliability.conftest import ROOT, api_upload, app_env, sample_photos, start_gunicorn

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

OUTAGE_SECONDS = 3


def _manage(env, *args):
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _session_opener(url, username):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(url + "/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": username, "password": "correct horse battery", "csrfmiddlewaretoken": token}).encode()
    opener.open(urllib.request.Request(url + "/accounts/login/", data=data, headers={"Referer": url + "/accounts/login/"}), timeout=10)
    assert any(cookie.name == "sessionid" for cookie in jar)
    return opener


def test_database_restart_under_load_answers_503_not_500_and_recovers(postgres_cluster, redis_server, processes, tmp_path, butterflies_dir):
    env = app_env(database_url=postgres_cluster.create_database("butterflysite"), broker_url=redis_server.url,
                  media_root=tmp_path / "media", queue=f"nobody-{uuid.uuid4().hex[:8]}",
                  DATABASE_CONN_MAX_AGE=60,  # persistent connections, as in production: they go stale on restart
                  RATELIMIT_UPLOAD_USER="", RATELIMIT_UPLOAD_IP="")  # this test is the load
    _manage(env, "migrate", "--noinput", "-v0")
    token = _manage(env, "shell", "-c", (
        "from django.contrib.auth.models import User; from accounts.services import api_token_create; "
        "print(api_token_create(user=User.objects.create_user('load', password='correct horse battery'))[1])"
    )).strip().splitlines()[-1]
    web, url = start_gunicorn(env, workers=2)
    processes.append(web)
    browser = _session_opener(url, "load")
    photos = sample_photos(butterflies_dir, 4)
    status, body, _ = api_upload(url, token, photos[0])
    assert status == 202
    photo_id = body["id"]

    results: list[tuple[float, str, int, str | None]] = []  # (time, what, status, Retry-After)
    stop = threading.Event()

    def get(what, path, opener=None, headers=None):
        request = urllib.request.Request(url + path, headers=headers or {})
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=20) as response:
                response.read()
                return response.status, response.headers.get("Retry-After")
        except urllib.error.HTTPError as error:
            error.read()
            return error.code, error.headers.get("Retry-After")
        except OSError as error:  # refused, reset: the server itself failed
            return 0, str(error)

    def client(n):
        i = 0
        auth = {"Authorization": f"Token {token}"}
        while not stop.is_set():
            i += 1
            if n % 4 == 0 and i % 3 == 0:
                code, body_, _ = api_upload(url, token, photos[i % len(photos)])
                results.append((time.monotonic(), "upload", code, None))
                continue
            what, path, opener, headers = [
                ("api list", "/api/photos/", None, auth),
                ("api detail", f"/api/photos/{photo_id}/", None, auth),
                ("gallery page", "/", browser, None),
                ("photo page", f"/photos/{photo_id}/", browser, None),
            ][(n + i) % 4]
            code, retry_after = get(what, path, opener, headers)
            results.append((time.monotonic(), what, code, retry_after))
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    outage_start = time.monotonic()
    postgres_cluster.stop("fast")
    time.sleep(OUTAGE_SECONDS)
    postgres_cluster.start()
    back = time.monotonic()
    time.sleep(8)
    stop.set()
    for thread in threads:
        thread.join(30)

    statuses = [r[2] for r in results]
    summary = {code: statuses.count(code) for code in set(statuses)}
    print("database restart:", summary)
    assert 500 not in statuses and 0 not in statuses, f"{summary}\n{web.text(60)}"
    unavailable = [r for r in results if r[2] == 503]
    assert unavailable, f"no request saw the outage: {summary}"
    assert all(r[3] and int(r[3]) > 0 for r in unavailable if r[1] != "upload")
    assert all(outage_start <= r[0] for r in unavailable)
    assert {r[1] for r in unavailable} & {"gallery page", "photo page"} and {r[1] for r in unavailable} & {"api list", "api detail"}
    # Recovered: from 3 s after the database is back, every request succeeds.
    after = [r for r in results if r[0] > back + 3]
    assert len(after) > 20 and all(r[2] in (200, 202) for r in after), [r for r in after if r[2] not in (200, 202)][:5]
    # Every upload that was answered 202 is in the database.
    accepted = sum(1 for r in results if r[1] == "upload" and r[2] == 202) + 1
    count = _manage(env, "shell", "-c", "from classifier.models import Photo; print(Photo.objects.count())").strip().splitlines()[-1]
    assert int(count) == accepted, (count, accepted)
