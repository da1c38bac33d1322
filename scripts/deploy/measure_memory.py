#!/usr/bin/env python3
"""Resident memory of the Procfile's web and worker processes, as they run on a dyno.

    .venv/bin/python scripts/deploy/measure_memory.py [--web-concurrency 2] [--worker-concurrency 1,2]

Runs release (collectstatic, migrate: registers the shipped models), then `web` with
WEB_CONCURRENCY gunicorn workers and `worker` with each CELERY_WORKER_CONCURRENCY, exactly as the
Procfile starts them, with production settings against PostgreSQL, Redis and a private bucket on
a local moto_server. Each process type is exercised first (page and API requests, uploads; the
worker classifies photos, so every active model is loaded in every pool process), then the
resident memory of its whole process tree is read from /proc: RSS (what `ps` shows) and PSS
(shared pages split between processes, which is what a dyno's memory adds up to).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

DYNOS_MB = {"Basic / Standard-1X": 512, "Standard-2X": 1024, "Performance-M": 2560, "Performance-L": 14336}
PHOTOS = h.PHOTOS / "test"
HTTPS = {"X-Forwarded-Proto": "https", "Host": "bench.herokuapp.com"}


def sample_photos(count: int) -> list[Path]:
    folders = sorted(p for p in PHOTOS.iterdir() if p.is_dir())
    return [sorted(folders[i % len(folders)].iterdir())[i // len(folders)] for i in range(count)]


def fits(mb: float) -> dict:
    return {name: f"{100 * mb / size:.0f}%" for name, size in DYNOS_MB.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--web-concurrency", type=int, default=2)
    parser.add_argument("--worker-concurrency", default="1,2")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra config var for web and worker (e.g. MALLOC_ARENA_MAX=2)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="memory-"))
    figures = {"extra_env": args.env, "web": {}, "worker": {}}
    with h.moto_server(work) as bucket, h.scratch_database(os.environ.get("DATABASE_URL", h.DEFAULT_DATABASE_URL)) as db:
        env = h.production_env(
            **bucket, DATABASE_URL=db, REDIS_URL=h.redis_db(os.environ.get("REDIS_URL", h.DEFAULT_REDIS_URL), 12),
            DJANGO_STATIC_ROOT=work / "staticfiles", PORT=h.free_port(), WEB_CONCURRENCY=args.web_concurrency,
            ML_ARTIFACTS_CACHE_DIR=work / "artifact-cache",
            **dict(item.split("=", 1) for item in args.env),
        )
        h.manage(env, "collectstatic", "--noinput", "-v", "0")
        h.manage(env, "migrate", "--noinput")
        h.manage(env, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('m', password='memory-pass-1')")
        base = f"http://127.0.0.1:{env['PORT']}"
        web = h.start("web", env, work / "web.log")
        try:
            h.wait_until(lambda: _get(base + "/accounts/login/") == 200, 90, what="gunicorn")
            token = requests.post(base + "/api/token/", json={"username": "m", "password": "memory-pass-1"},
                                  headers=HTTPS, timeout=10).json()["token"]
            auth = {**HTTPS, "Authorization": f"Token {token}"}
            photo_ids = []
            for photo in sample_photos(4 * args.web_concurrency):
                response = requests.post(base + "/api/photos/", headers=auth, timeout=60,
                                         files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
                response.raise_for_status()
                photo_ids.append(response.json()["id"])
            for _ in range(10):
                for path in ("/accounts/login/", "/api/photos/"):
                    requests.get(base + path, headers=auth, timeout=10)
            web_memory = h.tree_memory(web.pid)
            figures["web"] = {"web_concurrency": args.web_concurrency, **web_memory, "dyno_use": fits(web_memory["rss_mb"])}
            print(f"web (gunicorn, {args.web_concurrency} workers): RSS {web_memory['rss_mb']} MB, PSS {web_memory['pss_mb']} MB", flush=True)

            for concurrency in [int(c) for c in args.worker_concurrency.split(",")]:
                worker_env = {**env, "CELERY_WORKER_CONCURRENCY": str(concurrency)}
                batch = []
                for photo in sample_photos(3 * concurrency):
                    response = requests.post(base + "/api/photos/", headers=auth, timeout=60,
                                             files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
                    batch.append(response.json()["id"])
                worker = h.start("worker", worker_env, work / f"worker-{concurrency}.log")
                try:
                    started = time.monotonic()
                    for photo_id in photo_ids + batch:
                        h.wait_until(lambda photo_id=photo_id: _status(base, photo_id, auth) in {"done", "failed"}, 300,
                                     what=f"photo {photo_id} (log {work}/worker-{concurrency}.log)")
                    time.sleep(2)
                    memory = h.tree_memory(worker.pid)
                    figures["worker"][str(concurrency)] = {**memory, "dyno_use": fits(memory["rss_mb"]),
                                                            "seconds_to_drain": round(time.monotonic() - started, 1)}
                    print(f"worker (concurrency {concurrency}): RSS {memory['rss_mb']} MB, PSS {memory['pss_mb']} MB "
                          f"({len(memory['processes'])} processes: "
                          + ", ".join(f"{p['rss_kb'] // 1024} MB" for p in memory["processes"]) + ")", flush=True)
                finally:
                    h.stop(worker)
                photo_ids = []
        finally:
            h.stop(web)
    h.report(figures, args.json)
    return 0


def _get(url):
    try:
        return requests.get(url, headers=HTTPS, timeout=2).status_code
    except requests.ConnectionError:
        return None


def _status(base, photo_id, auth):
    return requests.get(f"{base}/api/photos/{photo_id}/", headers=auth, timeout=10).json()["status"]


if __name__ == "__main__":
    sys.exit(main())
