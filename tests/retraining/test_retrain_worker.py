"""Retraining apart from classification, with real processes: "Retrain now" runs in the trainer
process (its own queue) while the classification worker goes on classifying uploads; the run's
page shows progress, elapsed time and time left; Cancel stops a real retrain within seconds,
registering nothing and leaving no files."""

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier import services as classifier_services
from classifier.models import ModelVersion, Photo
from retraining import services as retraining_services
from retraining.models import RetrainRun
from tests.classifier.factories import UserFactory
from tests.retraining.test_loop_e2e import RARE, shared_feature_cache, small_world  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

RETRAIN_SETTINGS = ["RETRAIN_BASE_DATA_DIR", "RETRAIN_BENCHMARK_DIR", "RETRAIN_WEIGHTS_DIR", "RETRAIN_OUTPUT_DIR",
                    "RETRAIN_CACHE_DIR", "RETRAIN_HOLDOUT_FRACTION", "RETRAIN_MAX_BENCHMARK_DROP"]
# A head trained this long would take hours: only a cancel ends such a run within the test.
ENDLESS = {"max_epochs": 100_000, "patience": 100_000}


@pytest.fixture
def retrain_environment(transactional_db, small_world, settings, monkeypatch):  # noqa: F811
    """The trainer process reads the retraining settings from its environment."""
    for name in RETRAIN_SETTINGS:
        monkeypatch.setenv(name, str(getattr(settings, name)))
    return small_world


