"""Export of staff labels (command and admin), retrain runs' bookkeeping, model version
promotion/roll back and the per-version quality pages. No training here (see test_loop_e2e)."""

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from classifier import selectors, services
from classifier.models import NOT_A_BUTTERFLY, ModelVersion
from retraining import services as retraining_services
from retraining.models import RetrainRun
from tests.classifier.factories import ModelVersionFactory, PhotoFactory, PredictionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(staff, shipped_model):
    monarch, viceroy, nothing, unlabelled = (PhotoFactory() for _ in range(4))
    PredictionFactory(photo=monarch, model_version=shipped_model, label="monarch", probability=0.7)
    services.label_confirm(photo=monarch, confirmed_by=staff)
    services.label_correct(photo=viceroy, new_label="viceroy", corrected_by=staff)
    services.label_correct(photo=nothing, new_label=NOT_A_BUTTERFLY, corrected_by=staff)
    return {"monarch": monarch, "viceroy": viceroy, "nothing": nothing, "unlabelled": unlabelled}


@pytest.fixture
def shipped_model(db):
    return ModelVersion.objects.get(is_default=True)


def test_export_labels_command_writes_an_image_folder_and_a_manifest(labelled, tmp_path):
    out = io.StringIO()
    call_command("export_labels", str(tmp_path / "labels"), stdout=out)
    assert "2 photos exported" in out.getvalue()
    files = sorted(p.relative_to(tmp_path / "labels").as_posix() for p in (tmp_path / "labels").rglob("*") if p.is_file())
    monarch, viceroy = labelled["monarch"].pk, labelled["viceroy"].pk
    assert files == ["manifest.csv", f"monarch/{monarch}.jpg", f"viceroy/{viceroy}.jpg"]
    rows = list(csv.DictReader(open(tmp_path / "labels" / "manifest.csv")))
    assert [(r["photo_id"], r["label"], r["kind"], r["labelled_by"]) for r in rows] == [
        (str(monarch), "monarch", "confirmed", "reviewer"), (str(viceroy), "viceroy", "corrected", "reviewer")]
    assert all(r["labelled_at"] for r in rows)
    assert (tmp_path / "labels" / f"monarch/{monarch}.jpg").read_bytes()[:2] == b"\xff\xd8"

    call_command("export_labels", str(tmp_path / "all"), "--include-not-butterfly", stdout=io.StringIO())
    assert (tmp_path / "all" / NOT_A_BUTTERFLY / f"{labelled['nothing'].pk}.jpg").is_file()


def test_export_refuses_a_folder_in_use_and_leaves_it_alone(labelled, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="not an empty folder"):
        call_command("export_labels", str(tmp_path / "busy"))
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]


def test_admin_export_is_a_zip_for_staff_only(labelled, staff_client, client):
    response = staff_client.get(reverse("admin:retraining_retrainrun_export"))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert "labels/manifest.csv" in names and f"labels/viceroy/{labelled['viceroy'].pk}.jpg" in names
    client.force_login(UserFactory())
    assert client.get(reverse("admin:retraining_retrainrun_export")).status_code == 302  # to the admin login


def test_one_run_at_a_time_and_a_clear_message(staff):
    retraining_services.retrain_run_create(requested_by=staff)
    with pytest.raises(Exception, match="still queued"):
        retraining_services.retrain_run_create(requested_by=staff)
    with pytest.raises(CommandError, match="still queued"):
        call_command("retrain", stdout=io.StringIO())
    assert RetrainRun.objects.count() == 1


def test_a_run_whose_worker_died_no_longer_blocks(staff, settings):
    """A running run whose heartbeat stopped for longer than RETRAIN_HEARTBEAT_TIMEOUT lost its
    worker: the next request (as the beat task does every minute) marks it failed, not 6 h later."""
    from datetime import timedelta

    from django.utils import timezone

    settings.RETRAIN_HEARTBEAT_TIMEOUT = 120
    lost = retraining_services.retrain_run_create(requested_by=staff)
    RetrainRun.objects.filter(pk=lost.pk).update(status=RetrainRun.Status.RUNNING,
                                                started_at=timezone.now() - timedelta(minutes=10),
                                                heartbeat_at=timezone.now() - timedelta(seconds=100))
    with pytest.raises(Exception, match="still running"):  # 100 s without a heartbeat: still alive
        retraining_services.retrain_run_create(requested_by=staff)
    RetrainRun.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=130))
    retraining_services.retrain_run_create(requested_by=staff)
    lost.refresh_from_db()
    assert lost.status == RetrainRun.Status.FAILED and lost.finished_at is not None
    assert "stopped sending heartbeats for over 120 s" in lost.error


