"""Celery tasks of the retraining loop: take ids, call a service, safe to run twice."""

import logging

from celery import shared_task
from django.conf import settings

from retraining import services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, soft_time_limit=settings.RETRAIN_SOFT_TIME_LIMIT)
def retrain_run_task(run_id: int) -> None:
    # Idempotent: only a queued run is executed; a re-delivered task finds it running or done.
    # Past the soft time limit the run is marked failed with a readable error (prefork pool).
    services.retrain_run_execute(run_id=run_id)


@shared_task(ignore_result=True)
def fail_lost_retrain_runs() -> int:
    """Marks failed the running retrains whose worker stopped sending heartbeats (beat runs this
    on the classification queue: a dead trainer cannot report its own death)."""
    return services.retrain_runs_fail_lost()


@shared_task(acks_late=True)
def reclassify_photos_task(model_version_id: int) -> None:
    # Idempotent: only photos without a prediction from this version are classified.
    count = services.photos_reclassify(model_version_id=model_version_id)
    logger.info("re-classified %s photos with model version %s", count, model_version_id)
