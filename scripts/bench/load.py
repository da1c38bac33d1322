#!/usr/bin/env python3
"""Load benchmark of the running stack (docs/reliability.md, "Load"):

    flock /tmp/butterflysite-bench.lock .venv/bin/python scripts/bench/load.py [--clients 20] [--photos 500]

Starts, on this machine, the stack as production runs it: PostgreSQL (a fresh database
`bench_load` on the server at --postgres, dropped and created here), a redis-server of its own on a
free port (broker and cache), gunicorn (the Procfile's web command: 2 sync workers) and 2 Celery
workers (the Procfile's worker command, concurrency 1 each, embedded beat). Then --clients
threads, each signed in as its own user with an API token, upload --photos real photos from
../shared/data/butterflies50/test through HTTP (POST /api/photos/, one photo per request) as
fast as they are answered. When every accepted photo has left `pending` (or --timeout passes)
it reports, from the HTTP answers and the database:

- uploads accepted (202), HTTP errors (any other answer or a failed connection),
- photos classified (done, with a prediction from every active model), failed, lost (accepted
  but not classified: no row, or still pending at the end),
- duplicated predictions (more than one row for a photo and model version),
- upload latency p50/p95 (request sent to answer), upload-to-result p50/p95 (request sent to the
  photo's classified_at, written by the worker), classifications per second (classified photos
  over the time from the first upload to the last result; predictions per second likewise).

Rate limits are turned off for the run: every client comes from 127.0.0.1, which in production
would be 20 different addresses (rate limits have their own tests). Everything it started is
stopped at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

ROOT, VENV_BIN = h.ROOT, h.VENV_BIN
PHOTOS = Path(os.environ.get("BUTTERFLYSITE_SHARED_DIR", ROOT.parent / "shared")) / "data" / "butterflies50" / "test"


class Stack:
    """Processes this script started; stop() kills each one's whole process group."""

    def __init__(self, log_dir: Path):
        self.log_dir, self.processes = log_dir, []

    def start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        process.name, process.log_path = name, self.log_dir / f"{name}.log"
        self.processes.append(process)
        return process

    def stop(self):
        for process in reversed(self.processes):
            h.stop(process, timeout=15)


