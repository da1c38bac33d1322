#!/usr/bin/env python3
"""Classifications per second with 1, 2 and 4 worker processes (each one the Procfile's `worker`
line, as separate dynos would run it), on Redis and PostgreSQL, production settings.

    .venv/bin/python scripts/deploy/benchmark_workers.py [--workers 1,2,4] [--photos 300] [--repeats 3]

For each worker count: start that many `worker` processes and wait until each reports ready
(every active model loaded in its pool process), enqueue `--photos` classify tasks for real test photos at once,
and time until the database shows all of them classified. Photos are created beforehand
(their upload-time tasks go to a queue no worker reads), so only classification is timed.
Media is on local disk by default (`--storage s3` puts it on a local moto_server instead), so
the figure is the workers' own throughput. Prints the median of `--repeats` runs per count.
Every run starts from no predictions and checks afterwards that each photo has exactly one per
active model.

Each worker's LiteRT interpreters run as many threads as the process may use CPUs
(ml.predict.litert_interpreter), so on this 2-core machine one worker already uses both cores;
on Heroku each worker dyno brings cores of its own. (The figures in docs/deploy.md, "Scaling
out", were measured when workers served with TensorFlow, where TF_NUM_INTRAOP_THREADS=1 gave
each worker one core.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

PHOTOS = h.PHOTOS / "test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    parser.add_argument("--json")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra config var for the workers (e.g. CLASSIFIER_BATCH_SIZE=8)")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-"))

    with h.scratch_database(os.environ.get("DATABASE_URL", h.DEFAULT_DATABASE_URL)) as db, \
            (h.moto_server(work) if args.storage == "s3" else _nothing()) as bucket:
        storage = bucket or {"DJANGO_ALLOW_LOCAL_MEDIA": "true", "DJANGO_MEDIA_ROOT": work / "media"}
        env = h.production_env(DATABASE_URL=db, REDIS_URL=h.redis_db(os.environ.get("REDIS_URL", h.DEFAULT_REDIS_URL), 11),
                               CELERY_WORKER_CONCURRENCY=1, **storage,
                               **dict(item.split("=", 1) for item in args.env))
        h.manage(env, "migrate", "--noinput")
        # This process creates the photos and enqueues the tasks, with the same settings; its
        # upload-time tasks go to a queue nobody consumes.
        os.environ.clear()
        os.environ.update(env, DJANGO_SETTINGS_MODULE="butterflysite.settings", CLASSIFIER_TASK_QUEUE="bench-parked")
        sys.path.insert(0, str(h.ROOT))
        import django

        django.setup()
        from django.contrib.auth.models import User
        from django.core.files.uploadedfile import SimpleUploadedFile

        from classifier import services
        from classifier.models import Photo, Prediction
        from classifier.selectors import model_version_list_active
        from classifier.tasks import classify_photo

        owner = User.objects.create_user("bench")
        files = sorted(PHOTOS.glob("*/*"))[:: max(1, len(list(PHOTOS.glob("*/*"))) // args.photos)][: args.photos]
        photos = []
        for start in range(0, len(files), 20):
            uploads = [SimpleUploadedFile(p.name, p.read_bytes(), "image/jpeg") for p in files[start:start + 20]]
            photos += services.photos_create(owner=owner, uploads=uploads)
        ids = [p.pk for p in photos]
        models = len(model_version_list_active())
        print(f"{len(ids)} photos created; workers: {counts}, repeats: {args.repeats}", flush=True)

        def classify_all(count: int, repeat: int) -> float:
            """Seconds `count` fresh workers take to classify every photo from scratch."""
            Prediction.objects.filter(photo_id__in=ids).delete()
            Photo.objects.filter(pk__in=ids).update(status=Photo.Status.PENDING, classified_at=None,
                                                    claimed_by="", claim_expires=None)
            logs = [work / f"w{count}-{repeat}-{i}.log" for i in range(count)]
            workers = [h.start("worker", env, log, f"--hostname bench{i}@%h") for i, log in enumerate(logs)]
            try:
                # "ready." comes before the pool process has loaded the models; it logs
                # "loaded model" once per active model (classifier/inference.py).
                h.wait_until(lambda: all(log.read_text(errors="replace").count("loaded model") >= models
                                         for log in logs), 300,
                             what=f"{count} workers to load their {models} models ({work})")
                started = time.monotonic()
                for photo_id in ids:
                    classify_photo.apply_async(args=[photo_id], queue="celery")
                h.wait_until(lambda: Photo.objects.filter(pk__in=ids, status=Photo.Status.DONE).count() == len(ids),
                             600, interval=0.05, what="all photos classified")
                seconds = time.monotonic() - started
            finally:
                for worker in workers:
                    h.stop(worker)
            predictions = Prediction.objects.filter(photo_id__in=ids).count()
            if predictions != len(ids) * models:
                raise SystemExit(f"expected {len(ids) * models} predictions, found {predictions}")
            return seconds

        rates = {count: [] for count in counts}
        loads = {count: [] for count in counts}
        # Rounds of every count, the order rotated each round, so load from others on this
        # shared machine falls on all counts alike rather than on whichever ran last.
        for repeat in range(args.repeats):
            for count in counts[repeat % len(counts):] + counts[:repeat % len(counts)]:
                seconds = classify_all(count, repeat)
                rates[count].append(len(ids) / seconds)
                # The 1-minute load average says whether others were busy meanwhile.
                loads[count].append(h.load_average()[0])
                print(f"  {count} worker(s), round {repeat + 1}: {len(ids)} photos in {seconds:.2f}s"
                      f" = {rates[count][-1]:.2f}/s, load average {loads[count][-1]}", flush=True)
        results = {count: {"median_per_second": round(statistics.median(rates[count]), 2),
                           "runs_per_second": [round(r, 2) for r in rates[count]],
                           "load_avg_1min_after": loads[count]} for count in counts}
        base = results[counts[0]]["median_per_second"]
        for count in counts:
            results[count]["speedup_vs_first"] = round(results[count]["median_per_second"] / base, 2)
        summary = {"cpu_cores": os.cpu_count(), "photos": len(ids), "storage": args.storage, "extra_env": args.env,
                   "workers": results}
        h.report(summary, args.json)
    return 0


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    sys.exit(main())
