"""Upload -> result for a burst of photos, with and without a retrain running, side by side in one run.

The local stack of scripts/run, in a folder of its own (BUTTERFLYSITE_VAR_DIR: SQLite, the
filesystem broker, media, feature cache): the classification worker (`-Q celery`) and the trainer
(scripts/trainer, `-Q retrain`) as separate processes. Each round uploads a burst of real test
photos through `classifier.services.photos_create` (what the upload page calls) and times each
photo until the database shows its result; bursts alternate between an idle trainer and a trainer
busy with a real retrain of the default model (started, then cancelled after the burst). The
retrain's feature cache starts cold, so during a burst it runs the backbones over the training
photos: the heaviest part of a retrain. On this machine both processes share the same CPU cores;
on Heroku the trainer has a dyno of its own.

    .venv/bin/python scripts/retrain_side_by_side.py --photos 20 --rounds 3 --json /tmp/side-by-side.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness as h  # scripts/harness.py: this script's folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)
TEST_PHOTOS = ROOT.parent / "shared" / "data" / "butterflies50" / "test"


def start(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=20, help="photos per burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per condition (idle, retraining), interleaved")
    parser.add_argument("--var-dir", help="the stack's folder (default: a new temporary one)")
    parser.add_argument("--json", help="write every latency and the summary here")
    args = parser.parse_args()

    var_dir = Path(args.var_dir or tempfile.mkdtemp(prefix="side-by-side-"))
    env = {**os.environ, "BUTTERFLYSITE_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "butterflysite.settings",
           "DJANGO_ENV": "development", "PYTHON": str(PYTHON), "PYTHONUNBUFFERED": "1"}
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CLASSIFIER_TASK_QUEUE", "RETRAIN_TASK_QUEUE"):
        env.pop(name, None)
    os.environ.clear()
    os.environ.update(env)
    subprocess.run([str(PYTHON), "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from classifier import services as classifier_services
    from classifier.models import Photo
    from retraining import services as retraining_services
    from retraining.models import RetrainRun

    photos = sorted(p for species in sorted(TEST_PHOTOS.iterdir()) for p in sorted(species.iterdir()))
    photos = photos[:: max(1, len(photos) // ((2 * args.rounds + 1) * args.photos))]
    owner = get_user_model().objects.create_user("side-by-side", password="side-by-side-1")
    worker = start([str(PYTHON.parent / "celery"), "-A", "butterflysite", "worker", "-Q", "celery", "--hostname",
                    "worker@%h", "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                    "--without-heartbeat"], var_dir / "worker.log", env)
    trainer = start(["bash", "scripts/trainer"], var_dir / "trainer.log", env)
    results = {"idle": [], "retraining": []}
    retrain_states = []

    def burst(paths) -> list[float]:
        uploads = [SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/jpeg") for p in paths]
        started = time.monotonic()
        ids = [photo.pk for photo in classifier_services.photos_create(owner=owner, uploads=uploads)]
        done: dict[int, float] = {}

        def all_done():
            for pk in Photo.objects.filter(pk__in=ids, status=Photo.Status.DONE).values_list("pk", flat=True):
                done.setdefault(pk, time.monotonic() - started)
            return len(done) == len(ids)

        h.wait_until(all_done, 600, interval=0.05, what="a burst's results")
        return [done[pk] for pk in ids]

    try:
        burst(photos[: 1])  # the worker is up and has loaded the models
        batches = [photos[1 + i * args.photos: 1 + (i + 1) * args.photos] for i in range(2 * args.rounds)]
        for round_index in range(args.rounds):
            order = ("idle", "retraining") if round_index % 2 == 0 else ("retraining", "idle")
            for condition in order:
                paths = batches.pop()
                if condition == "idle":
                    results["idle"].append(burst(paths))
                    continue
                run = retraining_services.retrain_run_request()
                h.wait_until(lambda run=run: RetrainRun.objects.filter(pk=run.pk, progress__gte=0.05).exists(), 600,
                             what="the retrain to train")
                results["retraining"].append(burst(paths))
                run.refresh_from_db()
                retrain_states.append({"progress": run.progress, "stage": run.stage, "status": run.status})
                retraining_services.retrain_run_cancel(run=run)
                h.wait_until(lambda run=run: RetrainRun.objects.filter(pk=run.pk, status=RetrainRun.Status.CANCELLED).exists(),
                             120, what="the retrain to stop")
    finally:
        h.stop(worker)
        h.stop(trainer)

    summary = {}
    for condition, bursts in results.items():
        pooled = [value for one in bursts for value in one]
        summary[condition] = {"photos": len(pooled), "p50_s": round(statistics.median(pooled), 2),
                              "p95_s": round(h.percentile(pooled, 0.95), 2), "max_s": round(max(pooled), 2),
                              "per_burst_p50_s": [round(statistics.median(one), 2) for one in bursts],
                              "per_burst_p95_s": [round(h.percentile(one, 0.95), 2) for one in bursts]}
    summary["retrain_during_bursts"] = retrain_states
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "latencies_s": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
