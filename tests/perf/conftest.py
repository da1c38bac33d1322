import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from classifier.models import Photo, unguessable_name
from tests.classifier.conftest import media_root  # noqa: F401 (autouse: uploads under tmp_path)
from tests.classifier.factories import PhotoFactory


@pytest.fixture
def real_photos(butterflies_dir):
    """Real test photos as bytes, one per species, in a fixed order."""
    folders = sorted(p for p in (butterflies_dir / "test").iterdir() if p.is_dir())
    return [(folder.name, sorted(folder.glob("*.jpg"))[0].read_bytes()) for folder in folders]


@pytest.fixture
def pending_photo():
    """Makes a pending photo whose original is the given image bytes."""

    def make(content: bytes, **fields) -> Photo:
        original = default_storage.save(unguessable_name("originals", "jpg"), ContentFile(content))
        return PhotoFactory(original=original, status=Photo.Status.PENDING, **fields)

    return make
