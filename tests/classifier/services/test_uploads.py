import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from classifier import images, services
from classifier.models import Photo
from tests.classifier.conftest import media_files
from tests.classifier.images import image_bytes, upload

pytestmark = pytest.mark.django_db


def test_photo_create_stores_original_display_and_thumbnail_under_unguessable_names(user, media_root, django_capture_on_commit_callbacks):
    content = image_bytes("JPEG", size=(800, 600))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        photo = services.photo_create(owner=user, upload=upload("../../etc/passwd.jpg", content=content))

    assert len(callbacks) == 1  # one classification task, sent only once the row is committed
    photo.refresh_from_db()
    assert photo.owner == user and photo.status == Photo.Status.PENDING
    assert (photo.width, photo.height, photo.image_format, photo.size_bytes) == (800, 600, "JPEG", len(content))
    import hashlib

    assert photo.sha256 == hashlib.sha256(content).hexdigest()
    for name in (photo.original.name, photo.display.name, photo.thumbnail.name):
        assert "passwd" not in name
        stem = name.rsplit("/", 1)[1].split(".")[0]
        assert len(stem) == 32 and int(stem, 16) >= 0
    with default_storage.open(photo.original.name) as f:
        assert f.read() == content
    with default_storage.open(photo.thumbnail.name) as f, Image.open(f) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == images.THUMBNAIL_MAX_SIDE
    assert len(media_files(media_root)) == 3


def test_display_image_is_transposed_and_has_no_exif(user):
    image = Image.new("RGB", (300, 100), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    exif[0x010F] = "SecretCamera"
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    photo = services.photo_create(owner=user, upload=upload(content=out.getvalue()))
    with default_storage.open(photo.display.name) as f:
        stored = f.read()
    with Image.open(io.BytesIO(stored)) as display:
        assert display.size == (100, 300)
        assert not display.getexif()
    assert b"SecretCamera" not in stored


@pytest.mark.parametrize("fmt, kwargs", [("PNG", {}), ("WEBP", {}), ("PNG", {"mode": "RGBA", "color": (1, 2, 3, 0)})])
def test_png_and_webp_are_accepted(user, fmt, kwargs):
    photo = services.photo_create(owner=user, upload=upload(f"x.{fmt.lower()}", content=image_bytes(fmt, **kwargs)))
    assert photo.image_format == fmt
    assert photo.original.name.endswith("." + {"PNG": "png", "WEBP": "webp"}[fmt])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a JPEG, PNG or WebP"),
        (image_bytes("GIF"), "not a JPEG, PNG or WebP"),
        (image_bytes("BMP"), "not a JPEG, PNG or WebP"),
        (image_bytes("JPEG")[:200], "not a JPEG, PNG or WebP"),
    ],
)
def test_bad_content_is_refused_and_nothing_is_left(user, media_root, content, message):
    with pytest.raises(services.UploadError) as error:
        services.photo_create(owner=user, upload=upload("photo.jpg", content=content))
    assert message in error.value.messages[0]
    assert Photo.objects.count() == 0 and media_files(media_root) == []


def test_animated_webp_is_refused(user):
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(services.UploadError, match="animated"):
        services.photo_create(owner=user, upload=upload("a.webp", content=out.getvalue()))


def test_too_large_and_too_many_pixels(user, settings, media_root):
    settings.UPLOAD_MAX_BYTES = 1000
    with pytest.raises(services.UploadTooLarge):
        services.photo_create(owner=user, upload=upload(content=image_bytes(size=(400, 400), color=(1, 2, 3)) + b"\0" * 2000))
    settings.UPLOAD_MAX_BYTES = 10_000_000
    settings.UPLOAD_MAX_PIXELS = 100 * 100
    with pytest.raises(services.UploadError, match="megapixels"):
        services.photo_create(owner=user, upload=upload(content=image_bytes(size=(101, 100))))
    assert Photo.objects.count() == 0 and media_files(media_root) == []


def test_several_photos_are_all_or_nothing(user, settings, media_root):
    good = [upload(content=image_bytes(color=(i, i, i))) for i in range(3)]
    photos = services.photos_create(owner=user, uploads=good)
    assert len(photos) == 3 and len(media_files(media_root)) == 9

    with pytest.raises(services.UploadError):
        services.photos_create(owner=user, uploads=[upload(content=image_bytes()), upload(content=b"junk")])
    assert Photo.objects.count() == 3 and len(media_files(media_root)) == 9

    settings.UPLOAD_MAX_FILES = 2
    with pytest.raises(services.UploadError, match="at most 2"):
        services.photos_create(owner=user, uploads=[upload(content=image_bytes()) for _ in range(3)])
    with pytest.raises(services.UploadError, match="at least one"):
        services.photos_create(owner=user, uploads=[])


def test_photo_delete_removes_row_predictions_and_files(user, media_root, second_model, django_capture_on_commit_callbacks):
    from tests.classifier.factories import PredictionFactory

    photo = services.photo_create(owner=user, upload=upload())
    PredictionFactory(photo=photo, model_version=second_model)
    with django_capture_on_commit_callbacks(execute=True):
        services.photo_delete(photo=photo)
    assert not Photo.objects.filter(pk=photo.pk).exists()
    assert media_files(media_root) == []
