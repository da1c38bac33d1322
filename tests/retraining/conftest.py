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
    import uuid

    from tests.conftest import _celery_worker_process

    queue = f"test-retrain-{uuid.uuid4().hex[:12]}"
    settings.MEDIA_ROOT = tmp_path / "media"  # where live_worker puts it too: both see the uploads
    settings.RETRAIN_TASK_QUEUE = queue
    yield from _celery_worker_process(settings, {"RETRAIN_TASK_QUEUE": queue}, queue, "--max-tasks-per-child", "1")
