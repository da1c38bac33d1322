"""Celery tasks: take ids, call a service, retry on expected errors, fail readably at the end."""

import logging

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.db import DatabaseError

from classifier import inference, services
from classifier.models import Photo

logger = logging.getLogger(__name__)

RETRYABLE = (inference.InferenceError, services.NoActiveModel, DatabaseError, OSError)


@shared_task(bind=True, max_retries=3, acks_late=True)
def classify_photo(self, photo_id: int) -> None:
    # Classifies this photo together with up to CLASSIFIER_BATCH_SIZE - 1 others that are waiting;
    # their own tasks then find them done. The task id is the claimant, so a re-delivered task
    # (acks_late, worker lost) takes its claims straight back.
    try:
        services.photos_classify_batch(photo_id=photo_id, claimant=self.request.id)
    except services.PhotoClaimed:
        # Another worker's batch holds it: look again later (done by then, or its claim lapsed).
        logger.info("photo %s is in another worker's batch; checking again later", photo_id)
        services.photo_recheck_later(photo_id=photo_id)
    except Photo.DoesNotExist:
        logger.info("photo %s was deleted before classification", photo_id)
    except RETRYABLE as error:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=error, countdown=2 ** (self.request.retries + 1)) from error
        logger.exception("classifying photo %s failed for good", photo_id)
        services.photo_mark_failed(photo_id=photo_id, reason=f"Classification failed: {error}")
    except Exception as error:  # not worth retrying (e.g. a stored file that no longer decodes)
        logger.exception("classifying photo %s failed", photo_id)
        services.photo_mark_failed(photo_id=photo_id, reason=f"Classification failed: {error}")


@shared_task(ignore_result=True)
def sweep_pending_photos() -> int:
    """Sends the classify task again for photos stuck in pending (celery beat runs this)."""
    return len(services.photos_sweep_pending())


@shared_task(ignore_result=True)
def sweep_orphan_files() -> int:
    """Deletes stored photo files no row refers to, past the grace period (celery beat runs this)."""
    return len(services.media_sweep_orphans())


def _consumes_classification() -> bool:
    # A worker started with -Q for other queues only (the trainer) never classifies, so it keeps
    # its memory for training instead of holding the served models.
    from django.conf import settings

    from butterflysite.celery import app

    return settings.CLASSIFIER_TASK_QUEUE in app.amqp.queues.consume_from


@worker_process_init.connect
def _preload_in_pool_process(**kwargs):
    # Prefork pool: each child process loads the active models once, before its first task.
    # (settings.CELERY_WORKER_PROC_ALIVE_TIMEOUT leaves time for the models to load.)
    if _consumes_classification():
        inference.preload_active()


@worker_ready.connect
def _preload_in_main_process(sender=None, **kwargs):
    # solo/threads pools run tasks in the main process, where worker_process_init never fires.
    from celery.concurrency.prefork import TaskPool

    pool = getattr(getattr(sender, "controller", None), "pool", None)
    if pool is not None and not isinstance(pool, TaskPool) and _consumes_classification():
        inference.preload_active()
