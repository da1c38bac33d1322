""""Retrain now" runs in a real Celery worker process, and its progress shows on the run's page
while it trains."""

import time

import pytest
from django.urls import reverse

from classifier import services as classifier_services
from retraining.models import RetrainRun
from tests.classifier.factories import UserFactory
from tests.retraining.test_loop_e2e import RARE, shared_feature_cache, small_world  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

RETRAIN_SETTINGS = ["RETRAIN_BASE_DATA_DIR", "RETRAIN_BENCHMARK_DIR", "RETRAIN_WEIGHTS_DIR", "RETRAIN_OUTPUT_DIR",
                    "RETRAIN_CACHE_DIR", "RETRAIN_HOLDOUT_FRACTION", "RETRAIN_MAX_BENCHMARK_DROP"]


@pytest.fixture
def retrain_environment(transactional_db, small_world, settings, monkeypatch):  # noqa: F811
    """The worker process reads the retraining settings from its environment."""
    for name in RETRAIN_SETTINGS:
        monkeypatch.setenv(name, str(getattr(settings, name)))
    return small_world


def test_retrain_button_runs_in_the_worker_with_visible_progress(retrain_environment, live_worker, staff_client, staff):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from classifier.models import Photo

    paths = retrain_environment["spare"][RARE][:8]
    photos = classifier_services.photos_create(owner=UserFactory(), uploads=[
        SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/jpeg") for p in paths])
    deadline = time.monotonic() + 180
    while Photo.objects.filter(status=Photo.Status.PENDING).exists() and time.monotonic() < deadline:
        time.sleep(0.3)  # the worker classifies the uploads with the base model
    assert not Photo.objects.exclude(status=Photo.Status.DONE).exists(), "".join(live_worker.log)[-2000:]
    classifier_services.labels_correct_bulk(photos=photos, new_label=RARE, corrected_by=staff)

    response = staff_client.post(reverse("admin:retraining_retrainrun_start"), {})
    run = RetrainRun.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{run.pk}/change/")

    seen, deadline = set(), time.monotonic() + 300
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status == RetrainRun.Status.RUNNING:
            page = staff_client.get(response["Location"])
            assert b'http-equiv="refresh"' in page.content and b"<progress" in page.content
            seen.add((round(run.progress, 2), run.stage))
        if run.status in (RetrainRun.Status.SUCCEEDED, RetrainRun.Status.FAILED):
            break
        time.sleep(0.3)
    log = "".join(live_worker.log)[-3000:]
    assert run.status == RetrainRun.Status.SUCCEEDED, (run.status, run.error, log)
    assert any(0 < progress < 1 for progress, _ in seen), seen
    assert {stage for _, stage in seen} & {"evaluating the new version", "evaluating the active version on the same photos"}
    assert run.candidate is not None and run.decision in (RetrainRun.Decision.PROMOTED, RetrainRun.Decision.REJECTED)
    assert "retraining.tasks.retrain_run_task" in log
