"""The pending-photo sweep: which photos it sends again, through the configured broker."""

import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from classifier import services
from classifier.models import Photo
from tests.classifier.factories import PhotoFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(settings):
    """A queue of this test's own on the configured broker; yields a function that drains it."""
    from butterflysite.celery import app

    name = f"test-sweep-{uuid.uuid4().hex[:10]}"
    settings.CLASSIFIER_TASK_QUEUE = name

    def drain() -> list[int]:
        photo_ids = []
        with app.connection_for_read() as connection:
            simple = connection.SimpleQueue(name)
            try:
                while True:
                    try:
                        message = simple.get(block=True, timeout=0.5)
                    except simple.Empty:
                        break
                    assert message.headers["task"] == "classifier.tasks.classify_photo"
                    photo_ids.append(message.decode()[0][0])
                    message.ack()
            finally:
                simple.queue.delete()
                simple.close()
        return sorted(photo_ids)

    return drain


def _ago(seconds):
    return timezone.now() - timedelta(seconds=seconds)


def test_sweep_sends_only_photos_stuck_in_pending(queue, settings):
    settings.CLASSIFIER_SWEEP_PENDING_SECONDS = 60
    stuck = PhotoFactory(status=Photo.Status.PENDING, queued_at=_ago(120))
    lapsed_claim = PhotoFactory(status=Photo.Status.PENDING, queued_at=_ago(120), claimed_by="dead-task", claim_expires=_ago(5))
    PhotoFactory(status=Photo.Status.PENDING, queued_at=_ago(10))  # just queued
    PhotoFactory(status=Photo.Status.PENDING, queued_at=_ago(120), claimed_by="live-task", claim_expires=timezone.now() + timedelta(seconds=60))
    PhotoFactory(status=Photo.Status.DONE, queued_at=_ago(500))
    PhotoFactory(status=Photo.Status.FAILED, queued_at=_ago(500))

    sent = services.photos_sweep_pending()
    assert sorted(sent) == sorted([stuck.pk, lapsed_claim.pk])
    assert queue() == sorted(sent)  # really on the broker, as classify tasks of those photos
    stuck.refresh_from_db()
    assert timezone.now() - stuck.queued_at < timedelta(seconds=5)
    # A second sweep right after (another worker's beat) sends nothing again.
    assert services.photos_sweep_pending() == []


def test_sweep_command_takes_an_age(queue, capsys):
    photo = PhotoFactory(status=Photo.Status.PENDING, queued_at=_ago(30))
    call_command("sweep_pending_photos", "--older-than", "3600")
    assert "sent 0" in capsys.readouterr().out
    call_command("sweep_pending_photos", "--older-than", "5")
    assert f"sent 1 pending photo(s) for classification again: [{photo.pk}]" in capsys.readouterr().out
    assert queue() == [photo.pk]


def test_beat_schedules_the_sweep_on_the_classify_queue(settings):
    from butterflysite.celery import app

    entry = app.conf.beat_schedule["sweep pending photos"]
    assert entry["task"] == "classifier.tasks.sweep_pending_photos"
    assert entry["schedule"] == float(settings.CLASSIFIER_SWEEP_INTERVAL_SECONDS)