def reset_database(admin_url: str, name: str) -> str:
    import psycopg2

    connection = psycopg2.connect(admin_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def manage(env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def pick_photos(n: int) -> list[Path]:
    species = sorted(p for p in PHOTOS.iterdir() if p.is_dir())
    per_species = [sorted(s.glob("*.jpg")) for s in species]
    photos = [files[i] for i in range(max(map(len, per_species))) for files in per_species if i < len(files)]
    if len(photos) < n:
        raise SystemExit(f"{PHOTOS} has {len(photos)} photos, fewer than --photos {n}")
    return photos[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (concurrency 1 each)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--database", default="bench_load")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to wait for every result")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        raise SystemExit(f"needs real photos in {PHOTOS}")
    photos = pick_photos(args.photos)

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    stack = Stack(work)
    try:
        run(args, photos, work, stack)
    finally:
        stack.stop()


def run(args, photos: list[Path], work: Path, stack: Stack) -> None:
    import psycopg2
    import requests

    redis_port, web_port = h.free_port(), h.free_port()
    stack.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(work)], dict(os.environ))
    database_url = reset_database(args.postgres, args.database)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "butterflysite.settings",
        "DJANGO_ENV": "development",  # production settings also need a bucket and HTTPS; the stack is the same
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "60",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "DJANGO_MEDIA_ROOT": str(work / "media"),
        "RATELIMIT_UPLOAD_IP": "",
        "RATELIMIT_UPLOAD_USER": "",
        "RATELIMIT_LOGIN_IP": "",
        "PORT": str(web_port),
        "WEB_CONCURRENCY": str(args.web_workers),
        "CELERY_WORKER_CONCURRENCY": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    }
    print(f"==> database {args.database}, redis-server :{redis_port}, logs in {work}", flush=True)
    manage(env, "migrate", "--noinput", "-v0")
    tokens = json.loads(manage(env, "shell", "-c", (
        "import json; from django.contrib.auth.models import User; from accounts.services import api_token_create; "
        f"print(json.dumps([api_token_create(user=User.objects.create_user('load%d' % i, password='correct horse battery'))[1] "
        f"for i in range({args.clients})]))"
    )).strip().splitlines()[-1])
    n_models = int(manage(env, "shell", "-c", (
        "from classifier.models import ModelVersion; print(ModelVersion.objects.filter(is_active=True).count())"
    )).strip().splitlines()[-1])

    worker_command = h.procfile_command("worker")
    workers = [stack.start(f"worker{i}", ["bash", "-c", worker_command.replace(
                   "-A butterflysite worker", f"-A butterflysite worker -n bench{i}@%h")], env)
               for i in range(args.workers)]
    stack.start("web", ["bash", "-c", h.procfile_command("web")], env)
    started = time.monotonic()

    def workers_ready():
        for worker in workers:
            if worker.poll() is not None:
                raise SystemExit(f"{worker.name} exited: {worker.log_path.read_text()[-3000:]}")
        return all(w.log_path.read_text().count("loaded model") >= n_models and " ready." in w.log_path.read_text() for w in workers)

    h.wait_until(workers_ready, 600, interval=0.5, what="the Celery workers to load their models")
    h.wait_until(lambda: _answers(f"http://127.0.0.1:{web_port}/accounts/login/"), 60, interval=0.5, what="gunicorn")
    print(f"==> stack up in {time.monotonic() - started:.0f}s: gunicorn x{args.web_workers}, {args.workers} Celery workers, "
          f"{n_models} active models; {args.clients} clients upload {len(photos)} photos", flush=True)

    todo: queue.Queue = queue.Queue()
    for path in photos:
        todo.put(path)
    results: list[dict] = []
    lock = threading.Lock()
    url = f"http://127.0.0.1:{web_port}/api/photos/"

    def client(token: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        while True:
            try:
                path = todo.get_nowait()
            except queue.Empty:
                return
            sent = time.time()
            outcome = {"photo": path.name, "sent": sent}
            try:
                with path.open("rb") as image:
                    response = session.post(url, files={"image": (path.name, image, "image/jpeg")}, timeout=60)
                outcome.update(status=response.status_code, seconds=time.time() - sent)
                if response.status_code == 202:
                    outcome["id"] = response.json()["id"]
                else:
                    outcome["error"] = response.text[:200]
            except requests.RequestException as error:
                outcome.update(status=0, seconds=time.time() - sent, error=str(error)[:200])
            with lock:
                results.append(outcome)

    first_sent = time.time()
    threads = [threading.Thread(target=client, args=(tokens[i % len(tokens)],)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    uploads_done = time.time()
    accepted = {r["id"]: r for r in results if r.get("status") == 202}
    print(f"==> {len(accepted)} of {len(results)} uploads accepted in {uploads_done - first_sent:.1f}s; waiting for results", flush=True)

    connection = psycopg2.connect(database_url)
    connection.autocommit = True

    def pending() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM classifier_photo WHERE status = 'pending'")
            return cursor.fetchone()[0]

    deadline = time.monotonic() + args.timeout
    while pending() and time.monotonic() < deadline:
        time.sleep(1)

    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT p.id, p.status, extract(epoch FROM p.classified_at)::float8, count(pr.id)
            FROM classifier_photo p LEFT JOIN classifier_prediction pr ON pr.photo_id = p.id
            GROUP BY p.id""")
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
        cursor.execute("""
            SELECT coalesce(sum(n - 1), 0) FROM (
                SELECT count(*) AS n FROM classifier_prediction GROUP BY photo_id, model_version_id) AS pairs""")
        duplicated = int(cursor.fetchone()[0])
        cursor.execute("SELECT count(*) FROM classifier_prediction")
        predictions = cursor.fetchone()[0]
    connection.close()

    classified = {i for i, (status, _, n) in rows.items() if status == "done" and n == n_models}
    failed = {i for i, (status, _, _) in rows.items() if status == "failed"}
    lost = [i for i in accepted if i not in rows or rows[i][0] == "pending"]
    to_result = [rows[i][1] - accepted[i]["sent"] for i in accepted if i in classified and rows[i][1]]
    last_result = max((rows[i][1] for i in classified if rows[i][1]), default=first_sent)
    span = last_result - first_sent
    upload_seconds = [r["seconds"] for r in results if r.get("status") == 202]
    http_errors = [r for r in results if r.get("status") != 202]
    figures = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "clients": args.clients, "photos": len(photos), "web_workers": args.web_workers, "celery_workers": args.workers,
        "active_models": n_models,
        "uploads_accepted": len(accepted),
        "http_errors": len(http_errors),
        "photos_classified": len(classified & set(accepted)),
        "photos_failed": len(failed),
        "lost": len(lost),
        "duplicated_predictions": duplicated,
        "predictions": predictions,
        "upload_latency_p50_s": round(h.percentile(upload_seconds, 0.5), 3) if upload_seconds else None,
        "upload_latency_p95_s": round(h.percentile(upload_seconds, 0.95), 3) if upload_seconds else None,
        "upload_to_result_p50_s": round(h.percentile(to_result, 0.5), 2) if to_result else None,
        "upload_to_result_p95_s": round(h.percentile(to_result, 0.95), 2) if to_result else None,
        "upload_phase_s": round(uploads_done - first_sent, 1),
        "first_upload_to_last_result_s": round(span, 1),
        "classifications_per_s": round(len(classified) / span, 2) if span > 0 else None,
        "predictions_per_s": round(len(classified) * n_models / span, 2) if span > 0 else None,
        "uploads_per_s": round(len(accepted) / (uploads_done - first_sent), 2),
        "mean_upload_latency_s": round(statistics.mean(upload_seconds), 3) if upload_seconds else None,
    }
    if http_errors:
        figures["first_errors"] = http_errors[:5]
    if lost:
        figures["lost_ids"] = lost[:20]
    h.report(figures, args.json and str(args.json))
    if lost or duplicated or http_errors:
        raise SystemExit("FAILED: lost, duplicated or HTTP errors above")


def _answers(url: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
