"""Hostile or broken uploads: each is refused with a readable reason, before any row or file exists.
The type is decided by decoding the bytes with Pillow, never by the name or the content type."""

import io

import pytest
from PIL import Image

from classifier import images, services
from classifier.models import Photo
from tests.classifier.conftest import media_files
from tests.classifier.images import image_bytes, upload

pytestmark = pytest.mark.django_db

HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def _frames(fmt, **kwargs):
    frames = [Image.new("RGB", (32, 32), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], **kwargs)
    return out.getvalue()


def _bomb_png() -> bytes:
    # 20000x20000 one-bit pixels compress to ~50 KB; decoded as RGB they would take 1.2 GB.
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, "PNG")
    return out.getvalue()


BAD = {
    "empty": (b"", "is empty"),
    "text renamed .jpg": (b"just some text, not a photo\n" * 10, "not a JPEG, PNG or WebP"),
    "HTML renamed .jpg": (HTML, "not a JPEG, PNG or WebP"),
    "SVG": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><script>alert(1)</script></svg>', "not a JPEG, PNG or WebP"),
    "truncated JPEG": (image_bytes("JPEG", size=(400, 300))[:700], "not a JPEG, PNG or WebP"),
    "truncated PNG": (image_bytes("PNG", size=(400, 300))[:-40], "not a JPEG, PNG or WebP"),
    "PNG + HTML polyglot": (image_bytes("PNG") + HTML, "other data appended"),
    "JPEG + HTML polyglot": (image_bytes("JPEG") + HTML, "other data appended"),
    "JPEG + ZIP": (image_bytes("JPEG") + b"PK\x03\x04" + b"\x14" * 60, "other data appended"),
    "WebP + HTML": (image_bytes("WEBP") + HTML, "other data appended"),
    "animated PNG": (_frames("PNG"), "animated or has several frames"),
    "animated WebP": (_frames("WEBP"), "animated or has several frames"),
    "animated GIF": (_frames("GIF"), "not a JPEG, PNG or WebP"),
    "multi-page TIFF": (_frames("TIFF"), "not a JPEG, PNG or WebP"),
    "multi-picture JPEG (MPO)": (_frames("MPO"), "animated or has several frames"),
    "decompression bomb": (_bomb_png(), "too many pixels"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_upload_is_refused_with_a_reason_and_leaves_nothing(user, media_root, case):
    content, message = BAD[case]
    # A convincing name and content type change nothing: only the decoded bytes count.
    with pytest.raises(services.UploadError) as error:
        services.photos_create(owner=user, uploads=[upload("monarch.jpg", content=content, content_type="image/jpeg")])
    assert message in error.value.messages[0], error.value.messages[0]
    assert Photo.objects.count() == 0 and media_files(media_root) == []


def test_the_bomb_file_is_only_a_few_dozen_kilobytes():
    content = BAD["decompression bomb"][0]
    assert len(content) < 200_000


def test_zero_padding_after_the_image_is_tolerated(user):
    photo = services.photo_create(owner=user, upload=upload(content=image_bytes("JPEG") + b"\0" * 16))
    assert photo.image_format == "JPEG"


@pytest.mark.parametrize("fmt, kwargs", [("JPEG", {"progressive": True}), ("JPEG", {"quality": 30}), ("WEBP", {"lossless": True}), ("PNG", {})])
def test_every_kind_of_honest_image_ends_where_its_data_ends(user, fmt, kwargs):
    import numpy as np

    pixels = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **kwargs)
    photo = services.photo_create(owner=user, upload=upload("x.bin", content=out.getvalue(), content_type="text/plain"))
    assert photo.image_format == fmt


def test_real_photos_have_no_trailing_data(butterflies_dir):
    paths = sorted((butterflies_dir / "test").glob("*/*.jpg"))
    assert len(paths) > 900
    flagged = [p.name for p in paths if images.has_trailing_data(p.read_bytes(), "JPEG")]
    assert flagged == []


def test_size_limit_is_configurable_and_checked_before_decoding(user, settings, media_root):
    settings.UPLOAD_MAX_BYTES = 5000
    with pytest.raises(services.UploadTooLarge, match="larger than"):
        services.photo_create(owner=user, upload=upload(content=image_bytes("PNG") + b"x" * 6000))
    assert Photo.objects.count() == 0 and media_files(media_root) == []


@pytest.mark.parametrize("name", ["../../etc/passwd.jpg", "..\\..\\windows\\win.ini.jpg", "photo\r\nSet-Cookie: x=1.jpg", "a\x00b\x1b[31m.jpg"])
def test_a_hostile_file_name_never_reaches_storage_or_messages(user, media_root, name):
    # The name is not used for storage at all; messages show its printable last part only.
    photo = services.photo_create(owner=user, upload=upload(name, content=image_bytes()))
    for stored in (photo.original.name, photo.display.name, photo.thumbnail.name):
        assert stored.split("/")[0] in {"originals", "display", "thumbnails"} and ".." not in stored
        assert all(c.isalnum() or c in "/._" for c in stored)
    assert all(path.resolve().is_relative_to(media_root.resolve()) for path in media_root.rglob("*"))
    with pytest.raises(services.UploadError) as error:
        services.photo_create(owner=user, upload=upload(name, content=b"junk"))
    message = error.value.messages[0]
    assert all(c.isprintable() for c in message) and "/" not in message.split('"')[1] and "\\" not in message


def test_exif_orientation_applied_gps_dropped_original_untouched(user):
    from django.core.files.storage import default_storage

    image = Image.new("RGB", (300, 100), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 8  # orientation: rotate 270 degrees
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 17.9)})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    content = out.getvalue()
    photo = services.photo_create(owner=user, upload=upload(content=content))
    for name in (photo.display.name, photo.thumbnail.name):
        with default_storage.open(name) as f:
            stored = f.read()
        with Image.open(io.BytesIO(stored)) as shown:
            assert shown.height > shown.width  # upright
            assert not shown.getexif() and "exif" not in shown.info
    with default_storage.open(photo.original.name) as f:
        assert f.read() == content  # the owner's original keeps its metadata, byte for byte


def test_classification_sees_the_photo_upright_too():
    # The worker decodes the untouched original: EXIF orientation must be applied there as well.
    import numpy as np

    from ml import images

    upright = Image.new("RGB", (60, 120), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 60, 30))  # red band at the top
    stored = upright.rotate(90, expand=True)  # as the camera wrote the pixels: 120x60
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    out = io.BytesIO()
    stored.save(out, "JPEG", exif=exif, quality=95)
    pixels = images.to_array(io.BytesIO(out.getvalue()), 32)
    assert pixels[:4, :, 0].mean() > 200 and pixels[:4, :, 2].mean() < 60  # red on top
    assert pixels[-4:, :, 2].mean() > 200  # blue below
    assert not np.allclose(pixels, images.to_array(io.BytesIO(image_bytes("JPEG", size=(120, 60))), 32))
