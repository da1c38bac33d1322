import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "butterflysite.settings")

app = Celery("butterflysite")
# Every Celery setting lives in Django settings under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _schedule_sweep(sender, **kwargs):
    # Beat (embedded in the worker with -B, see Procfile) sends the sweep on the classify queue,
    # so whichever worker serves that queue runs it. Idempotent: duplicates from several beats
    # are harmless (photos_sweep_pending sends each stuck photo once per period).
    from django.conf import settings

    sender.add_periodic_task(
        float(settings.CLASSIFIER_SWEEP_INTERVAL_SECONDS),
        sender.signature("classifier.tasks.sweep_pending_photos", queue=settings.CLASSIFIER_TASK_QUEUE),
        name="sweep pending photos",
        # A sweep not started within one interval is dropped: the next one does the same work.
        expires=float(settings.CLASSIFIER_SWEEP_INTERVAL_SECONDS),
    )
    # Stored photo files no row refers to (an upload killed before its commit): deleted once
    # older than MEDIA_ORPHAN_GRACE_SECONDS. Idempotent too (a file is deleted at most once).
    sender.add_periodic_task(
        float(settings.MEDIA_ORPHAN_SWEEP_INTERVAL_SECONDS),
        sender.signature("classifier.tasks.sweep_orphan_files", queue=settings.CLASSIFIER_TASK_QUEUE),
        name="sweep orphan files",
        expires=float(settings.MEDIA_ORPHAN_SWEEP_INTERVAL_SECONDS),
    )
    # Retrains whose worker died (no heartbeat for RETRAIN_HEARTBEAT_TIMEOUT) are marked failed. It
    # goes to the classification queue: the trainer that died cannot run it. One cheap UPDATE.
    sender.add_periodic_task(
        float(settings.RETRAIN_LOST_CHECK_INTERVAL),
        sender.signature("retraining.tasks.fail_lost_retrain_runs", queue=settings.CLASSIFIER_TASK_QUEUE),
        name="fail lost retrain runs",
        expires=float(settings.RETRAIN_LOST_CHECK_INTERVAL),
    )
