"""Uploads: check the bytes (classifier/images.py) and the owner's storage quota, store the
original and its re-encoded copies, create the rows, and queue one classify task per photo once
committed; deletion; the sweep of stored files no row refers to."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from butterflysite.request_limits import readable_size
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


class QuotaExceeded(UploadTooLarge):
    """The upload would take its owner past settings.USER_STORAGE_QUOTA_BYTES (the API answers 413)."""


def _stored_bytes(owner) -> int:
    return Photo.objects.filter(owner=owner).aggregate(total=Sum("size_bytes"))["total"] or 0


def _check_quota(owner, incoming: int) -> None:
    quota = settings.USER_STORAGE_QUOTA_BYTES
    used = _stored_bytes(owner)
    if used + incoming > quota:
        raise QuotaExceeded(
            f"Your photos would take more than your storage quota of {readable_size(quota)}: "
            f"you store {readable_size(used)}, these photos add {readable_size(incoming)}. "
            "Delete some photos or upload fewer.",
            code="quota",
        )


def photos_create(*, owner, uploads) -> list[Photo]:
    """Checks every upload and the owner's quota first, then stores all of them or none; one
    classify task per photo once committed.

    Files are written before the rows that refer to them are committed (a row must never name a
    file that is not there). A refusal or error on the way deletes what was written; a process
    killed in between leaves files no row refers to, which media_sweep_orphans deletes after
    MEDIA_ORPHAN_GRACE_SECONDS. Only one file's bytes are in memory at a time.

    Raises UploadError (UploadTooLarge for size, QuotaExceeded) before anything is written;
    QuotaExceeded also when a concurrent upload of the same owner used the room meanwhile.
    """
    uploads = list(uploads)
    if not uploads:
        raise UploadError("Choose at least one photo.", code="required")
    if len(uploads) > settings.UPLOAD_MAX_FILES:
        raise UploadError(f"Upload at most {settings.UPLOAD_MAX_FILES} photos at once.", code="too_many_files")
    checked = []
    for upload in uploads:
        image = photo_check_upload(upload)
        checked.append((upload, image.image_format, image.width, image.height, image.sha256, len(image.content)))
        del image  # a request may carry 20 files of 10 MB: keep one in memory at a time
    incoming = sum(size for *_, size in checked)
    _check_quota(owner, incoming)

    saved: list[str] = []
    try:
        stored = []
        for upload, image_format, width, height, sha256, size in checked:
            content = _read_limited(upload)
            original = _save(unguessable_name("originals", images.ACCEPTED_FORMATS[image_format]), content)
            saved.append(original)
            display = _save(unguessable_name("display", "jpg"), images.reencode(content, images.DISPLAY_MAX_SIDE))
            saved.append(display)
            thumbnail = _save(unguessable_name("thumbnails", "jpg"), images.reencode(content, images.THUMBNAIL_MAX_SIDE))
            saved.append(thumbnail)
            stored.append(Photo(owner=owner, original=original, display=display, thumbnail=thumbnail, sha256=sha256,
                                size_bytes=size, width=width, height=height, image_format=image_format))
        with transaction.atomic():
            # The owner's row is locked until commit, so two uploads of one owner cannot both
            # pass the quota with the same free room.
            list(get_user_model().objects.select_for_update().filter(pk=owner.pk).values_list("pk", flat=True))
            _check_quota(owner, incoming)
            photos = []
            for photo in stored:
                photo.save(force_insert=True)
                photos.append(photo)
                photo_enqueue(photo.pk)
    except BaseException:  # also SystemExit/KeyboardInterrupt: a worker told to stop mid-upload
        _delete_files(saved)
        raise
    return photos


def photo_create(*, owner, upload) -> Photo:
    return photos_create(owner=owner, uploads=[upload])[0]


def photo_delete(*, photo: Photo) -> None:
    """Deletes the photo, its predictions and corrections, and (once committed) its files: the
    post_delete receiver in classifier/signals.py does that for every way a photo is deleted."""
    photo.delete()


# Orphans: stored photo files that no row refers to.

# Storage folder of each photo file field (unguessable_name prefixes in photos_create).
PHOTO_FILE_FOLDERS = {"originals": "original", "display": "display", "thumbnails": "thumbnail"}


def media_sweep_orphans(*, older_than_seconds: float | None = None, limit: int = 1000) -> list[str]:
    """Deletes stored photo files (originals/, display/, thumbnails/) that no photo row refers to
    and that were last written more than MEDIA_ORPHAN_GRACE_SECONDS ago: left by an upload whose
    process was killed between writing its files and committing its rows (or a deletion killed
    before its files went). The grace period keeps the files of uploads still in progress.
    Idempotent; returns the names deleted (at most `limit` per run)."""
    grace = settings.MEDIA_ORPHAN_GRACE_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timedelta(seconds=grace)
    deleted: list[str] = []
    for folder, field in PHOTO_FILE_FOLDERS.items():
        try:
            names = [f"{folder}/{name}" for name in default_storage.listdir(folder)[1]]
        except FileNotFoundError:  # FileSystemStorage before the first upload
            continue
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            referenced = set(Photo.objects.filter(**{f"{field}__in": chunk}).values_list(field, flat=True))
            for name in chunk:
                if name in referenced:
                    continue
                try:
                    if default_storage.get_modified_time(name) >= cutoff:
                        continue
                except (FileNotFoundError, OSError):
                    continue  # gone meanwhile
                # A row may have been committed since the query: check this one name again.
                if Photo.objects.filter(**{field: name}).exists():
                    continue
                _delete_files([name])
                deleted.append(name)
                if len(deleted) >= limit:
                    break
            if len(deleted) >= limit:
                break
    if deleted:
        logger.info("orphan sweep: deleted %d stored file(s) no photo refers to: %s", len(deleted), deleted[:20])
    return deleted
