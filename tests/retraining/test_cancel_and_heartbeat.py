"""Cancelling a run (queued: it never starts; running: its training loop is told to stop), the
heartbeat that tells a live run from one whose worker died, the run page's elapsed time and time
left, and the processes that serve each queue. The real cancel of a real retrain in a worker
process is in test_retrain_worker.py."""

import shlex
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from retraining import selectors
from retraining import services as retraining_services
from retraining.models import RetrainRun
from tests.classifier.factories import UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _running(run, started_s_ago=60, progress=0.0, heartbeat_s_ago=0):
    now = timezone.now()
    RetrainRun.objects.filter(pk=run.pk).update(
        status=RetrainRun.Status.RUNNING, started_at=now - timedelta(seconds=started_s_ago), progress=progress,
        heartbeat_at=now - timedelta(seconds=heartbeat_s_ago), stage="training the head: epoch 3")
    run.refresh_from_db()
    return run


def test_a_queued_run_cancelled_from_its_page_never_starts(staff_client, staff, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        run = retraining_services.retrain_run_request(requested_by=staff)
    assert len(queued) == 1 and len(run.task_id) == 36  # the task is sent under this id, so it can be revoked
    page = staff_client.get(reverse("admin:retraining_retrainrun_change", args=[run.pk]))
    assert b'id="cancel-form"' in page.content and b'id="retrain-waiting"' in page.content

    with django_capture_on_commit_callbacks(execute=False) as revokes:
        response = staff_client.post(reverse("admin:retraining_retrainrun_cancel", args=[run.pk]))
    assert response.status_code == 302 and len(revokes) == 1
    run.refresh_from_db()
    assert run.status == RetrainRun.Status.CANCELLED and run.cancelled_by == staff and run.finished_at
    # Its task, delivered anyway (a worker that never heard of the revoke), does nothing.
    assert retraining_services.retrain_run_execute(run_id=run.pk).status == RetrainRun.Status.CANCELLED
    run.refresh_from_db()
    assert run.started_at is None and run.candidate is None
    page = staff_client.get(reverse("admin:retraining_retrainrun_change", args=[run.pk]))
    assert b'id="retrain-cancelled"' in page.content and b'id="cancel-form"' not in page.content
    assert b'http-equiv="refresh"' not in page.content
    # A new run may start at once.
    retraining_services.retrain_run_create(requested_by=staff)


def test_cancelling_a_running_run_tells_its_training_loop_to_stop(staff):
    run = _running(retraining_services.retrain_run_create(requested_by=staff))
    control = retraining_services._RunControl(run.pk)
    assert control.should_stop() is False
    before = RetrainRun.objects.get(pk=run.pk).heartbeat_at
    control._checked -= retraining_services.CHECK_INTERVAL_SECONDS  # the next batch, a second later
    assert control.should_stop() is False
    assert RetrainRun.objects.get(pk=run.pk).heartbeat_at > before  # the check is the heartbeat

    run = retraining_services.retrain_run_cancel(run=run, cancelled_by=staff)
    assert run.status == RetrainRun.Status.RUNNING and run.cancel_requested_at is not None
    control._checked -= retraining_services.CHECK_INTERVAL_SECONDS
    assert control.should_stop() is True
    # It cannot be finished (registered) any more.
    assert not retraining_services.retrain_run_finish(run=run, baseline=None, outcome=None, number=2)


def test_a_finished_run_cannot_be_cancelled(staff_client, staff):
    run = retraining_services.retrain_run_create(requested_by=staff)
    RetrainRun.objects.filter(pk=run.pk).update(status=RetrainRun.Status.SUCCEEDED)
    with pytest.raises(Exception, match="succeeded: there is nothing to cancel"):
        retraining_services.retrain_run_cancel(run=run, cancelled_by=staff)
    response = staff_client.post(reverse("admin:retraining_retrainrun_cancel", args=[run.pk]), follow=True)
    assert b"nothing to cancel" in response.content


def test_cancel_is_a_post_by_staff_with_a_csrf_token(staff, staff_client):
    run = retraining_services.retrain_run_create(requested_by=staff)
    url = reverse("admin:retraining_retrainrun_cancel", args=[run.pk])
    assert staff_client.get(url).status_code == 302  # a GET changes nothing
    user = Client()
    user.force_login(UserFactory())
    assert user.post(url).status_code == 302  # to the admin login
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    assert strict.post(url).status_code == 403
    run.refresh_from_db()
    assert run.status == RetrainRun.Status.QUEUED


def test_a_dead_worker_fails_its_run_within_the_heartbeat_timeout(staff, settings):
    settings.RETRAIN_HEARTBEAT_TIMEOUT = 180
    alive = _running(retraining_services.retrain_run_create(requested_by=staff), heartbeat_s_ago=170)
    assert retraining_services.retrain_runs_fail_lost() == 0
    RetrainRun.objects.filter(pk=alive.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=181))
    assert retraining_services.retrain_runs_fail_lost() == 1
    alive.refresh_from_db()
    assert alive.status == RetrainRun.Status.FAILED and "RETRAIN_HEARTBEAT_TIMEOUT" in alive.error
    # A run being cancelled when its worker died ends cancelled.
    dying = _running(retraining_services.retrain_run_create(requested_by=staff), heartbeat_s_ago=10)
    retraining_services.retrain_run_cancel(run=dying, cancelled_by=staff)
    RetrainRun.objects.filter(pk=dying.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=200))
    assert retraining_services.retrain_runs_fail_lost() == 1
    dying.refresh_from_db()
    assert dying.status == RetrainRun.Status.CANCELLED and not dying.error


