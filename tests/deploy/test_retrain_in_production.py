"""The retrain path in production, as far as it runs on one machine (docs/deploy.md, "Retraining in
production"): every process is started as its dyno would start it, with production settings,
PostgreSQL, Redis and a private bucket on a local moto_server, and each has a disk of its own.

1. The active model lives only in the bucket (published, registered as a `storage:` reference).
2. Users upload photos (into the bucket) and staff label them.
3. `manage.py retrain --queue` (what `heroku run` or the admin's button does) queues the run on the
   retrain queue; the trainer process (the Procfile's `trainer`, with TensorFlow) fetches the
   active model and the labelled originals from the bucket, trains, publishes the new artifact
   to the bucket and registers its ModelVersion.
4. A light classification worker (the Procfile's `worker` on a slug: TensorFlow and Keras cannot
   be imported) fetches the new version from the bucket and serves it: a new photo gets this
   version's prediction, the same one the artifact gives here, and the worker never mapped
   TensorFlow.

Small on purpose: five butterflies50 species and the 0.5-width MobileNet at 160 px
(tests/retraining/test_loop_e2e.py's small world).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from scripts.harness import descendants, procfile_command
from tests.deploy.conftest import (
    LITERT_MAPPING,
    ROOT,
    bucket_env,
    manage,
    mapped_files,
    production_env,
    stop,
    training_runtime_mapped,
    wait_until,
)
from tests.retraining.conftest import SMALL_WEIGHTS, link_species
from tests.retraining.test_loop_e2e import BASE_PER_SPECIES, RARE, RARE_BASE, SPECIES

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

RETRAIN_QUEUE = "retrain"
N_LABELLED = 8
BASE_NAME = "butterflies_small"
# A slug (requirements.txt) has none of these; on this machine they are shadowed by packages
# that refuse to import, so the light worker runs as it would on a web/worker dyno.
TRAINING_ONLY = ("tensorflow", "keras", "sklearn", "matplotlib")


def shell(env: dict, code: str):
    """Runs `code` in `manage.py shell` (a one-off dyno) and returns what it printed last, as JSON."""
    output = manage(env, "shell", "-c", code, timeout=300).stdout.strip().splitlines()
    return json.loads(output[-1])


def query(database_url: str, sql: str, params=()):
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        connection.close()


def slug_site_packages(folder: Path) -> Path:
    """Packages named like the training runtime that raise ImportError, first on PYTHONPATH."""
    for name in TRAINING_ONLY:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on this dyno (requirements.txt is the slug)')\n")
    return folder


def start(command: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, start_new_session=True,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


@pytest.fixture
def small_data(tmp_path, butterflies_dir, weights_dir):
    """Five species linked from butterflies50 (the rare one with two base photos), their test
    photos as the benchmark, and spare photos for users to upload."""
    base, benchmark, spare = tmp_path / "base", tmp_path / "benchmark", {}
    for species in SPECIES:
        photos = sorted((butterflies_dir / "train" / species).iterdir())
        n = RARE_BASE if species == RARE else BASE_PER_SPECIES
        link_species(butterflies_dir / "train", base, species, photos[:n])
        link_species(butterflies_dir / "test", benchmark, species, sorted((butterflies_dir / "test" / species).iterdir()))
        spare[species] = photos[n:]
    return {"base": base, "benchmark": benchmark, "spare": spare, "weights": weights_dir}


def test_a_trainer_retrains_publishes_and_a_light_worker_serves_the_new_version(
        small_data, bucket, postgres_database, redis_url, tmp_path):
    from ml.predict import Predictor
    from ml.train import BackboneSpec, TrainConfig, train

    feature_cache = tmp_path / "feature-cache"  # shared by the base training and the trainer: only saves time
    env = production_env(**bucket_env(bucket), DATABASE_URL=postgres_database, REDIS_URL=redis_url,
                         RETRAIN_TASK_QUEUE=RETRAIN_QUEUE, CELERY_WORKER_CONCURRENCY=1)
    release = subprocess.run(["bash", "-c", procfile_command("release")], cwd=ROOT, capture_output=True, text=True,
                             env={**env, "ML_ARTIFACTS_CACHE_DIR": str(tmp_path / "release-cache")}, timeout=300)
    assert release.returncode == 0, release.stdout + release.stderr

    # 1. The active model: trained here, published to the bucket, the only active version.
    base_dir = tmp_path / "trained" / BASE_NAME
    train(small_data["base"], [BackboneSpec("mobilenet_0.50_160", str(small_data["weights"] / SMALL_WEIGHTS))],
          TrainConfig(cache_dir=str(feature_cache), progress=False, verbose=0, max_epochs=40, patience=5,
                      learning_rate=3e-3), name=BASE_NAME, out_dir=base_dir)
    one_off = {**env, "ML_ARTIFACTS_CACHE_DIR": str(tmp_path / "one-off-cache")}
    base = shell(one_off, (
        "import json\n"
        "from butterflysite import artifact_store\n"
        "from classifier import services\n"
        "from classifier.models import ModelVersion\n"
        f"reference = artifact_store.publish({str(base_dir)!r}, {BASE_NAME!r})\n"
        "version = services.model_version_register(artifact_dir=reference, active=True, default=True)\n"
        "ModelVersion.objects.exclude(pk=version.pk).update(is_active=False, is_default=False)\n"
        "print(json.dumps({'id': version.pk, 'artifact_path': version.artifact_path}))\n"
    ))
    assert base["artifact_path"] == f"storage:artifacts/{BASE_NAME}"
    shutil.rmtree(base_dir)  # only the bucket has it now

    # 2. Photos of the species the model barely knows, uploaded into the bucket and labelled by staff.
    paths = small_data["spare"][RARE][:N_LABELLED]
    labelled = shell(one_off, (
        "import json\n"
        "from django.contrib.auth.models import User\n"
        "from django.core.files.uploadedfile import SimpleUploadedFile\n"
        "from classifier import services\n"
        "owner = User.objects.create_user('uploader', password='uploader-pass-1')\n"
        "staff = User.objects.create_user('staff', password='staff-pass-1', is_staff=True)\n"
        f"uploads = [SimpleUploadedFile(p.rsplit('/', 1)[-1], open(p, 'rb').read(), content_type='image/jpeg') "
        f"for p in {[str(p) for p in paths]!r}]\n"
        "photos = services.photos_create(owner=owner, uploads=uploads)\n"
        f"services.labels_correct_bulk(photos=photos, new_label={RARE!r}, corrected_by=staff)\n"
        "print(json.dumps([p.pk for p in photos]))\n"
    ))
    assert len(labelled) == N_LABELLED

    # 3. The retrain, queued as `heroku run python manage.py retrain --queue` queues it, runs on the trainer.
    queued = manage(one_off, "retrain", "--queue", "--max-epochs", "20", "--user", "staff")
    assert "queued" in queued.stdout, queued.stdout + queued.stderr
    trainer_env = {**env, "ML_ARTIFACTS_CACHE_DIR": str(tmp_path / "trainer-cache"),
                   "RETRAIN_BASE_DATA_DIR": str(small_data["base"]), "RETRAIN_BENCHMARK_DIR": str(small_data["benchmark"]),
                   "RETRAIN_WEIGHTS_DIR": str(small_data["weights"]), "RETRAIN_OUTPUT_DIR": str(tmp_path / "trainer-disk"),
                   "RETRAIN_CACHE_DIR": str(feature_cache)}
    logs = {name: tmp_path / f"{name}.log" for name in ("trainer", "worker")}
    trainer = start(procfile_command("trainer"), trainer_env, logs["trainer"])
    try:
        def finished():
            assert trainer.poll() is None, logs["trainer"].read_text()[-3000:]
            rows = query(postgres_database, "SELECT status, error, candidate_id, decision FROM retraining_retrainrun")
            return rows[0] if rows and rows[0][0] in ("succeeded", "failed", "cancelled") else None

        status, error, candidate_id, decision = wait_until(finished, 900, interval=1, what="the retrain run")
        assert status == "succeeded", (error, logs["trainer"].read_text()[-3000:])
    finally:
        stop(trainer)
    assert "retraining.tasks.retrain_run_task" in logs["trainer"].read_text()
    # Every labelled original was read back from the bucket: each trained or was held out.
    (training_ids, holdout_ids), = query(postgres_database, "SELECT training_photo_ids, holdout_photo_ids FROM retraining_retrainrun")
    assert sorted(training_ids + holdout_ids) == sorted(labelled) and holdout_ids
    shutil.rmtree(tmp_path / "trainer-disk")  # the trainer dyno's disk goes with it

    (name, artifact_path, active), = query(
        postgres_database, "SELECT name, artifact_path, is_active FROM classifier_modelversion WHERE id = %s", [candidate_id])
    assert name == BASE_NAME and artifact_path.startswith("storage:artifacts/"), artifact_path
    folder = artifact_path.removeprefix("storage:artifacts/")
    listing = bucket["client"].list_objects_v2(Bucket=bucket["name"], Prefix=f"artifacts/{folder}/")
    published = {item["Key"].rsplit("/", 1)[1] for item in listing["Contents"]}
    assert {"model.keras", "model.tflite", "metadata.json"} <= published, published
    if decision != "promoted":  # the rule may refuse a model trained on so few photos; staff promote it anyway
        shell(one_off, (
            "from retraining import services\n"
            "from retraining.models import RetrainRun\n"
            "services.retrain_run_promote(run=RetrainRun.objects.get(), promoted_by=None)\n"
            "print('null')\n"
        ))
    assert query(postgres_database, "SELECT id FROM classifier_modelversion WHERE is_active") == [(candidate_id,)]

    # 4. A light worker, on a disk of its own, serves the new version from the bucket.
    worker_env = {**env, "ML_ARTIFACTS_CACHE_DIR": str(tmp_path / "worker-cache"),
                  "PYTHONPATH": f"{slug_site_packages(tmp_path / 'slug-shadows')}:{env['PYTHONPATH']}"}
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=worker_env, cwd=ROOT, capture_output=True,
                           text=True)
    assert check.returncode != 0 and "not installed on this dyno" in check.stderr
    worker = start(procfile_command("worker"), worker_env, logs["worker"])
    try:
        photo_path = small_data["spare"]["monarch"][0]
        new_photo = shell(one_off, (
            "import json\n"
            "from django.contrib.auth.models import User\n"
            "from django.core.files.uploadedfile import SimpleUploadedFile\n"
            "from classifier import services\n"
            f"upload = SimpleUploadedFile('new.jpg', open({str(photo_path)!r}, 'rb').read(), content_type='image/jpeg')\n"
            "photo, = services.photos_create(owner=User.objects.get(username='uploader'), uploads=[upload])\n"
            "print(json.dumps({'id': photo.pk, 'original': photo.original.name}))\n"
        ))

        def classified():
            assert worker.poll() is None, logs["worker"].read_text()[-3000:]
            rows = query(postgres_database, "SELECT status FROM classifier_photo WHERE id = %s", [new_photo["id"]])
            assert rows[0][0] != "failed", logs["worker"].read_text()[-3000:]
            return rows[0][0] == "done"

        wait_until(classified, 300, interval=0.5, what="the new photo's result")
        predictions = query(postgres_database, "SELECT model_version_id, top FROM classifier_prediction WHERE photo_id = %s",
                            [new_photo["id"]])
        assert [version for version, _ in predictions] == [candidate_id]
        served = predictions[0][1]
        cached = tmp_path / "worker-cache" / folder
        assert {p.name for p in cached.iterdir()} == published  # fetched from the bucket, every file

        # The prediction is this version's: its artifact, served here as the worker serves it,
        # gives the same answer.
        original = bucket["client"].get_object(Bucket=bucket["name"], Key=new_photo["original"])["Body"].read()
        predictor = Predictor.load(cached)
        assert predictor.runtime != "keras"
        expected = predictor.predict([io.BytesIO(original)], top_k=5)[0].top
        assert [item["label"] for item in served] == [item.label for item in expected]
        assert [item["probability"] for item in served] == pytest.approx([item.probability for item in expected], abs=1e-4)

        # The worker never loaded TensorFlow: LiteRT served the model.
        time.sleep(0.5)
        processes = descendants(worker.pid)
        assert {pid: training_runtime_mapped(pid) for pid in processes} == {pid: [] for pid in processes}
        assert any(LITERT_MAPPING in path for pid in processes for path in mapped_files(pid))
        assert "Traceback" not in logs["worker"].read_text()
    finally:
        stop(worker)
