"""The whole loop on real photos and a real (small) backbone: a model that barely knows a species
gets it wrong, staff correct the photos in the admin, a retrain learns it and is promoted; a
retrain on corrupted labels is not promoted; staff can override and roll back.

Small on purpose (CI runs it on 2 cores, cold cache): five butterflies50 species linked into
tmp_path, the 0.5-width MobileNet at 160 px from ../shared/weights.
"""

import json
import re

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier import services as classifier_services
from classifier.models import LabelCorrection, ModelVersion, Photo
from retraining.models import RetrainRun
from tests.classifier.factories import UserFactory
from tests.retraining.conftest import SMALL_WEIGHTS, link_species

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

# viceroy mimics monarch: with two training photos the base model calls most viceroys monarchs.
RARE = "viceroy"
SPECIES = ["adonis", "monarch", "peacock", "sixspot burnet", RARE]
BASE_PER_SPECIES = 30
RARE_BASE = 2
N_RARE_UPLOADS = 24
N_CORRUPT_UPLOADS = 40


@pytest.fixture(scope="session")
def shared_feature_cache(tmp_path_factory):
    """One feature cache for the tests of this package: as in production, a photo's backbone
    features are computed once."""
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture
def small_world(tmp_path, butterflies_dir, weights_dir, settings, shared_feature_cache):
    """Base training data (the rare species with two photos), the benchmark test set of the five
    species, a base model trained on it registered as the only active, default version, and the
    retraining settings pointing at all of that."""
    from ml.train import BackboneSpec, TrainConfig, train

    train_dir, test_dir = tmp_path / "base" / "train", tmp_path / "benchmark"
    spare = {}
    for species in SPECIES:
        photos = sorted((butterflies_dir / "train" / species).iterdir())
        n = RARE_BASE if species == RARE else BASE_PER_SPECIES
        link_species(butterflies_dir / "train", train_dir, species, photos[:n])
        link_species(butterflies_dir / "test", test_dir, species, sorted((butterflies_dir / "test" / species).iterdir()))
        spare[species] = photos[n:]  # photos users will upload: never in the base data
    cache = shared_feature_cache
    config = TrainConfig(cache_dir=str(cache), progress=False, verbose=0, max_epochs=40, patience=5, learning_rate=3e-3)
    base_dir = tmp_path / "models" / "butterflies_small"
    train(train_dir, [BackboneSpec("mobilenet_0.50_160", str(weights_dir / SMALL_WEIGHTS))], config,
          name="butterflies_small", out_dir=base_dir)
    ModelVersion.objects.update(is_active=False, is_default=False)
    base = classifier_services.model_version_register(artifact_dir=base_dir, active=True, default=True)
    settings.RETRAIN_BASE_DATA_DIR = train_dir
    settings.RETRAIN_BENCHMARK_DIR = test_dir
    settings.RETRAIN_WEIGHTS_DIR = weights_dir
    settings.RETRAIN_OUTPUT_DIR = tmp_path / "retrained"
    settings.RETRAIN_CACHE_DIR = str(cache)
    settings.RETRAIN_HOLDOUT_FRACTION = 0.25
    settings.RETRAIN_MAX_BENCHMARK_DROP = 0.005
    return {"base": base, "spare": spare, "test_dir": test_dir}