def test_beat_checks_for_lost_runs_on_the_classification_queue(settings):
    from butterflysite.celery import app

    app.loader.import_default_modules()
    entry = app.conf.beat_schedule["fail lost retrain runs"]
    assert entry["task"] == "retraining.tasks.fail_lost_retrain_runs"
    assert entry["options"]["queue"] == settings.CLASSIFIER_TASK_QUEUE != settings.RETRAIN_TASK_QUEUE
    assert entry["schedule"] == settings.RETRAIN_LOST_CHECK_INTERVAL == 60


def test_elapsed_and_time_left_on_the_run_page(staff_client, staff):
    run = _running(retraining_services.retrain_run_create(requested_by=staff), started_s_ago=60, progress=0.05)
    timing = selectors.retrain_run_timing(run)
    assert timing.elapsed_s == pytest.approx(60, abs=2) and timing.remaining_s is None
    page = staff_client.get(reverse("admin:retraining_retrainrun_change", args=[run.pk])).content.decode()
    assert 'id="retrain-elapsed">1 min 00 s<' in page or 'id="retrain-elapsed">1 min 01 s<' in page
    assert 'id="retrain-remaining">estimating…<' in page and 'id="retrain-heartbeat"' in page

    RetrainRun.objects.filter(pk=run.pk).update(progress=0.25)  # a quarter done in 60 s: 180 s to go
    run.refresh_from_db()
    assert selectors.retrain_run_timing(run).remaining_s == pytest.approx(180, abs=6)
    page = staff_client.get(reverse("admin:retraining_retrainrun_change", args=[run.pk])).content.decode()
    assert 'id="retrain-remaining">3 min 0' in page and 'http-equiv="refresh"' in page

    finished = run.started_at + timedelta(seconds=3725)
    RetrainRun.objects.filter(pk=run.pk).update(status=RetrainRun.Status.FAILED, finished_at=finished)
    run.refresh_from_db()
    timing = selectors.retrain_run_timing(run, now=finished + timedelta(hours=5))
    assert timing.elapsed_s == 3725 and timing.remaining_s is None and timing.heartbeat_age_s is None
    page = staff_client.get(reverse("admin:retraining_retrainrun_change", args=[run.pk])).content.decode()
    assert 'Ran for <strong id="retrain-elapsed">1 h 02 min<' in page


def _procfile() -> dict[str, list[str]]:
    return {name.strip(): shlex.split(command) for name, _, command in
            (line.partition(":") for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())}


def test_the_trainer_alone_takes_retrains_and_the_worker_alone_classifies():
    processes = _procfile()
    worker = processes["worker"]
    assert worker[worker.index("-Q") + 1] == "${CLASSIFIER_TASK_QUEUE:-celery}" and "--beat" in worker
    assert processes["trainer"][-1] == "scripts/trainer"
    trainer = shlex.split((ROOT / "scripts" / "trainer").read_text().split("exec ", 1)[1].replace("\\\n", " "))
    assert trainer[trainer.index("-Q") + 1] == "${RETRAIN_TASK_QUEUE:-retrain}"
    assert trainer[trainer.index("--concurrency") + 1] == "1" and "--beat" not in trainer
    run = (ROOT / "scripts" / "run").read_text()  # the local stack starts the same two
    assert '-Q "${CLASSIFIER_TASK_QUEUE:-celery}"' in run and "scripts/trainer &" in run

