"""Batched classification in the worker: one task classifies the photos that are waiting in one
batch (one predictor call per model), concurrent claimers never take the same photo, and a dead
worker's claim is taken over. Correctness only: nothing here is timed (see scripts/bench/)."""

import io
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from classifier import images, inference, services
from classifier.models import ModelVersion, Photo, Prediction
from classifier.tasks import classify_photo
from tests.classifier.images import image_bytes

pytestmark = [pytest.mark.slow]


@pytest.fixture
def predictor_calls(db, monkeypatch):
    """Every active model loaded (as a worker does at start), then each predictor call recorded
    as (model version id, batch size): the real predictor still runs."""
    from ml.predict import Predictor

    versions = list(ModelVersion.objects.filter(is_active=True))
    assert versions, "migrate registers the shipped models"
    by_predictor = {id(inference.get_predictor(v)): v.pk for v in versions}
    class Calls(list):
        pass

    calls = Calls()
    original = Predictor.predict_arrays

    def recording(self, pixels):
        calls.append((by_predictor.get(id(self)), len(pixels)))
        return original(self, pixels)

    monkeypatch.setattr(Predictor, "predict_arrays", recording)
    calls.versions = versions
    return calls


def _species_of(photo_ids):
    return {p.pk: p for p in Photo.objects.filter(pk__in=photo_ids)}


@pytest.mark.django_db
def test_one_task_classifies_the_waiting_photos_in_one_batch(settings, predictor_calls, real_photos, pending_photo):
    settings.CLASSIFIER_BATCH_SIZE = 4
    photos = [pending_photo(content) for _, content in real_photos[:6]]

    classify_photo.apply(args=[photos[0].pk])

    # One call per active model, on the photo and the three oldest waiting ones.
    assert sorted(predictor_calls) == sorted((v.pk, 4) for v in predictor_calls.versions)
    statuses = {p.pk: p.status for p in Photo.objects.filter(pk__in=[p.pk for p in photos])}
    assert [statuses[p.pk] for p in photos] == ["done"] * 4 + ["pending"] * 2
    n_models = len(predictor_calls.versions)
    # Each photo's batched result is what the model says about that photo alone.
    for photo, (name, content) in zip(photos[:4], real_photos[:4]):
        predictions = {p.model_version_id: p for p in Prediction.objects.filter(photo=photo)}
        assert len(predictions) == n_models
        for version in predictor_calls.versions:
            alone = inference.get_predictor(version).predict([io.BytesIO(content)])[0]
            stored = predictions[version.pk]
            assert [t["label"] for t in stored.top] == [t.label for t in alone.top]
            assert stored.probability == pytest.approx(alone.top[0].probability, abs=1e-4)
            assert stored.latency_ms > 0
        default = next(p for p in predictions.values() if p.model_version.is_default)
        assert default.label == name
    assert not Photo.objects.exclude(claimed_by="").exists()

    # Their own tasks find them done: no model runs again, nothing is stored twice.
    predictor_calls.clear()
    for photo in photos[1:4]:
        classify_photo.apply(args=[photo.pk])
    assert predictor_calls == []
    assert Prediction.objects.count() == 4 * n_models

    # The next task takes the remaining two together.
    classify_photo.apply(args=[photos[4].pk])
    assert sorted(predictor_calls) == sorted((v.pk, 2) for v in predictor_calls.versions)
    assert set(Photo.objects.values_list("status", flat=True)) == {"done"}


@pytest.mark.django_db
def test_batch_size_one_classifies_only_the_tasks_photo(settings, predictor_calls, real_photos, pending_photo):
    settings.CLASSIFIER_BATCH_SIZE = 1
    first, second = (pending_photo(content) for _, content in real_photos[:2])
    classify_photo.apply(args=[second.pk])
    assert sorted(predictor_calls) == sorted((v.pk, 1) for v in predictor_calls.versions)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("pending", "done")


