"""Which worker processes load the served models."""

from butterflysite.celery import app
from classifier import inference, tasks


def test_only_a_worker_that_consumes_the_classification_queue_preloads_the_models(monkeypatch, settings):
    loads = []
    monkeypatch.setattr(inference, "preload_active", lambda: loads.append("loaded"))
    queues = app.amqp.queues

    # The trainer: `celery worker -Q retrain` (scripts/trainer).
    monkeypatch.setattr(queues, "_consume_from", {settings.RETRAIN_TASK_QUEUE: queues[settings.RETRAIN_TASK_QUEUE]})
    tasks._preload_in_pool_process()
    assert loads == []

    # The classification worker (Procfile `worker`), also consuming another queue.
    monkeypatch.setattr(queues, "_consume_from", {
        name: queues[name] for name in (settings.CLASSIFIER_TASK_QUEUE, settings.RETRAIN_TASK_QUEUE)})
    tasks._preload_in_pool_process()
    assert loads == ["loaded"]
