"""End to end: a real photo through the API, a real Celery worker process on the real Redis.

Needs REDIS_URL (CI sets it). The worker subprocess opens the same test database and the same
MEDIA_ROOT as this test, and listens on a queue of its own so no other worker takes the task.
Once it has classified the photo with every active model, none of its processes has TensorFlow
mapped: classification serves the models' LiteRT exports (issue 15).
"""

import os
import time

import pytest
from rest_framework.test import APIClient

from classifier.models import ModelVersion, Photo, Prediction
from scripts.harness import descendants
from tests.classifier.factories import UserFactory
from tests.deploy.conftest import LITERT_MAPPING, mapped_files, training_runtime_mapped

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def worker(request):
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs REDIS_URL: a live Celery worker on the real Redis (CI sets it)")
    return request.getfixturevalue("live_worker")


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

    # The worker's processes (main and prefork pool) after classifying: no TensorFlow or Keras
    # library mapped; the pool process that ran the models has LiteRT's mapped.
    processes = descendants(worker.pid)
    assert len(processes) >= 2, "the prefork pool process is gone"
    assert {pid: training_runtime_mapped(pid) for pid in processes} == {pid: [] for pid in processes}
    assert any(LITERT_MAPPING in path for pid in processes[1:] for path in mapped_files(pid))