def test_bad_options_are_refused_before_anything_is_written(staff):
    with pytest.raises(CommandError, match="held-out fraction"):
        call_command("retrain", "--holdout-fraction", "1.5", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no user"):
        call_command("retrain", "--user", "nobody", stdout=io.StringIO())
    assert not RetrainRun.objects.exists()


def test_without_a_default_version_the_run_fails_readably(staff):
    ModelVersion.objects.update(is_default=False)
    with pytest.raises(CommandError, match="No default model version"):
        call_command("retrain", stdout=io.StringIO())
    run = RetrainRun.objects.get()
    assert run.status == RetrainRun.Status.FAILED and run.candidate is None
    # Executing it again (a re-delivered task) changes nothing.
    assert retraining_services.retrain_run_execute(run_id=run.pk).status == RetrainRun.Status.FAILED


def test_start_button_queues_the_task_once_committed(staff_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(reverse("admin:retraining_retrainrun_start"), {"evaluate_only": "1"})
    run = RetrainRun.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{run.pk}/change/")
    assert len(callbacks) == 1 and run.options["promote"] is False
    page = staff_client.get(response["Location"])
    assert b'http-equiv="refresh"' in page.content and b"Promotion rule" in page.content
    response = staff_client.post(reverse("admin:retraining_retrainrun_start"), {}, follow=True)
    assert b"still queued" in response.content and RetrainRun.objects.count() == 1


def test_promote_and_roll_back(shipped_model):
    new = ModelVersionFactory(name=shipped_model.name, number=2, replaces=shipped_model, is_active=False)
    services.model_version_promote(model_version=new, replaces=shipped_model)
    new.refresh_from_db()
    shipped_model.refresh_from_db()
    assert new.is_default and new.is_active and not shipped_model.is_active and not shipped_model.is_default
    assert services.model_version_roll_back(model_version=new) == shipped_model
    new.refresh_from_db()
    shipped_model.refresh_from_db()
    assert shipped_model.is_default and shipped_model.is_active and not new.is_active
    with pytest.raises(Exception, match="nothing to roll back to"):
        services.model_version_roll_back(model_version=shipped_model)


def test_model_version_page_shows_benchmark_figures_and_field_accuracy(staff_client, shipped_model, staff):
    right, wrong, trained_on = PhotoFactory(), PhotoFactory(), PhotoFactory()
    for photo in (right, wrong, trained_on):
        PredictionFactory(photo=photo, model_version=shipped_model, label="monarch", probability=0.9)
    services.label_confirm(photo=right, confirmed_by=staff)
    services.label_correct(photo=wrong, new_label="viceroy", corrected_by=staff)
    services.label_correct(photo=trained_on, new_label="viceroy", corrected_by=staff)
    ModelVersion.objects.filter(pk=shipped_model.pk).update(training_photo_ids=[trained_on.pk])
    shipped_model.refresh_from_db()

    field = selectors.model_version_field_accuracy(shipped_model)
    assert (field["n"], field["correct"], field["accuracy"]) == (2, 1, 0.5) and len(field["series"]) == 1

    page = staff_client.get(reverse("admin:classifier_modelversion_change", args=[shipped_model.pk]))
    assert page.status_code == 200
    assert b'id="benchmark-top1"' in page.content and b'id="per-class-recall"' in page.content
    assert b"1 / 2 = 50%" in page.content
    assert b'id="confusion-matrix"' in page.content
    image = staff_client.get(reverse("admin:classifier_modelversion_confusion_matrix", args=[shipped_model.pk]))
    assert image.status_code == 200 and image["Content-Type"] == "image/svg+xml"
    # Drawn from the counts in its evaluation/report.json: one cell per (true, predicted) pair seen.
    svg = image.content.decode()
    assert svg.startswith("<svg") and svg.count("<rect x=") > 49 and "top-1 97.76% on 980 benchmark photos" in svg
    assert "<title>true monarch, predicted monarch: 20</title>" in svg
    listing = staff_client.get(reverse("admin:classifier_modelversion_changelist"))
    assert b"97.76%" in listing.content and b"50.0% of 2" in listing.content
    missing = ModelVersionFactory(artifact_path="/nonexistent")
    assert staff_client.get(reverse("admin:classifier_modelversion_confusion_matrix", args=[missing.pk])).status_code == 404


def test_a_worker_finds_the_retraining_tasks():
    from butterflysite.celery import app

    app.loader.import_default_modules()
    app.autodiscover_tasks(force=True)  # as the worker does: the INSTALLED_APPS
    assert {"retraining.tasks.retrain_run_task", "retraining.tasks.reclassify_photos_task",
            "retraining.tasks.fail_lost_retrain_runs"} <= set(app.tasks)


def test_confusion_matrices_are_drawn_without_matplotlib_or_tensorflow():
    """What the admin runs to draw a matrix (the views' modules, ml.evaluate's SVG) in a fresh
    process: none of the training extras gets imported."""
    import subprocess
    import sys

    code = (
        "import json, sys, django\n"
        "django.setup()\n"
        "import classifier.admin, retraining.admin\n"
        "from ml.evaluate import confusion_matrix_svg\n"
        "report = json.load(open('artifacts/inat_imagenet_mobilenet_v2/evaluation/report.json'))\n"
        "svg = confusion_matrix_svg(report['confusion_matrix']['counts'], report['confusion_matrix']['classes'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'sklearn', 'matplotlib'})\n"
        "print(json.dumps({'heavy': heavy, 'cells': svg.count('<rect x=')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["heavy"] == [] and figures["cells"] > 49
