#!/usr/bin/env python3
"""Upload to result, and worker cold start, with a real Celery worker process, in one run
(docs/performance.md, "Upload to result" and "Cold start"):

    .venv/bin/python scripts/bench/perf_latency.py [--sequential 30] [--burst 50] [--json docs/perf/latency.json]
    .venv/bin/python scripts/bench/perf_latency.py --configs pg_redis     # one of: embedded, pg_redis

Two configurations, each in its own child process of this script:
- embedded: the development defaults, SQLite and kombu's filesystem broker (in a temporary folder);
- pg_redis: PostgreSQL (a database `bench_perf`, created and dropped here) and Redis (db 13,
  flushed first), as in production.
For each: migrate (registers the shipped models artifacts/manifest.json lists now), then
1. cold start: one photo is uploaded, then the worker (the Procfile's `worker` command,
   concurrency 1) is started; time from starting it to the photo's result, and to each
   "loaded model" line in its log;
2. one at a time: --sequential photos, each uploaded once the previous one has its result;
3. burst: --burst photos uploaded back to back (one API request each), then waited for;
4. the same burst with CLASSIFIER_BATCH_SIZE=1 (a fresh worker): the unbatched reference;
5. embedded only: one at a time again with the filesystem broker polled every second
   (kombu's default, the reference for CELERY_BROKER_POLLING_INTERVAL=0.1).
Uploads go through the JSON API in this process (DRF test client: authentication, multipart
parsing, validation, storage of original/display/thumbnail, enqueue on commit; no socket).
A photo's time is from the start of its upload request to its `classified_at` (written by the
worker when every active model's prediction is stored). Real butterflies50 test photos.
The worker's peak memory is VmHWM of its pool process (every active model loaded) and of its
main process, read from /proc before it is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

ROOT = h.ROOT
PHOTOS = h.PHOTOS / "test"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "bench_perf"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def process_memory(pid: int) -> dict:
    out = {"pid": pid}
    try:
        out["cmd"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80].strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key.lower() + "_mb"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


class Worker:
    """The Procfile's worker command in its own process group, its log watched for markers."""

    MARKERS = ("loaded model", "ready.")

    def __init__(self, env: dict, log: Path):
        self.log = log
        self.started = time.time()
        self.process = subprocess.Popen(["bash", "-c", "exec " + h.procfile_command("worker").replace("REMAP_SIGTERM=SIGQUIT ", "")],
                                        cwd=ROOT, env={**env, "REMAP_SIGTERM": "SIGQUIT"}, start_new_session=True,
                                        stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        self.seen: dict[str, list[float]] = {marker: [] for marker in self.MARKERS}
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        offset = 0
        while not self._stop.is_set():
            text = self.log.read_text(errors="replace")
            for line in text[offset:].splitlines(keepends=True):
                if not line.endswith("\n"):
                    break
                offset += len(line)
                for marker in self.MARKERS:
                    if marker in line:
                        self.seen[marker].append(round(time.time() - self.started, 2))
            time.sleep(0.02)

    def models_loaded(self, count: int) -> bool:
        return len(self.seen["loaded model"]) >= count

    def memory(self) -> list[dict]:
        processes = [process_memory(pid) for pid in h.descendants(self.process.pid)]
        return [p for p in processes if "celery" in p.get("cmd", "")]

    def stop(self):
        self._stop.set()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def child(config: str, args) -> dict:
    """One configuration, in a process of its own (Django is set up once per process)."""
    work = Path(tempfile.mkdtemp(prefix=f"perf-latency-{config}-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_", "CLASSIFIER_", "AWS_", "BUCKETEER_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "butterflysite.settings", "BUTTERFLYSITE_VAR_DIR": str(work / "var"),
                "DJANGO_MEDIA_ROOT": str(work / "media"), "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1",
                "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CELERY_WORKER_CONCURRENCY": "1",
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
    if config == "pg_redis":
        import psycopg2
        import redis

        admin = psycopg2.connect(PG_ADMIN_URL)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [PG_DATABASE])
            cursor.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}"')
            cursor.execute(f'CREATE DATABASE "{PG_DATABASE}"')
        admin.close()
        redis.Redis.from_url(REDIS_URL).flushdb()
        env.update({"DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DATABASE, "REDIS_URL": REDIS_URL})
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from accounts.services import api_token_create
    from classifier.models import ModelVersion, Photo

    call_command("migrate", verbosity=0)
    active = ModelVersion.objects.filter(is_active=True).count()
    figures: dict = {"config": config, "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
                     "broker": settings.CELERY_BROKER_URL.split("://")[0], "active_models": active,
                     "active_model_names": list(ModelVersion.objects.filter(is_active=True).values_list("name", flat=True)),
                     "batch_size": settings.CLASSIFIER_BATCH_SIZE}
    clients = []
    for i in range(10):  # uploads rotate over ten accounts, as a burst comes from several people
        user = User.objects.create_user(f"bench{i}", password="correct horse battery")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")
        clients.append(client)
    folders = sorted(p for p in PHOTOS.iterdir() if p.is_dir())
    total = 1 + args.sequential * 2 + args.burst * 2
    files = [sorted(folders[i % len(folders)].glob("*.jpg"))[i // len(folders) % 20] for i in range(total)]
    contents = iter([(f.name, f.read_bytes()) for f in files])
    counter = iter(range(10**6))

    def upload() -> tuple[int, float]:
        name, content = next(contents)
        client = clients[next(counter) % len(clients)]
        started = time.time()
        response = client.post("/api/photos/", {"image": _named(name, content)}, format="multipart")
        if response.status_code != 202:
            raise RuntimeError(f"upload answered {response.status_code}: {response.content[:300]!r}")
        return response.json()["id"], started

    def results(uploads: dict[int, float], timeout: float) -> list[float]:
        ids = list(uploads)
        h.wait_until(lambda: Photo.objects.filter(pk__in=ids, status="done").count() == len(ids), timeout,
                     interval=0.025, what=f"{len(ids)} results")
        done = dict(Photo.objects.filter(pk__in=ids).values_list("pk", "classified_at"))
        return [done[i].timestamp() - uploads[i] for i in ids]

    def start_worker(label: str, **extra) -> Worker:
        return Worker({**env, **{k: str(v) for k, v in extra.items()}}, work / f"worker-{label}.log")

    def sequential(n: int) -> dict:
        times = []
        for _ in range(n):
            photo_id, started = upload()
            times += results({photo_id: started}, 120)
        return h.latency_summary(times)

    def burst(n: int) -> dict:
        uploads = {}
        began = time.time()
        for _ in range(n):
            photo_id, started = upload()
            uploads[photo_id] = started
        upload_s = time.time() - began
        times = results(uploads, 600)
        last = max(uploads[i] + t for i, t in zip(uploads, times))
        return {**h.latency_summary(times), "uploads_s": round(upload_s, 2), "makespan_s": round(last - began, 2),
                "photos_per_s": round(n / (last - began), 2)}

    # 1-3: batched worker (CLASSIFIER_BATCH_SIZE default).
    first_id, first_upload = upload()
    worker = start_worker("batched")
    try:
        h.wait_until(lambda: Photo.objects.filter(pk=first_id, status="done").exists(), 300, interval=0.02,
                     what="the first result")
        classified = Photo.objects.get(pk=first_id).classified_at.timestamp()
        h.wait_until(lambda: worker.models_loaded(active), 30, what="the model log lines")
        figures["cold_start"] = {"worker_start_to_first_result_s": round(classified - worker.started, 2),
                                 "worker_start_to_ready_line_s": (worker.seen["ready."] or [None])[0],
                                 "worker_start_to_each_model_loaded_s": worker.seen["loaded model"],
                                 "upload_to_first_result_s": round(classified - first_upload, 2)}
        print(f"[{config}] cold start: {json.dumps(figures['cold_start'])}", flush=True)
        figures["sequential"] = sequential(args.sequential)
        print(f"[{config}] one at a time: {json.dumps(figures['sequential'])}", flush=True)
        figures["burst"] = burst(args.burst)
        print(f"[{config}] burst of {args.burst}: {json.dumps(figures['burst'])}", flush=True)
        figures["worker_memory"] = worker.memory()
        print(f"[{config}] worker memory: {json.dumps(figures['worker_memory'])}", flush=True)
    finally:
        worker.stop()

    def with_worker(label: str, key: str, what: str, measure, **worker_env) -> None:
        """figures[key] = measure() with a fresh worker of `worker_env`, once its models are loaded."""
        worker = start_worker(label, **worker_env)
        try:
            h.wait_until(lambda: worker.models_loaded(active), 300, what=f"the {label} worker's models")
            figures[key] = measure()
            print(f"[{config}] {what}: {json.dumps(figures[key])}", flush=True)
        finally:
            worker.stop()

    # 4: the unbatched reference.
    with_worker("unbatched", "burst_batch_size_1", f"burst of {args.burst}, CLASSIFIER_BATCH_SIZE=1",
                lambda: burst(args.burst), CLASSIFIER_BATCH_SIZE=1)

    # 5: the filesystem broker at kombu's default polling interval.
    if figures["broker"] == "filesystem":
        os.environ["CELERY_BROKER_POLLING_INTERVAL"] = "1.0"  # this process only enqueues; harmless
        with_worker("polling1s", "sequential_polling_1s", "one at a time, broker polled every 1 s",
                    lambda: sequential(args.sequential), CELERY_BROKER_POLLING_INTERVAL="1.0")

    if config == "pg_redis":
        from django.db import connections

        connections.close_all()
        import psycopg2

        admin = psycopg2.connect(PG_ADMIN_URL)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [PG_DATABASE])
            cursor.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}"')
        admin.close()
    return figures


def _named(name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="image/jpeg")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="embedded,pg_redis")
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.child_json).write_text(json.dumps(child(args.child, args)))
        return 0
    figures = {"cpu_count": os.cpu_count(), "load_avg_before": h.load_average(),
               "manifest": json.loads((ROOT / "artifacts" / "manifest.json").read_text()), "configs": {}}
    for config in args.configs.split(","):
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        subprocess.run([sys.executable, __file__, "--child", config, "--child-json", str(out),
                        "--sequential", str(args.sequential), "--burst", str(args.burst)], check=True)
        figures["configs"][config] = json.loads(out.read_text())
        out.unlink()
    figures["load_avg_after"] = h.load_average()
    h.report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
