#!/usr/bin/env python3
"""Upload to result, worker cold start, and upload to result while a retrain runs, with real
Celery worker processes started as the Procfile (and scripts/run) starts them, in one run
(docs/performance.md "Upload to result" and "Cold start", docs/deploy.md):

    .venv/bin/python scripts/bench/perf_latency.py [--sequential 30] [--burst 50] [--json docs/perf/latency.json]
    .venv/bin/python scripts/bench/perf_latency.py --configs pg_redis     # one of: embedded, pg_redis
    .venv/bin/python scripts/bench/perf_latency.py --configs embedded,pg_redis --cold-starts 3 \
        --sequential 10 --burst 0 --no-references --retrain-burst 20 --retrain-in pg_redis --json docs/perf/latency.json

Two configurations, each in its own child process of this script:
- embedded: the development defaults (scripts/run), SQLite and kombu's filesystem broker (in a
  temporary folder);
- pg_redis: PostgreSQL (a database `bench_perf`, created and dropped here) and Redis (db 13,
  flushed first), as in production.
For each: migrate (registers the shipped models artifacts/manifest.json lists now), then
1. cold start, --cold-starts times: one photo is uploaded, then a fresh worker (the Procfile's
   `worker` command, concurrency 1) is started; time from starting it to the photo's result, and
   to each "loaded ..." line in its log (models, identifier); the median over the starts;
2. one at a time: --sequential photos, each uploaded once the previous one has its result;
3. burst: --burst photos uploaded back to back (one API request each), then waited for;
4. unless --no-references: the same burst with each CLASSIFIER_BATCH_SIZE of
   --reference-batch-sizes (default 1, the unbatched reference), each a fresh worker; embedded
   only, one at a time again with the filesystem broker polled every second (kombu's default,
   the reference for CELERY_BROKER_POLLING_INTERVAL=0.1);
5. --retrain-burst N (configs in --retrain-in): bursts of N photos with the trainer idle, then
   while a retrain runs on the trainer process (the Procfile's `trainer` command, queue
   RETRAIN_TASK_QUEUE), side by side: idle, retrain, retrain, idle (the retrain is cancelled
   between the last two). The retrain is a real one of the default model on butterflies50/train
   with a cold feature cache, so the trainer computes MobileNetV2 features on every core it
   gets for the whole time; on one machine the two processes share the CPU (on Heroku each
   dyno has its own).
Uploads go through the JSON API in this process (DRF test client: authentication, multipart
parsing, validation, storage of original/display/thumbnail, enqueue on commit; no socket).
A photo's time is from the start of its upload request to its `classified_at` (written by the
worker when every active model's prediction is stored). Real butterflies50 test photos.
Memory: VmHWM (peak RSS) and VmRSS of each worker/trainer process, read from /proc before it is
stopped, and whether TensorFlow's libraries are mapped in it (/proc/<pid>/maps).
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

ROOT = h.ROOT
PHOTOS = h.PHOTOS / "test"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "bench_perf"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
# Mapped by a process that loaded the training runtime (TensorFlow's shared libraries).
TRAINING_RUNTIME_MAPPINGS = ("/site-packages/tensorflow/", "/site-packages/keras/", "libtensorflow")


def process_memory(pid: int) -> dict:
    out = {"pid": pid}
    try:
        out["cmd"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80].strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key.lower() + "_mb"] = round(int(value.split()[0]) / 1024, 1)
        maps = Path(f"/proc/{pid}/maps").read_text()
        out["tensorflow_mapped"] = any(marker in maps for marker in TRAINING_RUNTIME_MAPPINGS)
    except OSError:
        pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float | None:
    return round(h.percentile(values, 0.5), 2) if values else None


class Worker:
    """A Procfile process (`worker` or `trainer`) in its own process group, its log watched for
    "loaded ..." lines (each model, the identifier: classifier/inference.py) and "ready."."""

    def __init__(self, env: dict, log: Path, process_type: str = "worker"):
        self.log = log
        self.started = time.time()
        command = h.procfile_command(process_type).replace("REMAP_SIGTERM=SIGQUIT ", "")
        self.process = subprocess.Popen(["bash", "-c", "exec " + command],
                                        cwd=ROOT, env={**env, "REMAP_SIGTERM": "SIGQUIT"}, start_new_session=True,
                                        stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        self.loaded: list[tuple[float, str]] = []
        self.ready: list[float] = []
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
                at = round(time.time() - self.started, 2)
                if "] loaded " in line:
                    self.loaded.append((at, line.split("] loaded ", 1)[1].split(" from ")[0].strip()))
                if "ready." in line:
                    self.ready.append(at)
            time.sleep(0.02)

    def loaded_models(self) -> int:
        return sum(1 for _, what in self.loaded if what.startswith("model "))

    def cpu_seconds(self) -> float:
        return cpu_seconds(h.descendants(self.process.pid))

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
           if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_", "CLASSIFIER_", "AWS_", "BUCKETEER_",
                                "RETRAIN_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "butterflysite.settings", "BUTTERFLYSITE_VAR_DIR": str(work / "var"),
                "DJANGO_MEDIA_ROOT": str(work / "media"), "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1",
                "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CELERY_WORKER_CONCURRENCY": "1",
                # Every upload here comes from one address, faster than the limits let one client.
                "RATELIMIT_ENABLE": "false",
                # The trainer's disk: a cold feature cache, so a retrain computes features all along.
                "RETRAIN_CACHE_DIR": str(work / "feature-cache"), "RETRAIN_OUTPUT_DIR": str(work / "retrained"),
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
                     "batch_size": settings.CLASSIFIER_BATCH_SIZE,
                     "worker_command": h.procfile_command("worker")}
    clients = []
    for i in range(10):  # uploads rotate over ten accounts, as a burst comes from several people
        user = User.objects.create_user(f"bench{i}", password="correct horse battery")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")
        clients.append(client)
    folders = sorted(p for p in PHOTOS.iterdir() if p.is_dir())
    retrain_here = args.retrain_burst > 0 and config in args.retrain_in.split(",")
    total = (args.cold_starts + args.sequential * 2 + args.burst * (1 + len(args.reference_batch_sizes.split(",")))
             + (5 * args.retrain_burst if retrain_here else 0))
    files = [sorted(folders[i % len(folders)].glob("*.jpg"))[i // len(folders) % 20] for i in range(total)]
    contents = iter([(f.name, f.read_bytes()) for f in files])
    counter = iter(range(10**6))

    figures["uploads_retried_after_503"] = 0

    def upload() -> tuple[int, float]:
        """One API upload; a 503 (the database briefly busy, e.g. SQLite locked by the worker's
        write) is retried after 0.2 s as a client would, counted, and timed from the first try."""
        name, content = next(contents)
        client = clients[next(counter) % len(clients)]
        started = time.time()
        for _ in range(20):
            response = client.post("/api/photos/", {"image": _named(name, content)}, format="multipart")
            if response.status_code != 503:
                break
            figures["uploads_retried_after_503"] += 1
            time.sleep(0.2)
        if response.status_code != 202:
            raise RuntimeError(f"upload answered {response.status_code}: {response.content[:300]!r}")
        return response.json()["id"], started

    def results(uploads: dict[int, float], timeout: float) -> list[float]:
        ids = list(uploads)
        h.wait_until(lambda: Photo.objects.filter(pk__in=ids, status="done").count() == len(ids), timeout,
                     interval=0.025, what=f"{len(ids)} results")
        done = dict(Photo.objects.filter(pk__in=ids).values_list("pk", "classified_at"))
        return [done[i].timestamp() - uploads[i] for i in ids]

    def start_worker(label: str, process_type: str = "worker", **extra) -> Worker:
        return Worker({**env, **{k: str(v) for k, v in extra.items()}}, work / f"{label}.log", process_type)

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
                "photos_per_s": round(n / (last - began), 2), "seconds": [round(t, 3) for t in times]}

    def cold_start(label: str) -> tuple[dict, Worker]:
        """A photo waits in the queue; a fresh worker starts; until its result."""
        first_id, first_upload = upload()
        worker = start_worker(label)
        h.wait_until(lambda: Photo.objects.filter(pk=first_id, status="done").exists(), 300, interval=0.02,
                     what=f"the first result (log {worker.log})")
        classified = Photo.objects.get(pk=first_id).classified_at.timestamp()
        try:
            h.wait_until(lambda: worker.loaded_models() >= active, 10, what="the model log lines")
        except TimeoutError:
            pass  # reported as found: the figure is the first result, the lines only explain it
        models = [at for at, what in worker.loaded if what.startswith("model ")]
        return {"worker_start_to_first_result_s": round(classified - worker.started, 2),
                "worker_start_to_ready_line_s": (worker.ready or [None])[0],
                "worker_start_to_each_loaded_line_s": worker.loaded,
                "worker_start_to_models_loaded_s": models[active - 1] if len(models) >= active else None,
                "upload_to_first_result_s": round(classified - first_upload, 2)}, worker

    # 1. Cold starts; the last worker stays for 2-3.
    starts, worker = [], None
    try:
        for i in range(max(args.cold_starts, 1)):
            if worker is not None:
                worker.stop()
            result, worker = cold_start(f"worker-cold{i}")
            starts.append(result)
            print(f"[{config}] cold start {i + 1}: {json.dumps(result)}", flush=True)
        figures["cold_start"] = {
            "starts": starts,
            "median_worker_start_to_first_result_s": median([s["worker_start_to_first_result_s"] for s in starts]),
            "median_worker_start_to_models_loaded_s": median(
                [s["worker_start_to_models_loaded_s"] for s in starts if s["worker_start_to_models_loaded_s"]]),
        }
        if args.sequential:
            figures["sequential"] = sequential(args.sequential)
            print(f"[{config}] one at a time: {json.dumps(figures['sequential'])}", flush=True)
        if args.burst:
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
            h.wait_until(lambda: worker.loaded_models() >= active, 300, what=f"the {label} worker's models")
            figures[key] = measure()
            print(f"[{config}] {what}: {json.dumps(figures[key])}", flush=True)
        finally:
            worker.stop()

    if not args.no_references and args.burst:
        # 4. Other batch sizes (1: the unbatched reference); the filesystem broker at kombu's
        #    default polling interval.
        for size in [int(n) for n in args.reference_batch_sizes.split(",")]:
            with_worker(f"worker-batch{size}", f"burst_batch_size_{size}",
                        f"burst of {args.burst}, CLASSIFIER_BATCH_SIZE={size}", lambda: burst(args.burst),
                        CLASSIFIER_BATCH_SIZE=size)
    if not args.no_references and args.sequential and figures["broker"] == "filesystem":
        os.environ["CELERY_BROKER_POLLING_INTERVAL"] = "1.0"  # this process only enqueues; harmless
        with_worker("worker-polling1s", "sequential_polling_1s", "one at a time, broker polled every 1 s",
                    lambda: sequential(args.sequential), CELERY_BROKER_POLLING_INTERVAL="1.0")
        os.environ.pop("CELERY_BROKER_POLLING_INTERVAL")

    if retrain_here:
        figures["during_retrain"] = during_retrain(config, args.retrain_burst, start_worker, burst, active)

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


def during_retrain(config: str, n: int, start_worker, burst, active: int) -> dict:
    """Bursts of n photos: trainer idle, retrain running, retrain running, trainer idle again;
    the classification worker and the trainer as the Procfile starts them."""
    from retraining import services as retraining_services
    from retraining.models import RetrainRun

    out: dict = {"trainer_command": h.procfile_command("trainer"), "bursts": []}
    worker = start_worker("worker-retrain")
    trainer = start_worker("trainer", process_type="trainer")
    try:
        h.wait_until(lambda: worker.loaded_models() >= active, 300, what="the worker's models")
        h.wait_until(lambda: trainer.ready, 120, what="the trainer")

        def measured(condition: str, run=None) -> None:
            before = RetrainRun.objects.get(pk=run.pk) if run else None
            cpu = trainer.cpu_seconds(), worker.cpu_seconds()
            result = burst(n)
            result["trainer_cpu_s"] = round(trainer.cpu_seconds() - cpu[0], 2)
            result["worker_cpu_s"] = round(worker.cpu_seconds() - cpu[1], 2)
            after = RetrainRun.objects.get(pk=run.pk) if run else None
            if run:
                assert after.status == RetrainRun.Status.RUNNING, f"the retrain ended during the burst: {after.status}"
                result["retrain_progress"] = [before.progress, after.progress]
                result["retrain_stage"] = after.stage
            out["bursts"].append({"condition": condition, **result})
            print(f"[{config}] burst of {n}, {condition}: p50 {result['p50_s']} s, p95 {result['p95_s']} s, "
                  f"{result['photos_per_s']} photos/s; CPU s used meanwhile: trainer {result['trainer_cpu_s']}, "
                  f"worker {result['worker_cpu_s']}", flush=True)

        burst(n)  # warm-up, not counted: the worker's first batches of this size
        measured("idle")
        run = retraining_services.retrain_run_request()
        started = time.time()
        # Past the trainer's TensorFlow import and the backbones' loading: computing features.
        h.wait_until(lambda: RetrainRun.objects.get(pk=run.pk).progress >= 0.05, 600, interval=0.2,
                     what=f"the retrain to start training (log {trainer.log})")
        out["retrain_request_to_training_s"] = round(time.time() - started, 2)
        time.sleep(10)
        measured("retrain running", run)
        measured("retrain running", run)
        out["trainer_memory"] = trainer.memory()
        cancel = getattr(retraining_services, "retrain_run_cancel", None)
        if cancel is not None:
            cancelled = time.time()
            cancel(run=RetrainRun.objects.get(pk=run.pk))
            h.wait_until(lambda: RetrainRun.objects.get(pk=run.pk).status != RetrainRun.Status.RUNNING, 300,
                         interval=0.1, what="the cancelled retrain to stop")
            out["cancel_to_stopped_s"] = round(time.time() - cancelled, 2)
            out["cancelled_status"] = RetrainRun.objects.get(pk=run.pk).status
        trainer.stop()
        measured("idle")
        out["worker_memory"] = worker.memory()
    finally:
        trainer.stop()
        worker.stop()
    for condition in ("idle", "retrain running"):
        seconds = [t for b in out["bursts"] if b["condition"] == condition for t in b["seconds"]]
        out[condition.replace(" ", "_")] = h.latency_summary(seconds)
    out["p50_ratio_retrain_vs_idle"] = round(out["retrain_running"]["p50_s"] / out["idle"]["p50_s"], 2)
    out["p95_ratio_retrain_vs_idle"] = round(out["retrain_running"]["p95_s"] / out["idle"]["p95_s"], 2)
    print(f"[{config}] idle: {json.dumps(out['idle'])}; retrain running: {json.dumps(out['retrain_running'])}", flush=True)
    return out


def _named(name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="image/jpeg")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="embedded,pg_redis")
    parser.add_argument("--cold-starts", type=int, default=3, help="fresh worker starts timed (the median is reported)")
    parser.add_argument("--sequential", type=int, default=30, help="photos one at a time (0: skip)")
    parser.add_argument("--burst", type=int, default=50, help="photos in the burst (0: skip)")
    parser.add_argument("--no-references", action="store_true",
                        help="skip the other batch sizes and the 1 s broker polling reference")
    parser.add_argument("--reference-batch-sizes", default="1",
                        help="CLASSIFIER_BATCH_SIZE values the burst is repeated with, each with a fresh worker")
    parser.add_argument("--retrain-burst", type=int, default=0,
                        help="photos per burst, idle and while a retrain runs on the trainer (0: skip)")
    parser.add_argument("--retrain-in", default="pg_redis", help="the configs that measure --retrain-burst")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.child_json).write_text(json.dumps(child(args.child, args)))
        return 0
    figures = {"cpu_count": os.cpu_count(), "load_avg_before": h.load_average(), "argv": sys.argv[1:],
               "manifest": json.loads((ROOT / "artifacts" / "manifest.json").read_text()), "configs": {}}
    for config in args.configs.split(","):
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        subprocess.run([sys.executable, __file__, "--child", config, "--child-json", str(out), *sys.argv[1:]],
                       check=True)
        figures["configs"][config] = json.loads(out.read_text())
        out.unlink()
    figures["load_avg_after"] = h.load_average()
    h.report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