def upload(paths) -> list[Photo]:
    return classifier_services.photos_create(owner=UserFactory(), uploads=[
        SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/jpeg") for p in paths])


def wait_for(condition, timeout: float, what: str, log=None, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + ("\n" + "".join(log)[-3000:] if log is not None else ""))


def test_photos_are_classified_while_the_trainer_retrains(retrain_environment, live_worker, live_trainer,
                                                          staff_client, staff):
    spare = retrain_environment["spare"][RARE]
    photos = upload(spare[:8])  # the classification worker classifies them with the base model
    wait_for(lambda: not Photo.objects.exclude(status=Photo.Status.DONE).exists(), 180, "the first photos",
             live_worker.log)
    classifier_services.labels_correct_bulk(photos=photos, new_label=RARE, corrected_by=staff)

    response = staff_client.post(reverse("admin:retraining_retrainrun_start"), {})
    run = RetrainRun.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{run.pk}/change/")
    # Past its first steps (TensorFlow loaded, the photos gathered), it is training.
    wait_for(lambda: RetrainRun.objects.filter(pk=run.pk, status=RetrainRun.Status.RUNNING, progress__gte=0.02).exists(),
             120, "the trainer to start training", live_trainer.log, interval=0.1)

    # Photos uploaded now are classified while the retrain runs.
    uploaded_at = time.monotonic()
    during = upload(spare[8:16])
    latencies, seen = {}, set()
    while time.monotonic() < uploaded_at + 180:
        for photo in Photo.objects.filter(pk__in=[p.pk for p in during], status=Photo.Status.DONE):
            latencies.setdefault(photo.pk, time.monotonic() - uploaded_at)
        run.refresh_from_db()
        if run.status == RetrainRun.Status.RUNNING:
            page = staff_client.get(response["Location"]).content.decode()
            assert 'http-equiv="refresh"' in page and "<progress" in page and 'id="retrain-elapsed"' in page
            assert 'id="retrain-remaining"' in page and 'id="cancel-form"' in page
            seen.add((round(run.progress, 2), run.stage))
        if len(latencies) == len(during) or run.status != RetrainRun.Status.RUNNING:
            break
        time.sleep(0.2)
    classified_while_running = run.status == RetrainRun.Status.RUNNING and len(latencies) == len(during)
    assert classified_while_running, (run.status, len(latencies), "".join(live_worker.log)[-2000:])
    print(f"upload->result during a retrain, 8 photos: max {max(latencies.values()):.1f} s, "
          f"retrain at {run.progress:.0%} ({run.stage})")

    wait_for(lambda: RetrainRun.objects.exclude(status__in=[RetrainRun.Status.QUEUED, RetrainRun.Status.RUNNING])
             .filter(pk=run.pk).exists(), 300, "the retrain to finish", live_trainer.log, interval=0.5)
    run.refresh_from_db()
    assert run.status == RetrainRun.Status.SUCCEEDED, (run.status, run.error, "".join(live_trainer.log)[-3000:])
    assert run.candidate is not None and run.decision in (RetrainRun.Decision.PROMOTED, RetrainRun.Decision.REJECTED)
    # Each process served its own queue (Celery logs "Task <name>[<id>] received").
    assert f"retraining.tasks.retrain_run_task[{run.task_id}] received" in "".join(live_trainer.log)
    assert "retraining.tasks.retrain_run_task[" not in "".join(live_worker.log)
    assert "classifier.tasks.classify_photo[" in "".join(live_worker.log)
    assert "classifier.tasks.classify_photo[" not in "".join(live_trainer.log)


def cancel_at(staff_client, staff, stage: str, train_config: dict, log, output_dir) -> tuple[RetrainRun, float, list]:
    """Starts a run, presses Cancel on its page once it reaches `stage`, and waits for it to end
    cancelled; returns the run, how long it took to stop, and its saved artifact folders at the cancel."""
    run = retraining_services.retrain_run_request(requested_by=staff, train_config=train_config)
    wait_for(lambda: RetrainRun.objects.filter(pk=run.pk, stage__startswith=stage).exists(), 240, stage, log,
             interval=0.1)
    folders = [folder for folder in output_dir.glob(f"*-run{run.pk}") if (folder / "model.keras").is_file()]
    requested = time.monotonic()
    assert staff_client.post(reverse("admin:retraining_retrainrun_cancel", args=[run.pk])).status_code == 302
    wait_for(lambda: RetrainRun.objects.filter(pk=run.pk).exclude(status=RetrainRun.Status.RUNNING).exists(), 60,
             "the run to stop", log)
    run.refresh_from_db()
    assert run.status == RetrainRun.Status.CANCELLED, (run.status, run.error, "".join(log)[-3000:])
    return run, time.monotonic() - requested, folders


def test_cancel_stops_a_real_retrain_within_seconds(retrain_environment, live_trainer, staff_client, staff, settings):
    with_labels = upload(retrain_environment["spare"][RARE][:6])
    classifier_services.labels_correct_bulk(photos=with_labels, new_label=RARE, corrected_by=staff)
    versions = set(ModelVersion.objects.values_list("pk", flat=True))

    # While the head trains: a run that would go on for hours stops at its next batch.
    run, stopped_in, _ = cancel_at(staff_client, staff, "training the head: epoch", ENDLESS, live_trainer.log,
                                   settings.RETRAIN_OUTPUT_DIR)
    print(f"cancel -> cancelled while training: {stopped_in:.1f} s")
    assert stopped_in < 30, stopped_in
    assert run.candidate is None and run.cancelled_by == staff and run.finished_at and not run.error
    page = staff_client.get(reverse("admin:retraining_retrainrun_change", args=[run.pk])).content.decode()
    assert 'id="retrain-cancelled"' in page and 'http-equiv="refresh"' not in page

    # Once the new version's files are written (it is being evaluated): they are removed.
    run, stopped_in, folders = cancel_at(staff_client, staff, "evaluating the new version", {}, live_trainer.log,
                                         settings.RETRAIN_OUTPUT_DIR)
    print(f"cancel -> cancelled while evaluating: {stopped_in:.1f} s")
    assert stopped_in < 30, stopped_in
    assert folders and not folders[0].exists()  # the saved model was there when Cancel was pressed
    assert not list(settings.RETRAIN_OUTPUT_DIR.glob(f"*-run{run.pk}")), list(settings.RETRAIN_OUTPUT_DIR.rglob("*"))
    assert set(ModelVersion.objects.values_list("pk", flat=True)) == versions  # nothing registered
    assert f"retraining.tasks.retrain_run_task[{run.task_id}] received" in "".join(live_trainer.log)


def test_a_trainer_killed_mid_retrain_has_its_run_failed_by_the_heartbeat_check(retrain_environment, live_trainer,
                                                                               staff, settings):
    import os
    import signal

    from scripts.harness import descendants

    run = retraining_services.retrain_run_request(requested_by=staff, train_config=ENDLESS)
    wait_for(lambda: RetrainRun.objects.filter(pk=run.pk, stage__startswith="training the head: epoch").exists(),
             240, "the head's training", live_trainer.log)
    settings.RETRAIN_HEARTBEAT_TIMEOUT = 5
    # Alive: it beats about every second, so the check (what beat runs every minute) leaves it alone.
    for _ in range(6):
        assert retraining_services.retrain_runs_fail_lost() == 0
        time.sleep(0.5)
    for pid in reversed(descendants(live_trainer.pid)):  # the pool process first, then the worker
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: retraining_services.retrain_runs_fail_lost(), 30, "the lost run to be failed", interval=0.5)
    found_in = time.monotonic() - killed
    run.refresh_from_db()
    assert run.status == RetrainRun.Status.FAILED and "stopped sending heartbeats for over 5 s" in run.error
    assert run.candidate is None and found_in < 10, found_in
    print(f"killed trainer -> run failed: {found_in:.1f} s (RETRAIN_HEARTBEAT_TIMEOUT = 5 s)")
