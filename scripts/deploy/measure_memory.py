#!/usr/bin/env python3
"""Peak memory of the Procfile's web, worker and trainer processes, as they run on a dyno.

    .venv/bin/python scripts/deploy/measure_memory.py [--web-concurrency 2] [--worker-concurrency 1,2] \\
        [--trainer-photos-per-species 10] [--json docs/perf/memory.json]

Runs release (collectstatic, migrate: registers the shipped models), then each process type
exactly as the Procfile starts it, with production settings against PostgreSQL, Redis and a
private bucket on a local moto_server:
- `web` with WEB_CONCURRENCY gunicorn workers, after page and API requests and uploads;
- `worker` with each CELERY_WORKER_CONCURRENCY and CLASSIFIER_BATCH_SIZE (4 by default), after
  classifying real photos: 2 x batch size x concurrency photos wait in the queue when it starts,
  so its pool processes run full batches with every active model;
- `trainer` while it runs a whole retrain of the default model (`manage.py retrain --queue`, as
  in production): its recipe (two MobileNetV2 backbones, head then fine-tuning, the LiteRT
  export and its check), on --trainer-photos-per-species photos of each butterflies50 species
  (the memory of a step depends on the batch, not on how many photos there are) and one
  fine-tuning epoch.
Every process of each tree is sampled from /proc every 0.25 s: VmHWM (the kernel's peak RSS per
process), RSS, and PSS (shared pages split between processes, which is what a dyno's memory
adds up to). A dyno's figure is the sum over its processes: the peak of the summed PSS and RSS
samples, and the sum of the processes' VmHWM (an upper bound: peaks need not coincide). Also
whether any process has TensorFlow's libraries mapped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

DYNOS_MB = {"Standard-1X": 512, "Standard-2X": 1024, "Performance-M": 2560, "Performance-L": 14336}
PHOTOS = h.PHOTOS / "test"
HTTPS = {"X-Forwarded-Proto": "https", "Host": "bench.herokuapp.com"}
TRAINING_RUNTIME_MAPPINGS = ("/site-packages/tensorflow/", "/site-packages/keras/", "libtensorflow")


def sample_photos(count: int, offset: int = 0) -> list[Path]:
    folders = sorted(p for p in PHOTOS.iterdir() if p.is_dir())
    return [sorted(folders[i % len(folders)].iterdir())[(i // len(folders)) % 20] for i in range(offset, offset + count)]


def fits(mb: float) -> dict:
    return {name: f"{100 * mb / size:.0f}%" for name, size in DYNOS_MB.items()}


def process_status(pid: int) -> dict:
    """VmHWM, RSS, PSS (MB) of one process, whether TensorFlow is mapped in it, and its command."""
    out = {"pid": pid}
    with contextlib.suppress(OSError):
        out["cmd"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100].strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "VmHWM":
                out["vmhwm_mb"] = round(int(value.split()[0]) / 1024, 1)
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key.lower() + "_mb"] = round(int(value.split()[0]) / 1024, 1)
        maps = Path(f"/proc/{pid}/maps").read_text()
        out["tensorflow_mapped"] = any(marker in maps for marker in TRAINING_RUNTIME_MAPPINGS)
    return out


class Sampler:
    """Samples a Procfile process tree every `interval` s in a thread; keeps each process's last
    status (VmHWM only grows) and the peak of the tree's summed RSS and PSS."""

    def __init__(self, root_pid: int, interval: float = 0.25):
        self.root_pid, self.interval = root_pid, interval
        self.processes: dict[int, dict] = {}
        self.peak = {"rss_mb": 0.0, "pss_mb": 0.0}
        self.activity = ""  # what the process is doing (set by the caller), recorded at the peak
        self.peak_pss_during = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        current = [process_status(pid) for pid in h.descendants(self.root_pid)]
        current = [p for p in current if any(word in p.get("cmd", "") for word in ("python", "gunicorn", "celery"))]
        for p in current:
            seen = self.processes.get(p["pid"], {})
            self.processes[p["pid"]] = {**p, "tensorflow_mapped": p.get("tensorflow_mapped") or seen.get("tensorflow_mapped", False),
                                        "peak_pss_mb": max(p.get("pss_mb", 0), seen.get("peak_pss_mb", 0))}
        pss = round(sum(p.get("pss_mb", 0) for p in current), 1)
        if pss > self.peak["pss_mb"]:
            self.peak_pss_during = self.activity
        for key in self.peak:
            self.peak[key] = max(self.peak[key], round(sum(p.get(key, 0) for p in current), 1))

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def figures(self) -> dict:
        self._stop.set()
        self._thread.join()
        processes = list(self.processes.values())
        vmhwm = round(sum(p.get("vmhwm_mb", 0) for p in processes), 1)
        return {"processes": processes, "peak_rss_mb": self.peak["rss_mb"], "peak_pss_mb": self.peak["pss_mb"],
                "sum_vmhwm_mb": vmhwm, "largest_vmhwm_mb": max((p.get("vmhwm_mb", 0) for p in processes), default=0),
                "tensorflow_mapped": any(p["tensorflow_mapped"] for p in processes),
                **({"peak_pss_during": self.peak_pss_during} if self.peak_pss_during else {}),
                "dyno_use_by_peak_pss": fits(self.peak["pss_mb"]), "dyno_use_by_sum_vmhwm": fits(vmhwm)}