def upload_and_classify(owner, paths) -> list[Photo]:
    """Users upload the photos (the upload service the page calls), a worker's service classifies them."""
    photos = []
    for start in range(0, len(paths), 10):
        uploads = [SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/jpeg") for p in paths[start:start + 10]]
        photos += classifier_services.photos_create(owner=owner, uploads=uploads)
    for photo in photos:
        classifier_services.photo_classify(photo_id=photo.pk)
    return photos


def correct_in_admin(client, photos, label):
    """The admin's bulk "Correct label" action, as staff submit its intermediate page."""
    response = client.post(reverse("admin:classifier_photo_changelist"), {
        "action": "correct_label_action", "_selected_action": [p.pk for p in photos], "apply": "1", "new_label": label,
    })
    assert response.status_code == 302, response.content[:500]


def recall_on(artifact_dir, folder) -> float:
    """Top-1 recall of an artifact on a folder of one species, measured independently of the
    retrain's own reports (plain Predictor on the files)."""
    from ml.predict import Predictor

    predictor = Predictor.load(artifact_dir)
    paths = sorted(folder.iterdir())
    results = predictor.predict(paths, top_k=1)
    return float(np.mean([r.top[0].label == folder.name for r in results]))


def test_corrections_retrain_promote_then_a_corrupted_retrain_is_refused(small_world, staff_client, eager_celery,
                                                                        django_capture_on_commit_callbacks):
    from classifier import artifacts

    base = small_world["base"]
    uploader = UserFactory()

    # 1. Users upload photos of the species the model barely knows; it gets most of them wrong.
    rare_photos = upload_and_classify(uploader, small_world["spare"][RARE][:N_RARE_UPLOADS])
    predicted = [p.predictions.get(model_version=base).label for p in rare_photos]
    assert sum(label != RARE for label in predicted) >= N_RARE_UPLOADS // 2, predicted

    # 2. They sit in the review queue; staff correct them in the admin (bulk action), and a
    #    flagged one, if any, gets its second look in the review queue (key "1" = that species).
    queue = staff_client.get(reverse("admin:classifier_photo_review"))
    assert queue.status_code == 200 and b'id="review-form"' in queue.content
    correct_in_admin(staff_client, rare_photos, RARE)
    assert LabelCorrection.objects.filter(new_label=RARE).count() == N_RARE_UPLOADS
    for photo in Photo.objects.filter(pk__in=[p.pk for p in rare_photos]).exclude(label_flag=""):
        response = staff_client.post(reverse("admin:classifier_photo_review"), {"photo_id": photo.pk, "label": RARE})
        assert response.status_code == 302
    assert not Photo.objects.filter(label=RARE).exclude(label_flag="").exists()

    # 3. "Retrain now" in the admin: the Celery task runs the retrain (eagerly here).
    page = staff_client.get(reverse("admin:retraining_retrainrun_changelist"))
    assert b"Promotion rule" in page.content
    with django_capture_on_commit_callbacks(execute=True):  # the task is queued once the run is committed
        response = staff_client.post(reverse("admin:retraining_retrainrun_start"), {})
    assert response.status_code == 302
    run = RetrainRun.objects.get()
    assert run.status == RetrainRun.Status.SUCCEEDED, run.error
    assert run.decision == RetrainRun.Decision.PROMOTED, run.decision_reason
    good = run.candidate
    assert good.is_default and good.is_active and good.replaces == base and good.number == base.number + 1
    base.refresh_from_db()
    assert not base.is_active
    assert len(run.holdout_photo_ids) == 6 and len(run.training_photo_ids) == N_RARE_UPLOADS - 6
    assert not set(run.holdout_photo_ids) & set(good.training_photo_ids)
    assert good.training_data_fingerprint.startswith("sha256:") and good.training_data_fingerprint != base.training_data_fingerprint

    # 4. The new version classifies held-out photos of that species better than the old one.
    rare_test = small_world["test_dir"] / RARE
    old_recall = recall_on(artifacts.artifact_dir(base), rare_test)
    new_recall = recall_on(artifacts.artifact_dir(good), rare_test)
    assert new_recall > old_recall, (old_recall, new_recall)
    new_report, old_report = run.candidate_report, run.baseline_report
    assert new_report["benchmark"]["per_class"][RARE]["recall"] == pytest.approx(new_recall)
    assert old_report["benchmark"]["per_class"][RARE]["recall"] == pytest.approx(old_recall)
    assert new_report["holdout"]["top1"] > old_report["holdout"]["top1"]
    assert new_report["benchmark"]["top1"] >= old_report["benchmark"]["top1"]

    # The admin shows the comparison, the rule, and per version the benchmark figures, confusion
    # matrix, per-class recall and field accuracy.
    page = staff_client.get(reverse("admin:retraining_retrainrun_change", args=[run.pk]))
    assert page.status_code == 200 and b'id="retrain-comparison"' in page.content and b"Promotion rule" in page.content
    assert b'id="confusion-matrix-candidate"' in page.content and b'id="confusion-matrix-baseline"' in page.content
    # Drawn as SVG from the counts stored with the run: the rare species' diagonal cell is its recall.
    matrix = staff_client.get(reverse("admin:retraining_retrainrun_image", args=[run.pk, "candidate"]))
    assert matrix.status_code == 200 and matrix["Content-Type"] == "image/svg+xml"
    n_right = round(run.candidate_report["benchmark"]["per_class"][RARE]["recall"] * 20)
    assert f"<title>true {RARE}, predicted {RARE}: {n_right}</title>" in matrix.content.decode()
    assert staff_client.get(reverse("admin:retraining_retrainrun_image", args=[run.pk, "baseline"])).status_code == 200
    page = staff_client.get(reverse("admin:classifier_modelversion_change", args=[good.pk]))
    assert b'id="confusion-matrix"' in page.content and b'id="per-class-recall"' in page.content
    assert staff_client.get(reverse("admin:classifier_modelversion_confusion_matrix", args=[good.pk])).status_code == 200

    # 5. Bulk re-classification with the new version: field accuracy counts only held-out photos.
    from retraining import services as retraining_services

    assert retraining_services.photos_reclassify(model_version_id=good.pk) == N_RARE_UPLOADS
    from classifier.selectors import model_version_field_accuracy

    assert model_version_field_accuracy(good)["n"] == 6
    assert model_version_field_accuracy(base)["n"] == N_RARE_UPLOADS
    assert model_version_field_accuracy(good)["accuracy"] > model_version_field_accuracy(base)["accuracy"]

    # 6. Corrupted labels: monarchs labelled viceroy, the look-alike mix-up. The models contradict
    #    many of them (flagged); a retrain that trains on them anyway breaks monarch on the
    #    benchmark and is not promoted.
    monarchs = upload_and_classify(uploader, small_world["spare"]["monarch"][:N_CORRUPT_UPLOADS])
    correct_in_admin(staff_client, monarchs, RARE)
    assert Photo.objects.filter(pk__in=[p.pk for p in monarchs]).exclude(label_flag="").exists()
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:retraining_retrainrun_start"), {"include_flagged": "1"})
    bad_run = RetrainRun.objects.exclude(pk=run.pk).get()
    assert bad_run.status == RetrainRun.Status.SUCCEEDED, bad_run.error
    assert bad_run.decision == RetrainRun.Decision.REJECTED, bad_run.decision_reason
    # Refused for what the corrupt labels broke: the benchmark recall of a species they touch,
    # monarch (relabelled) or viceroy (flooded with monarchs); which one falls varies by run.
    assert re.search(r"benchmark recall of (monarch|viceroy) falls", bad_run.decision_reason), bad_run.decision_reason
    bad = bad_run.candidate
    bad.refresh_from_db()
    good.refresh_from_db()
    assert good.is_default and good.is_active and not bad.is_active
    recall_change = {species: bad_run.candidate_report["benchmark"]["per_class"][species]["recall"]
                     - bad_run.baseline_report["benchmark"]["per_class"][species]["recall"]
                     for species in ("monarch", RARE)}
    assert min(recall_change.values()) < -0.15, recall_change

    # 7. Staff may override (recorded), and roll back to the version it replaced.
    staff_client.post(reverse("admin:retraining_retrainrun_promote", args=[bad_run.pk]))
    bad_run.refresh_from_db()
    bad.refresh_from_db()
    assert bad_run.decision == RetrainRun.Decision.OVERRIDDEN and bad_run.decided_by.username == "reviewer"
    assert bad.is_default
    staff_client.post(reverse("admin:classifier_modelversion_changelist"),
                      {"action": "roll_back", "_selected_action": [bad.pk]})
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.is_default and good.is_active and not bad.is_active

    print(json.dumps({"good": {"old": old_report["benchmark"]["top1"], "new": new_report["benchmark"]["top1"],
                               "rare_recall": [old_recall, new_recall]},
                      "bad": {"old": bad_run.baseline_report["benchmark"]["top1"],
                              "new": bad_run.candidate_report["benchmark"]["top1"],
                              "monarch_recall": [bad_run.baseline_report["benchmark"]["per_class"]["monarch"]["recall"],
                                                 bad_run.candidate_report["benchmark"]["per_class"]["monarch"]["recall"]]}}))
