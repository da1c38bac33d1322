"""Worker faults, with real processes: gunicorn serving the API, Celery workers (prefork) on a
redis-server of the test's own, the test's database. Photos go in through HTTP like any client's.

- a worker SIGKILLed in the middle of a batch: once a worker is back, every photo is classified
  exactly once per active model (acks_late + reject on worker lost, claims that lapse, a unique
  prediction per photo and model version);
- Redis down at upload: the upload is accepted and stored, and classified once Redis is back
  (beat's sweep sends the lost task again);
- a model missing or corrupt: the photo is reported failed with a readable reason, the other
  models still answer, the web app stays up.
"""

import shutil
import signal
import time
import uuid

import pytest
from django.db import connection
from django.db.models import Count

from classifier import artifacts
from classifier.models import ModelVersion, Photo, Prediction
from tests.classifier.factories import ModelVersionFactory
from tests.reliability.conftest import (
    api_token,
    api_upload,
    app_env,
    sample_photos,
    start_gunicorn,
    start_worker,
    stop,
    subprocess_database_url,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _env(redis_server, tmp_path, **extra):
    return app_env(database_url=subprocess_database_url(connection), broker_url=redis_server.url,
                   media_root=tmp_path / "media", queue=f"classify-{uuid.uuid4().hex[:10]}", **extra)


def _assert_classified_once_per_model(ids, active):
    photos = Photo.objects.filter(pk__in=ids)
    assert {p.status for p in photos} == {Photo.Status.DONE}, [(p.pk, p.status, p.failure_reason) for p in photos]
    assert all(p.claimed_by == "" for p in photos)
    per_photo = {pk: set() for pk in ids}
    for photo_id, version_id in Prediction.objects.filter(photo__in=ids).values_list("photo_id", "model_version_id"):
        per_photo[photo_id].add(version_id)
    assert all(versions == {v.pk for v in active} for versions in per_photo.values()), per_photo
    assert Prediction.objects.filter(photo__in=ids).count() == len(ids) * len(active)
    duplicated = Prediction.objects.filter(photo__in=ids).values("photo", "model_version").annotate(n=Count("id")).filter(n__gt=1)
    assert not duplicated.exists()


def test_worker_sigkilled_mid_batch_then_back_classifies_each_photo_once_per_model(redis_server, processes, tmp_path, butterflies_dir):
    active = list(ModelVersion.objects.filter(is_active=True))
    assert active
    # Short claims and visibility timeout so the test need not wait the production minutes.
    env = _env(redis_server, tmp_path, CLASSIFIER_BATCH_SIZE=4, CLASSIFIER_CLAIM_SECONDS=6,
               CLASSIFIER_CLAIM_RECHECK_SECONDS=1, CELERY_VISIBILITY_TIMEOUT=12)
    web, url = start_gunicorn(env)
    processes.append(web)
    worker = start_worker(env, models=len(active))
    processes.append(worker)
    token = api_token("sigkill")

    ids = []
    for path in sample_photos(butterflies_dir, 8):
        status, body, _ = api_upload(url, token, path)
        assert status == 202, body
        ids.append(body["id"])

    def mid_batch():
        # Photos a task has claimed and not finished: the batch is being classified right now.
        return list(Photo.objects.filter(pk__in=ids, status=Photo.Status.PENDING).exclude(claimed_by="")
                    .values_list("pk", "claimed_by"))

    claimed = wait_until(mid_batch, 120, interval=0.01, what="a batch in progress")
    stop(worker, signal.SIGKILL)  # the worker and its pool child, no chance to clean up
    assert worker.returncode == -signal.SIGKILL
    pending_at_kill = Photo.objects.filter(pk__in=ids, status=Photo.Status.PENDING).count()
    assert pending_at_kill > 0
    killed_task = claimed[0][1]
    # acks_late: the task that was running is still held, unacknowledged, by Redis (it hands it out
    # again once the visibility timeout has passed), not lost with the worker.
    import redis

    unacked = redis.Redis.from_url(redis_server.url).hvals("unacked")
    assert any(killed_task.encode() in message for message in unacked), unacked

    restarted = time.monotonic()
    worker = start_worker(env, models=len(active))
    processes.append(worker)
    ready = time.monotonic()
    wait_until(lambda: not Photo.objects.filter(pk__in=ids, status=Photo.Status.PENDING).exists(), 240, interval=0.5,
               what=f"all photos classified after the restart\n{worker.text()}")
    print(f"\nSIGKILL: {len(claimed)} photos claimed, {pending_at_kill}/{len(ids)} pending at the kill; new worker ready "
          f"in {ready - restarted:.1f}s, all classified {time.monotonic() - ready:.1f}s later")
    _assert_classified_once_per_model(ids, active)


def test_upload_while_redis_is_down_is_kept_and_classified_once_redis_is_back(redis_server, processes, tmp_path, butterflies_dir):
    active = list(ModelVersion.objects.filter(is_active=True))
    env = _env(redis_server, tmp_path, CLASSIFIER_SWEEP_INTERVAL_SECONDS=2, CLASSIFIER_SWEEP_PENDING_SECONDS=4)
    web, url = start_gunicorn(env)
    processes.append(web)
    worker = start_worker(env, beat=True, models=len(active))
    processes.append(worker)
    token = api_token("no-redis")

    redis_server.stop()  # the broker (and the rate-limit cache) is gone, with every queued message
    ids, upload_seconds = [], []
    for path in sample_photos(butterflies_dir, 3):
        status, body, seconds = api_upload(url, token, path)
        assert status == 202, body
        assert seconds < 10, f"upload took {seconds:.1f}s with Redis down"
        ids.append(body["id"])
        upload_seconds.append(seconds)
    photos = list(Photo.objects.filter(pk__in=ids))
    assert len(photos) == 3 and {p.status for p in photos} == {Photo.Status.PENDING}
    media = tmp_path / "media"
    assert all((media / p.original.name).is_file() and (media / p.thumbnail.name).is_file() for p in photos)
    assert "could not send the classify task" in web.text(400)
    time.sleep(3)
    assert Photo.objects.filter(pk__in=ids, status=Photo.Status.PENDING).count() == 3  # nothing can classify them yet

    redis_server.start()  # back, empty
    back = time.monotonic()
    wait_until(lambda: not Photo.objects.filter(pk__in=ids, status=Photo.Status.PENDING).exists(), 180, interval=0.5,
               what=f"classification once Redis is back\n{worker.text()}")
    print(f"\nRedis down: uploads answered 202 in {', '.join(f'{s:.2f}s' for s in upload_seconds)}; "
          f"classified {time.monotonic() - back:.1f}s after Redis was back")
    _assert_classified_once_per_model(ids, active)
    assert "sweep: sent" in "".join(worker.log)


def test_missing_or_corrupt_model_fails_readably_while_the_other_model_answers(redis_server, processes, tmp_path, butterflies_dir):
    from django.test import Client

    from tests.classifier.factories import UserFactory

    healthy = ModelVersion.objects.get(is_default=True)
    ModelVersion.objects.exclude(pk=healthy.pk).update(is_active=False)
    corrupt_dir = tmp_path / "corrupt_artifact"
    shutil.copytree(artifacts.artifact_dir(healthy), corrupt_dir)
    (corrupt_dir / "model.keras").write_bytes(b"PK\x03\x04 this is not a Keras file" * 100)
    for export in corrupt_dir.glob("*.tflite"):  # the split export (what the worker serves) and model.tflite
        export.write_bytes(b"TFL3 this is not a LiteRT model" * 100)
    ModelVersionFactory(name="missing_model", artifact_path=str(tmp_path / "no-such-artifact"), classes=healthy.classes)
    ModelVersionFactory(name="corrupt_model", artifact_path=str(corrupt_dir), classes=healthy.classes)

    env = _env(redis_server, tmp_path)
    web, url = start_gunicorn(env)
    processes.append(web)
    worker = start_worker(env, models=3)
    processes.append(worker)
    token = api_token("broken-models")
    path = sample_photos(butterflies_dir, 1)[0]
    status, body, _ = api_upload(url, token, path)
    assert status == 202
    photo_id = body["id"]

    wait_until(lambda: Photo.objects.get(pk=photo_id).status != Photo.Status.PENDING, 120, interval=0.5,
               what=f"the photo to be reported\n{worker.text()}")
    photo = Photo.objects.get(pk=photo_id)
    print(f"\nbroken models: {photo.status}: {photo.failure_reason}")
    assert photo.status == Photo.Status.FAILED
    assert "cannot load model missing_model" in photo.failure_reason
    assert "cannot load model corrupt_model" in photo.failure_reason
    prediction = Prediction.objects.get(photo=photo)  # the healthy model answered, and only it
    assert prediction.model_version_id == healthy.pk and prediction.label == path.parent.name
    assert worker.poll() is None  # the worker is still serving

    # The web app stays up and says what happened: to the owner (API), to staff (admin).
    import json
    import urllib.request

    request = urllib.request.Request(f"{url}/api/photos/{photo_id}/", headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        shown = json.loads(response.read())
    assert shown["status"] == "failed" and "corrupt_model" in shown["failure_reason"]
    assert [p["model"] for p in shown["predictions"]] == [healthy.name]
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    admin_page = staff.get(f"/admin/classifier/photo/{photo_id}/change/").content.decode()
    assert "cannot load model missing_model" in admin_page
