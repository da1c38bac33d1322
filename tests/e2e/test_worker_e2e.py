"""End to end: a real photo through the API, a real Celery worker process on the real Redis.

Needs REDIS_URL (CI sets it). The worker subprocess opens the same test database and the same
MEDIA_ROOT as this test, and listens on a queue of its own so no other worker takes the task.
"""

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from classifier.models import ModelVersion, Photo, Prediction
from tests.classifier.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        name = db["NAME"]
        if not name or name == ":memory:" or "mode=memory" in str(name):
            pytest.skip("the worker cannot share an in-memory SQLite test database")
        return f"sqlite:///{Path(name).resolve()}"
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    pytest.skip(f"no e2e support for {connection.vendor}")


@pytest.fixture
def worker(tmp_path, settings):
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("needs REDIS_URL: a live Celery worker on the real Redis (CI sets it)")
    queue = f"e2e-{uuid.uuid4().hex[:12]}"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CLASSIFIER_TASK_QUEUE = queue
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "CLASSIFIER_TASK_QUEUE": queue,
        "DJANGO_SETTINGS_MODULE": "butterflysite.settings",
        "ML_ARTIFACTS_DIR": str(settings.ML_ARTIFACTS_DIR),
        "PYTHONUNBUFFERED": "1",
    }
    celery = Path(sys.executable).parent / "celery"
    command = [str(celery) if celery.exists() else "celery", "-A", "butterflysite", "worker", "-Q", queue,
               "-n", f"{queue}@%h", "--concurrency", "1", "--loglevel", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    process.log = log
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)


@pytest.mark.django_db(transaction=True)
def test_upload_through_api_is_classified_by_a_live_worker(worker, butterflies_dir):
    species = "monarch"
    path = sorted((butterflies_dir / "test" / species).glob("*.jpg"))[0]
    active = list(ModelVersion.objects.filter(is_active=True))
    assert active, "migrate should have registered the shipped model"
    UserFactory(username="e2e")

    client = APIClient()
    token = client.post("/api/token/", {"username": "e2e", "password": "correct horse battery"}, format="json").json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    with path.open("rb") as image:
        response = client.post("/api/photos/", {"image": image}, format="multipart")
    assert response.status_code == 202, response.content
    photo_id = response.json()["id"]

    deadline = time.monotonic() + 240
    body = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/photos/{photo_id}/").json()
        if body["status"] != "pending":
            break
        if worker.poll() is not None:
            break
        time.sleep(1)
    log = "".join(worker.log[-60:])
    assert body.get("status") == "done", f"photo not classified: {body}\n--- worker log ---\n{log}"

    photo = Photo.objects.get(pk=photo_id)
    predictions = {p.model_version_id: p for p in Prediction.objects.filter(photo=photo)}
    assert set(predictions) == {v.pk for v in active}
    for version in active:
        prediction = predictions[version.pk]
        assert prediction.label == species, f"{version}: {prediction.top}"
        assert len(prediction.top) == 5 and prediction.latency_ms > 0
    assert [p["top"][0]["label"] for p in body["predictions"]] == [species] * len(active)
    assert "loaded model" in "".join(worker.log)  # the worker loaded each model once, at start
