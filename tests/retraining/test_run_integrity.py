"""Retrain runs stay consistent when things happen at once: one run at a time even when two
requests race, a run failed as stale is never overwritten (nor promoted) by its late worker,
and a run that fails leaves no artifact behind."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from classifier import services as classifier_services
from classifier.models import ModelVersion
from retraining import services as retraining_services
from retraining.models import RetrainRun
from tests.classifier.factories import UserFactory
from tests.retraining.conftest import SMALL_WEIGHTS, link_species


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_create_one_run():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite serialises every write transaction, so the requests cannot race")
    staff = UserFactory(is_staff=True)
    threads_per_round, rounds = 6, 5
    for _ in range(rounds):
        RetrainRun.objects.all().delete()
        barrier = threading.Barrier(threads_per_round)
        outcomes = []

        def request(barrier=barrier, outcomes=outcomes):
            try:
                barrier.wait(timeout=10)
                retraining_services.retrain_run_create(requested_by=staff)
                outcomes.append("created")
            except ValidationError as error:
                outcomes.append(error.messages[0])
            finally:
                connection.close()  # each thread has its own connection

        threads = [threading.Thread(target=request) for _ in range(threads_per_round)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert outcomes.count("created") == 1, outcomes
        assert all("still queued" in o for o in outcomes if o != "created"), outcomes
        assert RetrainRun.objects.count() == 1


def _outcome(artifact_dir, promote=True):
    import json

    from ml.retrain import Decision, RetrainOutcome

    artifact_dir.mkdir(parents=True)
    metadata = {"name": "butterflies", "version": "2", "classes": ["monarch", "viceroy"], "backbone": "mobilenet"}
    (artifact_dir / "metadata.json").write_text(json.dumps(metadata))
    report = {"benchmark": {"top1": 0.9, "top5": 1.0, "n": 10}, "holdout": {"top1": 1.0, "n": 2}}
    return RetrainOutcome(artifact_dir, metadata, report, report, Decision(promote, ["not worse"]), ["photo-1"],
                          ["photo-2"], {}, {"total_s": 1.0})


@pytest.mark.django_db
def test_a_run_failed_as_lost_is_not_overwritten_nor_promoted(tmp_path, settings):
    from datetime import timedelta

    from django.utils import timezone

    baseline = ModelVersion.objects.get(is_default=True)
    run = retraining_services.retrain_run_create()
    RetrainRun.objects.filter(pk=run.pk).update(status=RetrainRun.Status.RUNNING, heartbeat_at=timezone.now() - timedelta(
        seconds=settings.RETRAIN_HEARTBEAT_TIMEOUT + 1))
    assert retraining_services.retrain_runs_fail_lost() == 1  # what beat runs every minute
    run.refresh_from_db()
    assert run.status == RetrainRun.Status.FAILED
    # Its worker was only slow: it finishes now.
    recorded = retraining_services.retrain_run_finish(run=run, baseline=baseline, number=2,
                                                      outcome=_outcome(tmp_path / "butterflies-2"))
    run.refresh_from_db()
    assert not recorded
    assert run.status == RetrainRun.Status.FAILED and run.candidate is None and "heartbeats" in run.error
    assert ModelVersion.objects.get(is_default=True) == baseline
    assert not ModelVersion.objects.filter(name="butterflies").exists()


@pytest.mark.django_db
def test_a_running_run_is_finished_and_promoted(tmp_path):
    baseline = ModelVersion.objects.get(is_default=True)
    run = retraining_services.retrain_run_create()
    RetrainRun.objects.filter(pk=run.pk).update(status=RetrainRun.Status.RUNNING)
    assert retraining_services.retrain_run_finish(run=run, baseline=baseline, number=2,
                                                  outcome=_outcome(tmp_path / "butterflies-2"))
    run.refresh_from_db()
    assert run.status == RetrainRun.Status.SUCCEEDED and run.decision == RetrainRun.Decision.PROMOTED
    assert ModelVersion.objects.get(is_default=True) == run.candidate and run.candidate.number == 2


@pytest.mark.slow
@pytest.mark.django_db
def test_a_run_that_fails_after_training_leaves_no_artifact(tmp_path, butterflies_dir, weights_dir, settings):
    """Training wrote the artifact, then the run fails (here: the benchmark folder is gone):
    the half-made version must not stay on disk without its ModelVersion."""
    from ml.train import BackboneSpec, TrainConfig, train

    base_data = tmp_path / "base"
    for species in ("monarch", "viceroy"):
        link_species(butterflies_dir / "train", base_data, species,
                     sorted((butterflies_dir / "train" / species).iterdir())[:4])
    config = TrainConfig(cache_dir=str(tmp_path / "cache"), progress=False, verbose=0, max_epochs=2, patience=1)
    baseline_dir = tmp_path / "models" / "tiny"
    train(base_data, [BackboneSpec("mobilenet_0.50_160", str(weights_dir / SMALL_WEIGHTS))], config,
          name="tiny", out_dir=baseline_dir)
    ModelVersion.objects.update(is_active=False, is_default=False)
    classifier_services.model_version_register(artifact_dir=baseline_dir, active=True, default=True)
    settings.RETRAIN_BASE_DATA_DIR = base_data
    settings.RETRAIN_BENCHMARK_DIR = tmp_path / "no-benchmark"
    settings.RETRAIN_WEIGHTS_DIR = weights_dir
    settings.RETRAIN_OUTPUT_DIR = tmp_path / "retrained"
    settings.RETRAIN_CACHE_DIR = str(tmp_path / "cache")

    run = retraining_services.retrain_run_create(train_config={"max_epochs": 2, "patience": 1})
    run = retraining_services.retrain_run_execute(run_id=run.pk)
    assert run.status == RetrainRun.Status.FAILED and "no-benchmark" in run.error
    output = tmp_path / "retrained"
    assert not output.exists() or not any(output.iterdir()), list(output.rglob("*"))


def test_the_retrain_task_has_the_soft_time_limit_of_the_settings(settings):
    from retraining.tasks import retrain_run_task

    assert retrain_run_task.soft_time_limit == settings.RETRAIN_SOFT_TIME_LIMIT == 3 * 3600
