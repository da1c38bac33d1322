"""Uploads: check the bytes (classifier/images.py), store the original and its re-encoded copies,
create the rows, and queue one classify task per photo once committed; deletion."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from classifier import images
from classifier.images import CheckedImage
from classifier.models import Photo, unguessable_name
from classifier.services.dispatch import photo_enqueue

logger = logging.getLogger(__name__)


class UploadError(ValidationError):
    """An upload is refused: not an accepted image, too many files, too many pixels."""


class UploadTooLarge(UploadError):
    """An upload is over settings.UPLOAD_MAX_BYTES (the API answers 413)."""


def _read_limited(upload) -> bytes:
    limit = settings.UPLOAD_MAX_BYTES
    size = getattr(upload, "size", None)
    if size is not None and size > limit:
        raise UploadTooLarge(f"{_client_name(upload)} is larger than {limit // (1024 * 1024)} MB.", code="too_large")
    if hasattr(upload, "seek"):
        upload.seek(0)
    content = upload.read(limit + 1)
    if len(content) > limit:
        raise UploadTooLarge(f"{_client_name(upload)} is larger than {limit // (1024 * 1024)} MB.", code="too_large")
    return content


def _client_name(upload) -> str:
    # Only ever used in messages back to the same user, never for storage: the last path part,
    # printable characters only (Django's parser already drops separators and control characters).
    name = Path(str(getattr(upload, "name", "") or "").replace("\\", "/")).name
    name = "".join(char for char in name if char.isprintable())
    return f'"{name[:80]}"' if name else "The file"


def _rejection_message(error: images.ImageRejected, name: str) -> str:
    megapixels = settings.UPLOAD_MAX_PIXELS // 1_000_000
    if error.code == "animated":
        return f"{name} is animated or has several frames; upload a single still photo."
    if error.code == "too_many_pixels" and error.width is not None:
        return f"{name} has {error.width}x{error.height} pixels; the limit is {megapixels} megapixels."
    if error.code == "too_many_pixels":
        return f"{name} has too many pixels; the limit is {megapixels} megapixels."
    if error.code == "trailing_data":
        return f"{name} has other data appended after the image; upload the photo alone."
    return f"{name} is not a JPEG, PNG or WebP image that can be read."


def photo_check_upload(upload) -> CheckedImage:
    """Decodes the content with Pillow: JPEG, PNG or WebP, one frame, within the pixel cap, with
    nothing after the image data. The file name and the client's content type play no part."""
    content = _read_limited(upload)
    if not content:
        raise UploadError(f"{_client_name(upload)} is empty.", code="empty")
    try:
        return images.check_image(content, max_pixels=settings.UPLOAD_MAX_PIXELS)
    except images.ImageRejected as error:
        raise UploadError(_rejection_message(error, _client_name(upload)), code=error.code) from None


def _save(name: str, content: bytes) -> str:
    return default_storage.save(name, ContentFile(content))


def _delete_files(names) -> None:
    for name in names:
        if name:
            try:
                default_storage.delete(name)
            except OSError:
                logger.warning("could not delete media file %s", name)


def photos_create(*, owner, uploads) -> list[Photo]:
    """Checks every upload first, then stores all of them or none; one classify task per photo.

    Raises UploadError (UploadTooLarge for size) before anything is written.
    """
    uploads = list(uploads)
    if not uploads:
        raise UploadError("Choose at least one photo.", code="required")
    if len(uploads) > settings.UPLOAD_MAX_FILES:
        raise UploadError(f"Upload at most {settings.UPLOAD_MAX_FILES} photos at once.", code="too_many_files")
    checked = [photo_check_upload(upload) for upload in uploads]

    saved: list[str] = []
    try:
        with transaction.atomic():
            photos = []
            for checked_image in checked:
                original = _save(unguessable_name("originals", images.ACCEPTED_FORMATS[checked_image.image_format]), checked_image.content)
                saved.append(original)
                display = _save(unguessable_name("display", "jpg"), images.reencode(checked_image.content, images.DISPLAY_MAX_SIDE))
                saved.append(display)
                thumbnail = _save(unguessable_name("thumbnails", "jpg"), images.reencode(checked_image.content, images.THUMBNAIL_MAX_SIDE))
                saved.append(thumbnail)
                photo = Photo.objects.create(
                    owner=owner,
                    original=original,
                    display=display,
                    thumbnail=thumbnail,
                    sha256=checked_image.sha256,
                    size_bytes=len(checked_image.content),
                    width=checked_image.width,
                    height=checked_image.height,
                    image_format=checked_image.image_format,
                )
                photos.append(photo)
                photo_enqueue(photo.pk)
    except Exception:
        _delete_files(saved)
        raise
    return photos


def photo_create(*, owner, upload) -> Photo:
    return photos_create(owner=owner, uploads=[upload])[0]


def photo_delete(*, photo: Photo) -> None:
    """Deletes the photo, its predictions and corrections, and (once committed) its files."""
    names = [photo.original.name, photo.display.name, photo.thumbnail.name]
    with transaction.atomic():
        photo.delete()
        transaction.on_commit(lambda: _delete_files(names))
