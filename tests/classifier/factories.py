import factory
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from classifier.models import LabelCorrection, ModelVersion, Photo, Prediction, unguessable_name
from tests.classifier.images import image_bytes


def _stored_jpeg(prefix):
    return default_storage.save(unguessable_name(prefix, "jpg"), ContentFile(image_bytes()))


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    name = factory.Sequence(lambda n: f"model_{n}")
    backbone = "mobilenet_v2"
    version = factory.Sequence(lambda n: f"v{n}")
    classes = factory.LazyFunction(lambda: ["monarch", "viceroy", "peacock", "adonis", "julia", "malachite"])
    artifact_path = factory.LazyAttribute(lambda m: m.name)
    unknown_threshold = 0.3
    is_active = True


class PhotoFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Photo

    owner = factory.SubFactory(UserFactory)
    original = factory.LazyFunction(lambda: _stored_jpeg("originals"))
    display = factory.LazyFunction(lambda: _stored_jpeg("display"))
    thumbnail = factory.LazyFunction(lambda: _stored_jpeg("thumbnails"))
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    size_bytes = 1000
    width = 64
    height = 48
    image_format = "JPEG"
    status = Photo.Status.DONE


class PredictionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prediction

    photo = factory.SubFactory(PhotoFactory)
    model_version = factory.SubFactory(ModelVersionFactory)
    label = "monarch"
    probability = 0.9
    top = factory.LazyAttribute(
        lambda p: [{"label": p.label, "probability": p.probability}, {"label": "other", "probability": round(1 - p.probability, 6)}]
    )
    unknown = False
    latency_ms = 12.5


class LabelCorrectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LabelCorrection

    photo = factory.SubFactory(PhotoFactory)
    corrected_by = factory.SubFactory(UserFactory)
    old_label = "monarch"
    new_label = "viceroy"


def answer_fields(kind, label=None, candidates=()) -> dict:
    """The Photo fields of a stored models' answer (an ml.identify.Identification)."""
    from ml.identify import Candidate, Identification

    answer = Identification(kind, label, tuple(Candidate(c, p) for c, p in candidates), {})
    return {"identification": answer.to_dict(), "identification_kind": kind, "identification_label": label or ""}
