import pytest

from classifier import services
from classifier.models import ModelVersion, Photo, Prediction
from classifier.tasks import classify_photo
from tests.classifier.factories import PhotoFactory, PredictionFactory

pytestmark = pytest.mark.django_db


class Label:
    def __init__(self, label, probability):
        self.label, self.probability = label, probability


class Result:
    """The shape of ml.predict.Prediction (a plain value, as the predictor returns it)."""

    def __init__(self, top, unknown=False, latency_ms=5.0):
        self.top, self.unknown, self.latency_ms = top, unknown, latency_ms


def test_prediction_store_is_idempotent(second_model):
    photo = PhotoFactory()
    first = services.prediction_store(photo=photo, model_version=second_model, result=Result([Label("monarch", 0.8), Label("viceroy", 0.2)]))
    again = services.prediction_store(photo=photo, model_version=second_model, result=Result([Label("viceroy", 0.9)]))
    assert first.pk == again.pk and again.label == "monarch"
    assert Prediction.objects.filter(photo=photo).count() == 1
    assert first.top == [{"label": "monarch", "probability": 0.8}, {"label": "viceroy", "probability": 0.2}]


def test_task_without_active_model_retries_then_marks_failed_with_reason():
    ModelVersion.objects.update(is_active=False)
    photo = PhotoFactory(status=Photo.Status.PENDING)
    classify_photo.apply(args=[photo.pk])  # eager: retries run at once
    photo.refresh_from_db()
    assert photo.status == Photo.Status.FAILED
    assert "No model is active" in photo.failure_reason


def test_task_for_a_deleted_photo_does_nothing():
    result = classify_photo.apply(args=[987654])
    assert result.successful()


def test_task_skips_models_that_already_predicted(second_model, shipped_model):
    # Every active model already has a prediction: the task loads no model and marks it done.
    ModelVersion.objects.exclude(pk__in=[second_model.pk, shipped_model.pk]).update(is_active=False)
    photo = PhotoFactory(status=Photo.Status.PENDING)
    PredictionFactory(photo=photo, model_version=second_model)
    PredictionFactory(photo=photo, model_version=shipped_model)
    classify_photo.apply(args=[photo.pk])
    photo.refresh_from_db()
    assert photo.status == Photo.Status.DONE and photo.classified_at is not None
    assert photo.predictions.count() == 2


def test_retry_requeues_failed_photo_only(django_capture_on_commit_callbacks):
    failed = PhotoFactory(status=Photo.Status.FAILED, failure_reason="boom")
    done = PhotoFactory(status=Photo.Status.DONE)
    pending = PhotoFactory(status=Photo.Status.PENDING)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.photo_retry(photo=failed)
        services.photo_retry(photo=done)
        services.photo_retry(photo=pending)
    assert len(callbacks) == 1
    failed.refresh_from_db()
    assert failed.status == Photo.Status.PENDING and failed.failure_reason == ""


def test_missing_artifact_fails_with_readable_reason(settings, tmp_path):
    # A model version whose artifact directory is gone: the worker cannot load it.
    ModelVersion.objects.update(is_active=False)
    from tests.classifier.factories import ModelVersionFactory

    ModelVersionFactory(name="gone", artifact_path=str(tmp_path / "no-such-artifact"))
    photo = PhotoFactory(status=Photo.Status.PENDING)
    classify_photo.apply(args=[photo.pk])
    photo.refresh_from_db()
    assert photo.status == Photo.Status.FAILED
    assert "cannot load model gone" in photo.failure_reason


@pytest.mark.slow
def test_photo_classify_with_the_shipped_model_on_a_real_photo(user, shipped_model, butterflies_dir):
    from django.core.files.uploadedfile import SimpleUploadedFile

    path = sorted((butterflies_dir / "test" / "monarch").glob("*.jpg"))[0]
    photo = services.photo_create(owner=user, upload=SimpleUploadedFile(path.name, path.read_bytes()))
    photo = services.photo_classify(photo_id=photo.pk)
    assert photo.status == Photo.Status.DONE
    prediction = Prediction.objects.get(photo=photo, model_version=shipped_model)
    assert prediction.label == "monarch" and len(prediction.top) == 5
    assert prediction.top[0]["probability"] >= prediction.top[1]["probability"]
    assert prediction.latency_ms > 0
    # Running again adds nothing (unique per photo and model version).
    n_active = ModelVersion.objects.filter(is_active=True).count()
    assert Prediction.objects.filter(photo=photo).count() == n_active
    services.photo_classify(photo_id=photo.pk)
    assert Prediction.objects.filter(photo=photo).count() == n_active
    from classifier import artifacts, inference

    assert (shipped_model.pk, str(artifacts.artifact_dir(shipped_model))) in inference.loaded_keys()
