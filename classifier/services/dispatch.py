"""Dispatch: the classify task is sent once the photo is committed, sent again by the sweep when
it was lost, queued again on retry or recheck; claims keep concurrent workers off each other's
photos."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from classifier.models import Photo

logger = logging.getLogger(__name__)


def _send_classification(photo_id: int, countdown: float | None = None) -> bool:
    """Sends the classify task now; False (logged) when the broker cannot be reached. The photo
    then stays pending and photos_sweep_pending sends it again once the broker is back."""
    from classifier.tasks import classify_photo

    try:
        classify_photo.apply_async(args=[photo_id], queue=settings.CLASSIFIER_TASK_QUEUE, countdown=countdown)
    except Exception:  # kombu/redis raise many types (OperationalError, ConnectionError, OSError)
        logger.warning("could not send the classify task of photo %s; the sweep will resend it", photo_id, exc_info=True)
        return False
    return True


def photo_enqueue(photo_id: int, countdown: float | None = None) -> None:
    """Sends the photo's classify task once the current transaction commits."""
    # After commit, so the worker finds the row; a broker outage must not fail the upload,
    # whose photo is already stored.
    transaction.on_commit(lambda: _send_classification(photo_id, countdown))


def photos_sweep_pending(*, older_than_seconds: float | None = None, limit: int = 500) -> list[int]:
    """Sends the classify task again for photos pending longer than CLASSIFIER_SWEEP_PENDING_SECONDS
    (their task was lost: broker down at upload, broker data lost) that no live claim holds.

    Each photo's queued_at is moved to now by a conditional UPDATE before it is sent, so
    concurrent sweeps (one per worker with embedded beat) send each photo once per period.
    Returns the ids sent.
    """
    age = settings.CLASSIFIER_SWEEP_PENDING_SECONDS if older_than_seconds is None else older_than_seconds
    now = timezone.now()
    cutoff = now - timedelta(seconds=age)
    stuck = (
        Photo.objects.filter(status=Photo.Status.PENDING, queued_at__lt=cutoff)
        .filter(Q(claimed_by="") | Q(claim_expires__lt=now) | Q(claim_expires__isnull=True))
        .order_by("queued_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = []
    for photo_id in list(stuck):
        if Photo.objects.filter(pk=photo_id, status=Photo.Status.PENDING, queued_at__lt=cutoff).update(queued_at=now):
            if not _send_classification(photo_id):
                break  # broker still down: the next sweep tries again (queued_at moved on)
            sent.append(photo_id)
    if sent:
        logger.info("sweep: sent %d photo(s) pending longer than %ss again: %s", len(sent), age, sent[:20])
    return sent


def photo_recheck_later(*, photo_id: int) -> None:
    """Queues another classify task for the photo after CLASSIFIER_CLAIM_RECHECK_SECONDS."""
    photo_enqueue(photo_id, countdown=settings.CLASSIFIER_CLAIM_RECHECK_SECONDS)


def photo_retry(*, photo: Photo) -> Photo:
    """Queues a failed (or stale pending) photo for classification again."""
    from classifier.selectors import photo_is_stale

    if photo.status == Photo.Status.DONE or (photo.status == Photo.Status.PENDING and not photo_is_stale(photo)):
        return photo
    with transaction.atomic():
        Photo.objects.filter(pk=photo.pk).update(status=Photo.Status.PENDING, failure_reason="", queued_at=timezone.now())
        photo_enqueue(photo.pk)
    photo.status, photo.failure_reason = Photo.Status.PENDING, ""
    return photo


class PhotoClaimed(Exception):
    """Another worker has the photo in the batch it is classifying, and its claim has not lapsed."""

    def __init__(self, photo_id: int, expires):
        super().__init__(f"photo {photo_id} is being classified by another worker (claim until {expires})")
        self.photo_id, self.expires = photo_id, expires


def _claimable(claimant: str, now) -> Q:
    return Q(claimed_by="") | Q(claimed_by=claimant) | Q(claim_expires__lt=now)


def photos_claim(*, photo_id: int, claimant: str, limit: int) -> list[Photo]:
    """Claims the photo (whatever its status) and up to `limit - 1` pending photos nobody holds,
    oldest first. Each row is taken by a conditional UPDATE, so two claimers never get the same
    photo (PostgreSQL also skips rows another claimer has locked). Raises PhotoClaimed when
    another live claimant holds the photo itself, Photo.DoesNotExist when it is gone."""
    now = timezone.now()
    expires = now + timedelta(seconds=settings.CLASSIFIER_CLAIM_SECONDS)
    claimable = _claimable(claimant, now)
    with transaction.atomic():
        # On SQLite this first write takes the database's write lock for the whole transaction.
        if not Photo.objects.filter(pk=photo_id).filter(claimable).update(claimed_by=claimant, claim_expires=expires):
            holder = Photo.objects.filter(pk=photo_id).values_list("claim_expires", flat=True).first()
            if holder is None and not Photo.objects.filter(pk=photo_id).exists():
                raise Photo.DoesNotExist(f"photo {photo_id} does not exist")
            raise PhotoClaimed(photo_id, holder)
        others: list[int] = []
        if limit > 1:
            waiting = (
                Photo.objects.filter(status=Photo.Status.PENDING)
                .filter(claimable)
                .exclude(pk=photo_id)
                .order_by("queued_at", "pk")
            )
            if connection.features.has_select_for_update_skip_locked:
                waiting = waiting.select_for_update(skip_locked=True)
            others = list(waiting.values_list("pk", flat=True)[: limit - 1])
            if others:
                Photo.objects.filter(pk__in=others).filter(claimable).update(claimed_by=claimant, claim_expires=expires)
    claimed = {p.pk: p for p in Photo.objects.filter(pk__in=[photo_id, *others], claimed_by=claimant)}
    return [claimed[i] for i in [photo_id, *others] if i in claimed]


def photos_release(*, claimant: str, photo_ids) -> None:
    """Gives up a claim (left to the photos' own tasks), e.g. after an error in the batch."""
    Photo.objects.filter(pk__in=list(photo_ids), claimed_by=claimant).update(claimed_by="", claim_expires=None)


def photos_queue_unidentified(*, limit: int | None = None) -> list[int]:
    """Queues the classify task (once committed) for every finished photo that has no answer yet,
    e.g. classified before answers existed: its task computes the answer from the stored
    predictions. Nothing is queued while no identifier is installed (settings.ML_IDENTIFIER_DIR).
    Returns the ids queued."""
    from classifier import inference

    if not inference.identifier_installed():
        return []
    ids = list(
        Photo.objects.filter(status=Photo.Status.DONE, identification__isnull=True)
        .order_by("pk").values_list("pk", flat=True)[:limit]
    )
    for photo_id in ids:
        photo_enqueue(photo_id)
    return ids