def describe(name: str, figures: dict) -> str:
    return (f"{name}: peak PSS {figures['peak_pss_mb']} MB, peak RSS {figures['peak_rss_mb']} MB, sum of VmHWM "
            f"{figures['sum_vmhwm_mb']} MB (" + ", ".join(f"{p.get('vmhwm_mb', 0):.0f}" for p in figures["processes"])
            + f"), TensorFlow mapped: {figures['tensorflow_mapped']}")


def small_retrain_data(work: Path, per_species: int) -> dict:
    """ImageFolders of symlinks: per_species train photos and half as many test photos of each species."""
    dirs = {"RETRAIN_BASE_DATA_DIR": work / "retrain-base", "RETRAIN_BENCHMARK_DIR": work / "retrain-benchmark"}
    for key, split, n in (("RETRAIN_BASE_DATA_DIR", "train", per_species),
                          ("RETRAIN_BENCHMARK_DIR", "test", max(per_species // 2, 2))):
        for folder in sorted(p for p in (h.PHOTOS / split).iterdir() if p.is_dir()):
            (dirs[key] / folder.name).mkdir(parents=True)
            for photo in sorted(folder.iterdir())[:n]:
                (dirs[key] / folder.name / photo.name).symlink_to(photo)
    return {**dirs, "RETRAIN_WEIGHTS_DIR": h.PHOTOS.parents[1] / "weights", "RETRAIN_CACHE_DIR": work / "feature-cache",
            "RETRAIN_OUTPUT_DIR": work / "retrained", "RETRAIN_SOFT_TIME_LIMIT": 3600}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--web-concurrency", type=int, default=2)
    parser.add_argument("--worker-concurrency", default="1", help="comma-separated CELERY_WORKER_CONCURRENCY values")
    parser.add_argument("--worker-batch-sizes", default="16", help="comma-separated CLASSIFIER_BATCH_SIZE values")
    parser.add_argument("--trainer-photos-per-species", default="10",
                        help="comma-separated: one whole retrain per value (two values give the slope per photo); 0: none")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra config var for every process (e.g. MALLOC_ARENA_MAX=2)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="memory-"))
    figures = {"extra_env": args.env, "load_avg_before": h.load_average(), "web": {}, "worker": {}, "trainer": {}}
    with h.moto_server(work) as bucket, h.scratch_database(os.environ.get("DATABASE_URL", h.DEFAULT_DATABASE_URL)) as db:
        env = h.production_env(
            **bucket, DATABASE_URL=db, REDIS_URL=h.redis_db(os.environ.get("REDIS_URL", h.DEFAULT_REDIS_URL), 12),
            DJANGO_STATIC_ROOT=work / "staticfiles", PORT=h.free_port(), WEB_CONCURRENCY=args.web_concurrency,
            ML_ARTIFACTS_CACHE_DIR=work / "artifact-cache",
            # One account uploads every photo here, faster than the limits let one person.
            RATELIMIT_UPLOAD_USER="10000/m", RATELIMIT_UPLOAD_IP="10000/m",
            **dict(item.split("=", 1) for item in args.env),
        )
        h.manage(env, "collectstatic", "--noinput", "-v", "0")
        h.manage(env, "migrate", "--noinput")
        h.manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
                 "User.objects.create_user('m', password='memory-pass-1', is_staff=True)")
        base = f"http://127.0.0.1:{env['PORT']}"
        uploaded = 0
        web = h.start("web", env, work / "web.log")
        web_sampler = Sampler(web.pid)
        try:
            h.wait_until(lambda: _get(base + "/accounts/login/") == 200, 90, what="gunicorn")
            token = requests.post(base + "/api/token/", json={"username": "m", "password": "memory-pass-1"},
                                  headers=HTTPS, timeout=10).json()["token"]
            auth = {**HTTPS, "Authorization": f"Token {token}"}

            def upload(count: int) -> list[int]:
                nonlocal uploaded
                ids = []
                for photo in sample_photos(count, uploaded):
                    response = requests.post(base + "/api/photos/", headers=auth, timeout=60,
                                             files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
                    response.raise_for_status()
                    ids.append(response.json()["id"])
                uploaded += count
                return ids

            photo_ids = upload(4 * args.web_concurrency)
            for _ in range(10):
                for path in ("/accounts/login/", "/api/photos/", "/species/"):
                    requests.get(base + path, headers=auth, timeout=10)
            web_sampler.sample()
            figures["web"] = {"web_concurrency": args.web_concurrency, **web_sampler.figures()}
            print(describe(f"web (gunicorn, {args.web_concurrency} workers)", figures["web"]), flush=True)

            for concurrency in [int(c) for c in args.worker_concurrency.split(",")]:
                for batch_size in [int(b) for b in args.worker_batch_sizes.split(",")]:
                    photo_ids += upload(2 * batch_size * concurrency)
                    key = f"concurrency {concurrency}, batch {batch_size}"
                    log = work / f"worker-{concurrency}-{batch_size}.log"
                    worker = h.start("worker", {**env, "CELERY_WORKER_CONCURRENCY": str(concurrency),
                                                "CLASSIFIER_BATCH_SIZE": str(batch_size)}, log)
                    sampler = Sampler(worker.pid)
                    try:
                        started = time.monotonic()
                        for photo_id in photo_ids:
                            h.wait_until(lambda photo_id=photo_id: _status(base, photo_id, auth) in {"done", "failed"},
                                         300, what=f"photo {photo_id} (log {log})")
                        drained = time.monotonic() - started
                        time.sleep(1)
                        figures["worker"][key] = {
                            **sampler.figures(), "concurrency": concurrency, "batch_size": batch_size,
                            "photos": len(photo_ids), "seconds_to_drain": round(drained, 1),
                            "failed": sum(_status(base, i, auth) == "failed" for i in photo_ids)}
                        print(describe(f"worker ({key}, {len(photo_ids)} photos)", figures["worker"][key]), flush=True)
                    finally:
                        h.stop(worker)
                    photo_ids = []

            for per_species in [int(n) for n in args.trainer_photos_per_species.split(",") if int(n)]:
                key = f"{per_species} photos per species"
                figures["trainer"][key] = trainer(env, work / f"trainer-{per_species}", per_species, db)
                print(describe(f"trainer (a whole retrain, {key})", figures["trainer"][key]), flush=True)
            runs = sorted(figures["trainer"].values(), key=lambda run: run["base_photos"])
            if len(runs) >= 2:  # what each further training photo adds to the peak
                first, last = runs[0], runs[-1]
                figures["trainer_peak_pss_mb_per_base_photo"] = round(
                    (last["peak_pss_mb"] - first["peak_pss_mb"]) / (last["base_photos"] - first["base_photos"]), 3)
        finally:
            h.stop(web)
    figures["load_avg_after"] = h.load_average()
    h.report(figures, args.json)
    return 0


def trainer(env: dict, work: Path, per_species: int, database_url: str) -> dict:
    """The Procfile's trainer during a whole retrain queued as in production; sampled until it ends."""
    import psycopg2

    work.mkdir()
    data = small_retrain_data(work, per_species)
    trainer_env = {**env, **{k: str(v) for k, v in data.items()}, "ML_ARTIFACTS_CACHE_DIR": str(work / "artifact-cache")}
    base_photos = sum(1 for _ in Path(data["RETRAIN_BASE_DATA_DIR"]).glob("*/*"))
    h.manage(env, "shell", "-c", (
        "from retraining.models import RetrainRun\n"
        "RetrainRun.objects.all().delete()\n"
        "from django.contrib.auth.models import User\n"
        "from retraining import services\n"
        "services.retrain_run_request(requested_by=User.objects.get(username='m'), train_config={'fine_tune_epochs': 1})\n"))
    process = h.start("trainer", trainer_env, work / "trainer.log")
    sampler = Sampler(process.pid)
    started = time.monotonic()

    def run_row():
        assert process.poll() is None, (work / "trainer.log").read_text()[-3000:]
        connection = psycopg2.connect(database_url)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT status, error, stage FROM retraining_retrainrun")
                row = cursor.fetchone()
        finally:
            connection.close()
        sampler.activity = row[2]
        return row if row[0] in ("succeeded", "failed", "cancelled") else None

    try:
        status, error, _ = h.wait_until(run_row, 3600, interval=1, what=f"the retrain (log {work}/trainer.log)")
        seconds = time.monotonic() - started
        time.sleep(0.5)
    finally:
        figures = sampler.figures()
        h.stop(process)
    if status != "succeeded":
        raise RuntimeError(f"the retrain {status}: {error}")
    return {**figures, "photos_per_species": per_species, "base_photos": base_photos, "retrain_seconds": round(seconds, 1),
            "status": status}


def _get(url):
    try:
        return requests.get(url, headers=HTTPS, timeout=2).status_code
    except requests.ConnectionError:
        return None


def _status(base, photo_id, auth):
    return requests.get(f"{base}/api/photos/{photo_id}/", headers=auth, timeout=10).json()["status"]


if __name__ == "__main__":
    sys.exit(main())