@pytest.mark.django_db
def test_an_unreadable_waiting_photo_is_left_to_its_own_task(settings, predictor_calls, real_photos, pending_photo):
    settings.CLASSIFIER_BATCH_SIZE = 8
    good = pending_photo(real_photos[0][1])
    broken = pending_photo(b"not a photo at all")
    other = pending_photo(real_photos[1][1])

    classify_photo.apply(args=[good.pk])

    assert sorted(predictor_calls) == sorted((v.pk, 2) for v in predictor_calls.versions)
    photos = _species_of([good.pk, broken.pk, other.pk])
    assert (photos[good.pk].status, photos[other.pk].status) == ("done", "done")
    assert photos[broken.pk].status == "pending" and photos[broken.pk].claimed_by == ""
    # Its own task reports why (after its retries, which run at once when applied eagerly).
    classify_photo.apply(args=[broken.pk])
    broken.refresh_from_db()
    assert broken.status == "failed" and "Classification failed" in broken.failure_reason


@pytest.mark.django_db
def test_a_photo_in_another_live_workers_batch_is_checked_again_later(
    predictor_calls, real_photos, pending_photo, django_capture_on_commit_callbacks
):
    photo = pending_photo(real_photos[0][1], claimed_by="other-task",
                          claim_expires=timezone.now() + timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        classify_photo.apply(args=[photo.pk])
    assert predictor_calls == []
    assert len(callbacks) == 1  # a new classify task for it, after CLASSIFIER_CLAIM_RECHECK_SECONDS
    photo.refresh_from_db()
    assert photo.status == "pending" and photo.claimed_by == "other-task"


@pytest.mark.django_db
def test_a_dead_workers_claim_is_taken_over(settings, predictor_calls, real_photos, pending_photo):
    settings.CLASSIFIER_BATCH_SIZE = 8
    now = timezone.now()
    # The worker that claimed these died: one claim has lapsed, the other has not yet.
    lapsed = pending_photo(real_photos[0][1], claimed_by="dead-task", claim_expires=now - timedelta(seconds=1))
    held = pending_photo(real_photos[1][1], claimed_by="dead-task", claim_expires=now + timedelta(minutes=5))
    fresh = pending_photo(real_photos[2][1])

    # Another task takes the lapsed photo into its batch, not the one still held.
    classify_photo.apply(args=[fresh.pk])
    photos = _species_of([lapsed.pk, held.pk, fresh.pk])
    assert (photos[lapsed.pk].status, photos[fresh.pk].status, photos[held.pk].status) == ("done", "done", "pending")
    assert sorted(predictor_calls) == sorted((v.pk, 2) for v in predictor_calls.versions)

    # The dead worker's task, re-delivered (acks_late) with the same id, takes its claim straight back.
    predictor_calls.clear()
    classify_photo.apply(args=[held.pk], task_id="dead-task")
    held.refresh_from_db()
    assert held.status == "done" and held.claimed_by == "" and held.predictions.count() == len(predictor_calls.versions)
    assert sorted(predictor_calls) == sorted((v.pk, 1) for v in predictor_calls.versions)


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_hold_the_same_photo(settings):
    """Two claimers at once, round after round, each for its own photo plus up to 7 waiting ones
    (their candidate sets overlap every round): while both hold their claims, no photo is in both
    batches. On PostgreSQL (skip locked + conditional update) and on SQLite (the write lock)."""
    from tests.classifier.factories import PhotoFactory

    ids = [PhotoFactory(status=Photo.Status.PENDING).pk for _ in range(40)]
    rounds: dict[str, list[list[int]]] = {"a": [], "b": []}
    errors = []
    claimed, finished = threading.Barrier(2), threading.Barrier(2)
    start = threading.Barrier(2)

    def claimer(name, own_ids):
        try:
            for own in own_ids:
                start.wait(timeout=60)
                try:
                    batch = [p.pk for p in services.photos_claim(photo_id=own, claimant=f"claimer-{name}", limit=8)]
                except services.PhotoClaimed:
                    batch = []  # the other claimer holds this one in its batch
                rounds[name].append(batch)
                claimed.wait(timeout=60)  # both hold their claims now
                finished.wait(timeout=60)  # both batches are recorded
                # Finish them as a worker would, so they are no longer waiting.
                Photo.objects.filter(pk__in=batch).update(status="done", claimed_by="", claim_expires=None)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
            for barrier in (start, claimed, finished):
                barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=("a", ids[0:12:2])),
               threading.Thread(target=claimer, args=("b", ids[1:12:2]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(rounds["a"]) == len(rounds["b"]) == 6
    for batch_a, batch_b in zip(rounds["a"], rounds["b"]):
        assert not set(batch_a) & set(batch_b), (batch_a, batch_b)
        assert len(batch_a) <= 8 and len(batch_b) <= 8
    assert any(rounds["a"]) and any(rounds["b"])
    assert set(Photo.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"done"}


@pytest.mark.django_db(transaction=True)
def test_two_workers_classifying_at_once_run_each_photo_through_each_model_once(
    settings, predictor_calls, real_photos, pending_photo
):
    settings.CLASSIFIER_BATCH_SIZE = 6
    photos = [pending_photo(content) for _, content in real_photos[:12]]
    errors = []

    def worker(own_ids, name):
        try:
            for own in own_ids:
                try:
                    services.photos_classify_batch(photo_id=own, claimant=name)
                except services.PhotoClaimed:
                    pass  # in the other worker's batch; its task would check again later
        except Exception as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=([p.pk for p in photos[0::2]], "w1")),
               threading.Thread(target=worker, args=([p.pk for p in photos[1::2]], "w2"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    # Every photo went through every model exactly once, in batches of at most 6.
    for version in predictor_calls.versions:
        sizes = [n for pk, n in predictor_calls if pk == version.pk]
        assert sum(sizes) == 12 and max(sizes) <= 6, (version, sizes)
    assert set(Photo.objects.filter(pk__in=[p.pk for p in photos]).values_list("status", flat=True)) == {"done"}
    assert Prediction.objects.count() == 12 * len(predictor_calls.versions)


def test_upload_reencoding_decodes_large_jpegs_in_draft_mode(monkeypatch):
    """The display and thumbnail copies of a large JPEG come from a reduced-scale decode, and the
    upload check decodes it at 1/8 scale (a truncated file is still refused: test_uploads.py)."""
    from PIL import JpegImagePlugin

    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft

    def recording(self, mode, size):
        result = original(self, mode, size)
        drafts.append((self.size, size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording)
    content = image_bytes("JPEG", size=(4000, 3000))
    from PIL import Image

    for max_side, decoded in ((images.DISPLAY_MAX_SIDE, (2000, 1500)), (images.THUMBNAIL_MAX_SIDE, (500, 375))):
        drafts.clear()
        out = Image.open(io.BytesIO(images.reencode(content, max_side)))
        assert max(out.size) == max_side and out.size[0] / out.size[1] == pytest.approx(4 / 3, rel=0.01)
        # After draft() the image reports the reduced size it will decode at.
        assert [size for size, _ in drafts] == [decoded], drafts
    drafts.clear()

    class Upload(io.BytesIO):
        name, size = "big.jpg", len(content)

    checked = services.photo_check_upload(Upload(content))
    assert (checked.width, checked.height) == (4000, 3000)
    assert [size for size, _ in drafts] == [(500, 375)]


def test_a_truncated_large_jpeg_is_still_refused():
    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((4000, 3000), 64).convert("RGB").save(out, "JPEG", quality=90)
    content = out.getvalue()[: len(out.getvalue()) * 2 // 3]

    class Upload(io.BytesIO):
        name, size = "cut.jpg", len(content)

    with pytest.raises(services.UploadError, match="cannot be read|can be read"):
        services.photo_check_upload(Upload(content))
