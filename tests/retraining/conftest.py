"""Fixtures of the retraining-loop tests: staff, media, and a small real setup (five species of
butterflies50 linked into tmp_path, the small MobileNet of ../shared/weights)."""

from pathlib import Path

import pytest

from tests.classifier.conftest import media_root  # noqa: F401 (autouse: uploads under tmp_path)
from tests.classifier.factories import UserFactory

SMALL_WEIGHTS = "mobilenet_0.50_160_imagenet_no_top.weights.h5"


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True, is_superuser=True, username="reviewer")


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def link_species(source: Path, target: Path, species: str, photos: list[Path]) -> None:
    """Links (never copies) real photos into a test ImageFolder: they stay in ../shared."""
    (target / species).mkdir(parents=True, exist_ok=True)
    for photo in photos:
        (target / species / photo.name).symlink_to(photo)


@pytest.fixture
def eager_celery():
    """Tasks queued with apply_async run at once in this process (no broker, no worker)."""
    from butterflysite.celery import app

    before = {"task_always_eager": app.conf.task_always_eager, "task_eager_propagates": app.conf.task_eager_propagates}
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    try:
        yield app
    finally:
        app.conf.update(**before)


@pytest.fixture
def live_trainer(transactional_db, settings, tmp_path):
    """A real trainer process (the Procfile's `trainer`: `celery worker -Q <retrain queue>
    --concurrency 1`) on this test's database and media, on a retrain queue of its own; the
    retraining settings reach it through the environment (set them before this fixture). Started
    like tests/conftest.py's `live_worker`, which can run beside it as the classification worker."""
    import os
    import subprocess
    import sys
    import threading
    import uuid

    from django.db import connection

    from tests.conftest import ROOT, _database_url

    queue = f"test-retrain-{uuid.uuid4().hex[:12]}"
    settings.MEDIA_ROOT = tmp_path / "media"  # where live_worker puts it too: both see the uploads
    settings.RETRAIN_TASK_QUEUE = queue
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connection),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "RETRAIN_TASK_QUEUE": queue,
        "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        "ML_ARTIFACTS_DIR": str(settings.ML_ARTIFACTS_DIR),
        "PYTHONUNBUFFERED": "1",
    }
    celery = Path(sys.executable).parent / "celery"
    command = [str(celery) if celery.exists() else "celery", "-A", "butterflysite", "worker", "-Q", queue,
               "-n", f"{queue}@%h", "--concurrency", "1", "--max-tasks-per-child", "1", "--loglevel", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process.log = []
    threading.Thread(target=lambda: process.log.extend(iter(process.stdout.readline, "")), daemon=True).start()
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if settings.CELERY_BROKER_URL.startswith("redis"):
            import redis

            redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)
