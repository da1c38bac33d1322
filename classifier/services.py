"""Writes. Every change to photos, predictions, model versions and labels happens here."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from PIL import Image, ImageOps, UnidentifiedImageError

from classifier import inference
from classifier.models import (
    NOT_A_BUTTERFLY,
    LabelCorrection,
    ModelVersion,
    Photo,
    Prediction,
    unguessable_name,
)

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
DISPLAY_MAX_SIDE = 1280
THUMBNAIL_MAX_SIDE = 320


class UploadError(ValidationError):
    """An upload is refused: not an accepted image, too many files, too many pixels."""


class UploadTooLarge(UploadError):
    """An upload is over settings.UPLOAD_MAX_BYTES (the API answers 413)."""


# Uploads


@dataclass
class CheckedImage:
    content: bytes
    image_format: str
    width: int
    height: int
    sha256: str


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


def _png_end(content: bytes) -> int:
    """Offset just after the IEND chunk (chunk: 4-byte length, 4-byte type, data, 4-byte CRC)."""
    offset = 8
    while offset + 8 <= len(content):
        length = int.from_bytes(content[offset:offset + 4], "big")
        kind = content[offset + 4:offset + 8]
        offset += 12 + length
        if kind == b"IEND":
            return offset
    return len(content)


def _webp_end(content: bytes) -> int:
    """RIFF container: 'RIFF', little-endian size of what follows, padded to an even length."""
    size = int.from_bytes(content[4:8], "little")
    return 8 + size + (size & 1)


def _jpeg_end(content: bytes) -> int:
    """Offset just after the EOI marker: walks the marker segments and skips entropy-coded data
    (where 0xFF is followed by 0x00 or a restart marker); progressive files have several scans."""
    offset, size = 2, len(content)
    while offset + 1 < size:
        if content[offset] != 0xFF:
            return size  # not a marker where one must be: Pillow's decode judges the stream
        marker = content[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0xD9:  # EOI
            return offset + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        offset += 2 + int.from_bytes(content[offset + 2:offset + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                offset = content.find(b"\xff", offset)
                if offset < 0 or offset + 1 >= size:
                    return size
                following = content[offset + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    offset += 1 if following == 0xFF else 2
                    continue
                break
    return size


IMAGE_END = {"JPEG": _jpeg_end, "PNG": _png_end, "WEBP": _webp_end}


def _has_trailing_data(content: bytes, image_format: str) -> bool:
    """Bytes after the image's own end marker (other than zero padding some encoders add): a
    polyglot, e.g. a PNG with an HTML page or a ZIP archive appended, which browsers or other
    tools could read as something else. The original is stored untouched, so it is refused."""
    end = IMAGE_END[image_format](content)
    return bool(content[end:].strip(b"\x00"))


def photo_check_upload(upload) -> CheckedImage:
    """Decodes the content with Pillow: JPEG, PNG or WebP, one frame, within the pixel cap, with
    nothing after the image data. The file name and the client's content type play no part."""
    content = _read_limited(upload)
    if not content:
        raise UploadError(f"{_client_name(upload)} is empty.", code="empty")
    unreadable = UploadError(
        f"{_client_name(upload)} is not a JPEG, PNG or WebP image that can be read.", code="invalid_image"
    )
    too_many_pixels = UploadError(
        f"{_client_name(upload)} has too many pixels; the limit is "
        f"{settings.UPLOAD_MAX_PIXELS // 1_000_000} megapixels.",
        code="too_many_pixels",
    )
    try:
        with Image.open(io.BytesIO(content)) as image:
            image_format = image.format
            width, height = image.size
            frames = getattr(image, "n_frames", 1)
            if image_format == "MPO" or (image_format in ACCEPTED_FORMATS and frames != 1):
                raise UploadError(
                    f"{_client_name(upload)} is animated or has several frames; upload a single still photo.",
                    code="animated",
                )
            if image_format not in ACCEPTED_FORMATS:
                raise unreadable
            if width * height > settings.UPLOAD_MAX_PIXELS:
                raise UploadError(
                    f"{_client_name(upload)} has {width}x{height} pixels; the limit is "
                    f"{settings.UPLOAD_MAX_PIXELS // 1_000_000} megapixels.",
                    code="too_many_pixels",
                )
            image.verify()
        with Image.open(io.BytesIO(content)) as image:
            if image.format == "JPEG":
                # The whole entropy-coded stream is still read (truncation and corruption are
                # caught), but libjpeg skips most of the inverse DCT: a 12 MP photo in ~1/5 the time.
                image.draft(None, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except UploadError:
        raise
    except Image.DecompressionBombError:
        # Pillow refuses to even open images over twice its own pixel limit.
        raise too_many_pixels from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise unreadable from None
    if _has_trailing_data(content, image_format):
        raise UploadError(
            f"{_client_name(upload)} has other data appended after the image; upload the photo alone.",
            code="trailing_data",
        )
    return CheckedImage(content, image_format, width, height, hashlib.sha256(content).hexdigest())


def _reencode(content: bytes, max_side: int) -> bytes:
    """Upright (EXIF-transposed) RGB JPEG no larger than max_side, with no EXIF or other metadata."""
    with Image.open(io.BytesIO(content)) as image:
        if image.format == "JPEG":
            # Draft mode: libjpeg decodes at 1/2, 1/4 or 1/8 scale, still at least the target size
            # (it must happen before exif_transpose loads the image); LANCZOS takes it from there.
            # A 4000x3000 upload: display from a 2000x1500 decode, thumbnail from 500x375.
            scale = min(1.0, max_side / max(image.size))
            image.draft(None, (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85, optimize=True)
        return out.getvalue()


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
            for image in checked:
                original = _save(unguessable_name("originals", ACCEPTED_FORMATS[image.image_format]), image.content)
                saved.append(original)
                display = _save(unguessable_name("display", "jpg"), _reencode(image.content, DISPLAY_MAX_SIDE))
                saved.append(display)
                thumbnail = _save(unguessable_name("thumbnails", "jpg"), _reencode(image.content, THUMBNAIL_MAX_SIDE))
                saved.append(thumbnail)
                photo = Photo.objects.create(
                    owner=owner,
                    original=original,
                    display=display,
                    thumbnail=thumbnail,
                    sha256=image.sha256,
                    size_bytes=len(image.content),
                    width=image.width,
                    height=image.height,
                    image_format=image.image_format,
                )
                photos.append(photo)
                _enqueue_classification(photo.pk)
    except Exception:
        _delete_files(saved)
        raise
    return photos


def photo_create(*, owner, upload) -> Photo:
    return photos_create(owner=owner, uploads=[upload])[0]


def _send_classification(photo_id: int, countdown: float | None = None) -> bool:
    """Sends the classify task now; False (logged) when the broker cannot be reached. The photo
    then stays pending and photos_sweep_pending sends it again once the broker is back."""
    from classifier.tasks import classify_photo

    try:
        classify_photo.apply_async(args=[photo_id], queue=settings.CLASSIFIER_TASK_QUEUE, countdown=countdown)
    except Exception:  # kombu/redis raise many types (OperationalError, ConnectionError, OSError)
        logger.warning("could not send the classify task of photo %s; the sweep will resend it", photo_id, exc_info=True)
        return False
    return True


def _enqueue_classification(photo_id: int, countdown: float | None = None) -> None:
    # After commit, so the worker finds the row; a broker outage must not fail the upload,
    # whose photo is already stored.
    transaction.on_commit(lambda: _send_classification(photo_id, countdown))


def photos_sweep_pending(*, older_than_seconds: float | None = None, limit: int = 500) -> list[int]:
    """Sends the classify task again for photos pending longer than CLASSIFIER_SWEEP_PENDING_SECONDS
    (their task was lost: broker down at upload, broker data lost) that no live claim holds.

    Each photo's queued_at is moved to now by a conditional UPDATE before it is sent, so
    concurrent sweeps (one per worker with embedded beat) send each photo once per period.
    Returns the ids sent.
    """
    age = settings.CLASSIFIER_SWEEP_PENDING_SECONDS if older_than_seconds is None else older_than_seconds
    now = timezone.now()
    cutoff = now - timedelta(seconds=age)
    stuck = (
        Photo.objects.filter(status=Photo.Status.PENDING, queued_at__lt=cutoff)
        .filter(Q(claimed_by="") | Q(claim_expires__lt=now) | Q(claim_expires__isnull=True))
        .order_by("queued_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = []
    for photo_id in list(stuck):
        if Photo.objects.filter(pk=photo_id, status=Photo.Status.PENDING, queued_at__lt=cutoff).update(queued_at=now):
            if not _send_classification(photo_id):
                break  # broker still down: the next sweep tries again (queued_at moved on)
            sent.append(photo_id)
    if sent:
        logger.info("sweep: sent %d photo(s) pending longer than %ss again: %s", len(sent), age, sent[:20])
    return sent


def photo_recheck_later(*, photo_id: int) -> None:
    """Queues another classify task for the photo after CLASSIFIER_CLAIM_RECHECK_SECONDS."""
    _enqueue_classification(photo_id, countdown=settings.CLASSIFIER_CLAIM_RECHECK_SECONDS)


def photo_delete(*, photo: Photo) -> None:
    """Deletes the photo, its predictions and corrections, and (once committed) its files."""
    names = [photo.original.name, photo.display.name, photo.thumbnail.name]
    with transaction.atomic():
        photo.delete()
        transaction.on_commit(lambda: _delete_files(names))


def photo_retry(*, photo: Photo) -> Photo:
    """Queues a failed (or stale pending) photo for classification again."""
    from classifier.selectors import photo_is_stale

    if photo.status == Photo.Status.DONE or (photo.status == Photo.Status.PENDING and not photo_is_stale(photo)):
        return photo
    with transaction.atomic():
        Photo.objects.filter(pk=photo.pk).update(status=Photo.Status.PENDING, failure_reason="", queued_at=timezone.now())
        _enqueue_classification(photo.pk)
    photo.status, photo.failure_reason = Photo.Status.PENDING, ""
    return photo


# Classification (runs in Celery workers)


class NoActiveModel(Exception):
    pass


class ModelsFailed(inference.InferenceError):
    """Some active model versions could not be loaded or run; the others' predictions are stored."""


class PhotoClaimed(Exception):
    """Another worker has the photo in the batch it is classifying, and its claim has not lapsed."""

    def __init__(self, photo_id: int, expires):
        super().__init__(f"photo {photo_id} is being classified by another worker (claim until {expires})")
        self.photo_id, self.expires = photo_id, expires


def photo_classify(*, photo_id: int) -> Photo:
    """Runs every active model version the photo has no prediction from yet; idempotent.

    Raises Photo.DoesNotExist (deleted meanwhile), NoActiveModel, inference.InferenceError,
    PhotoClaimed (another worker is classifying it).
    """
    return photos_classify_batch(photo_id=photo_id, batch_size=1)[0]


def photos_classify_batch(*, photo_id: int, batch_size: int | None = None, claimant: str | None = None) -> list[Photo]:
    """Classifies the photo and, in the same batch, up to `batch_size - 1` other photos that are
    waiting (pending, unclaimed): each photo is decoded once per input size, then each active
    model runs once on the whole batch. Idempotent; returns the classified photos, this one first.

    `claimant` (the task id: a re-delivered task takes its own claims straight back) marks the
    claimed photos until CLASSIFIER_CLAIM_SECONDS from now, so concurrent workers never take the
    same photo and a dead worker's photos are taken over once its claim lapses. The other photos'
    own tasks later find them done. Raises like photo_classify.
    """
    from classifier.selectors import model_version_list_active

    batch_size = settings.CLASSIFIER_BATCH_SIZE if batch_size is None else max(1, int(batch_size))
    claimant = (claimant or uuid.uuid4().hex)[:64]
    photo = Photo.objects.get(pk=photo_id)
    versions = model_version_list_active()
    inference.forget_inactive([v.pk for v in versions])
    if not versions:
        raise NoActiveModel("No model is active; staff must activate one in the admin.")
    if not _missing_versions([photo], versions)[photo.pk]:
        # Nothing to run (e.g. another task's batch classified it): just make sure it says so.
        Photo.objects.filter(pk=photo.pk).exclude(status=Photo.Status.DONE).update(
            status=Photo.Status.DONE, failure_reason="", classified_at=timezone.now(), claimed_by="", claim_expires=None
        )
        photo.refresh_from_db()
        return [photo]
    batch = photos_claim(photo_id=photo.pk, claimant=claimant, limit=batch_size)
    try:
        done_ids, broken = _classify_claimed(batch, versions, own_id=photo.pk, claimant=claimant)
    except BaseException:
        photos_release(claimant=claimant, photo_ids=[p.pk for p in batch])
        raise
    if broken:
        # The models that work have answered for the whole batch; each photo waits for the
        # broken ones in its own task, which retries and finally reports them (photo_mark_failed).
        photos_release(claimant=claimant, photo_ids=[p.pk for p in batch])
        raise ModelsFailed("; ".join(broken.values()))
    Photo.objects.filter(pk__in=done_ids).update(
        status=Photo.Status.DONE, failure_reason="", classified_at=timezone.now(), claimed_by="", claim_expires=None
    )
    photos = {p.pk: p for p in Photo.objects.filter(pk__in=done_ids)}
    if photo.pk not in photos:
        raise Photo.DoesNotExist(f"photo {photo.pk} was deleted during classification")
    return [photos[photo.pk]] + [photos[i] for i in done_ids if i != photo.pk and i in photos]


def _claimable(claimant: str, now) -> Q:
    return Q(claimed_by="") | Q(claimed_by=claimant) | Q(claim_expires__lt=now)


def photos_claim(*, photo_id: int, claimant: str, limit: int) -> list[Photo]:
    """Claims the photo (whatever its status) and up to `limit - 1` pending photos nobody holds,
    oldest first. Each row is taken by a conditional UPDATE, so two claimers never get the same
    photo (PostgreSQL also skips rows another claimer has locked). Raises PhotoClaimed when
    another live claimant holds the photo itself, Photo.DoesNotExist when it is gone."""
    now = timezone.now()
    expires = now + timedelta(seconds=settings.CLASSIFIER_CLAIM_SECONDS)
    claimable = _claimable(claimant, now)
    with transaction.atomic():
        # On SQLite this first write takes the database's write lock for the whole transaction.
        if not Photo.objects.filter(pk=photo_id).filter(claimable).update(claimed_by=claimant, claim_expires=expires):
            holder = Photo.objects.filter(pk=photo_id).values_list("claim_expires", flat=True).first()
            if holder is None and not Photo.objects.filter(pk=photo_id).exists():
                raise Photo.DoesNotExist(f"photo {photo_id} does not exist")
            raise PhotoClaimed(photo_id, holder)
        others: list[int] = []
        if limit > 1:
            waiting = (
                Photo.objects.filter(status=Photo.Status.PENDING)
                .filter(claimable)
                .exclude(pk=photo_id)
                .order_by("queued_at", "pk")
            )
            if connection.features.has_select_for_update_skip_locked:
                waiting = waiting.select_for_update(skip_locked=True)
            others = list(waiting.values_list("pk", flat=True)[: limit - 1])
            if others:
                Photo.objects.filter(pk__in=others).filter(claimable).update(claimed_by=claimant, claim_expires=expires)
    claimed = {p.pk: p for p in Photo.objects.filter(pk__in=[photo_id, *others], claimed_by=claimant)}
    return [claimed[i] for i in [photo_id, *others] if i in claimed]


def photos_release(*, claimant: str, photo_ids) -> None:
    """Gives up a claim (left to the photos' own tasks), e.g. after an error in the batch."""
    Photo.objects.filter(pk__in=list(photo_ids), claimed_by=claimant).update(claimed_by="", claim_expires=None)


def _missing_versions(photos, versions) -> dict[int, list[ModelVersion]]:
    done: dict[int, set[int]] = {p.pk: set() for p in photos}
    rows = Prediction.objects.filter(photo__in=[p.pk for p in photos], model_version__in=[v.pk for v in versions])
    for photo_id, version_id in rows.values_list("photo_id", "model_version_id"):
        done[photo_id].add(version_id)
    return {p.pk: [v for v in versions if v.pk not in done[p.pk]] for p in photos}


def _classify_claimed(batch: list[Photo], versions, *, own_id: int, claimant: str) -> tuple[list[int], dict[int, str]]:
    """Decodes each photo once per input size and runs each model once on the batch; stores the
    predictions. A photo of another task that cannot be read is released to its own task (which
    reports the error); this task's own photo raises. A model that cannot be loaded or run is
    skipped, so the others still answer. Returns the ids classified and {version id: reason}
    for the models that failed."""
    import numpy as np

    from ml import images

    todo = _missing_versions(batch, versions)
    needed = [v for v in versions if any(v in todo[p.pk] for p in batch)]
    broken: dict[int, str] = {}
    sizes = {}
    for version in needed:
        try:
            sizes[version.pk] = inference.input_size(version)
        except inference.InferenceError as error:
            logger.error("model %s unusable: %s", version, error)
            broken[version.pk] = str(error)
    needed = [v for v in needed if v.pk not in broken]
    contents: dict[int, bytes] = {}
    dropped: list[int] = []
    for photo in batch:
        if not todo[photo.pk]:
            continue
        try:
            with default_storage.open(photo.original.name, "rb") as file:
                contents[photo.pk] = file.read()
        except OSError:
            if photo.pk == own_id:
                raise
            logger.warning("photo %s left to its own task: its file cannot be read", photo.pk)
            dropped.append(photo.pk)
    # One decode + resize per photo and input size, shared by every model of that size.
    decoded: dict[int, tuple[dict[int, int], np.ndarray, float]] = {}
    for size in sorted(set(sizes.values())):
        started = time.perf_counter()
        rows, index = [], {}
        for photo in batch:
            if photo.pk in contents and photo.pk not in dropped and any(sizes.get(v.pk) == size for v in todo[photo.pk]):
                try:
                    rows.append(images.to_array(io.BytesIO(contents[photo.pk]), size))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                    if photo.pk == own_id:
                        raise
                    logger.warning("photo %s left to its own task: it does not decode", photo.pk, exc_info=True)
                    dropped.append(photo.pk)
                    continue
                index[photo.pk] = len(rows) - 1
        pixels = np.stack(rows) if rows else np.zeros((0, size, size, 3), np.float32)
        decoded[size] = (index, pixels, (time.perf_counter() - started) * 1000 / max(len(rows), 1))
    if dropped:
        photos_release(claimant=claimant, photo_ids=dropped)
    for version in needed:
        index, pixels, decode_ms = decoded[sizes[version.pk]]
        ids = [p.pk for p in batch if version in todo[p.pk] and p.pk in index and p.pk not in dropped]
        if not ids:
            continue
        rows = [index[i] for i in ids]
        batch_pixels = pixels if rows == list(range(len(pixels))) else pixels[rows]
        try:
            results = inference.predict_pixels(version, batch_pixels, top_k=5, extra_ms=decode_ms * len(ids))
        except inference.InferenceError as error:
            logger.error("model %s failed on a batch: %s", version, error)
            broken[version.pk] = str(error)
            continue
        predictions_store_many(model_version=version, results=list(zip(ids, results)))
    return [p.pk for p in batch if p.pk not in dropped], broken


def _prediction_fields(result) -> dict:
    top = [{"label": item.label, "probability": round(float(item.probability), 6)} for item in result.top]
    return {
        "top": top,
        "label": top[0]["label"],
        "probability": top[0]["probability"],
        "unknown": bool(result.unknown),
        "latency_ms": round(float(result.latency_ms), 2),
    }


def predictions_store_many(*, model_version: ModelVersion, results) -> None:
    """Stores one model's results for many photos ((photo_id, result) pairs) in one statement;
    pairs already stored are left as they are (unique per photo and version), deleted photos skipped."""
    rows = [Prediction(photo_id=photo_id, model_version=model_version, **_prediction_fields(result))
            for photo_id, result in results]
    try:
        with transaction.atomic():
            Prediction.objects.bulk_create(rows, ignore_conflicts=True)
    except IntegrityError:  # a photo was deleted meanwhile: store the others one by one
        for photo_id, result in results:
            try:
                prediction_store(photo=Photo(pk=photo_id), model_version=model_version, result=result)
            except Prediction.DoesNotExist:
                logger.info("photo %s was deleted during classification", photo_id)


def prediction_store(*, photo: Photo, model_version: ModelVersion, result) -> Prediction:
    """Stores one model's result; a second call for the same (photo, version) changes nothing."""
    defaults = _prediction_fields(result)
    try:
        with transaction.atomic():
            prediction, _ = Prediction.objects.get_or_create(photo=photo, model_version=model_version, defaults=defaults)
    except IntegrityError:  # a concurrent run stored it first
        prediction = Prediction.objects.get(photo=photo, model_version=model_version)
    return prediction


def photo_mark_failed(*, photo_id: int, reason: str) -> None:
    Photo.objects.filter(pk=photo_id).exclude(status=Photo.Status.DONE).update(
        status=Photo.Status.FAILED, failure_reason=reason[:1000]
    )


# Labels

# A label is flagged for a second look when every active model that classified the photo puts
# another species at least this high and the label itself at most LABEL_FLAG_MAX_LABEL_PROBABILITY.
LABEL_FLAG_PROBABILITY = 0.8
LABEL_FLAG_MAX_LABEL_PROBABILITY = 0.05


def _label_flag_reason(photo_id: int, label: str) -> str:
    """Why the current models strongly contradict `label`, or "" when they do not."""
    if label == NOT_A_BUTTERFLY:
        return ""
    predictions = list(
        Prediction.objects.filter(photo_id=photo_id, model_version__is_active=True).select_related("model_version")
    )
    if not predictions:
        return ""
    reasons = []
    for prediction in predictions:
        label_probability = next((t["probability"] for t in prediction.top if t["label"] == label), 0.0)
        if prediction.label == label or prediction.probability < LABEL_FLAG_PROBABILITY:
            return ""
        if label_probability > LABEL_FLAG_MAX_LABEL_PROBABILITY:
            return ""
        reasons.append(
            f"{prediction.model_version.name} says {prediction.label} at {prediction.probability:.0%} "
            f"({label}: {label_probability:.0%})"
        )
    return "; ".join(reasons)[:300]


def _check_label(new_label: str) -> str:
    from classifier.selectors import label_choices

    new_label = (new_label or "").strip()
    if new_label not in label_choices():
        raise ValidationError(f'"{new_label}" is not a species of an active model nor "{NOT_A_BUTTERFLY}".')
    return new_label


def label_correct(*, photo: Photo, new_label: str, corrected_by) -> LabelCorrection | None:
    """Sets the photo's label and appends who/when/old/new; None when the label is unchanged.
    A label the current models strongly contradict is flagged for a second look."""
    from classifier.selectors import photo_annotate

    new_label = _check_label(new_label)
    with transaction.atomic():
        locked = Photo.objects.select_for_update().get(pk=photo.pk)
        old_label = photo_annotate(Photo.objects.filter(pk=photo.pk)).values_list("effective_label", flat=True)[0] or ""
        if locked.label == new_label:
            return None
        correction = LabelCorrection.objects.create(
            photo=locked, corrected_by=corrected_by, old_label=old_label, new_label=new_label,
            is_confirmation=old_label == new_label,
        )
        flag = _label_flag_reason(photo.pk, new_label)
        Photo.objects.filter(pk=photo.pk).update(label=new_label, label_flag=flag)
    photo.label, photo.label_flag = new_label, flag
    return correction


def label_confirm(*, photo: Photo, confirmed_by, label: str | None = None) -> LabelCorrection:
    """A reviewer agrees with the label shown (the default model's prediction, or the current,
    possibly flagged, label): recorded as a confirmation, which is a label too, and clears the flag."""
    from classifier.selectors import photo_annotate

    with transaction.atomic():
        locked = Photo.objects.select_for_update().get(pk=photo.pk)
        shown = photo_annotate(Photo.objects.filter(pk=photo.pk)).values_list("effective_label", flat=True)[0] or ""
        label = _check_label(label if label is not None else shown)
        correction = LabelCorrection.objects.create(
            photo=locked, corrected_by=confirmed_by, old_label=shown, new_label=label, is_confirmation=shown == label
        )
        Photo.objects.filter(pk=photo.pk).update(label=label, label_flag="")
    photo.label, photo.label_flag = label, ""
    return correction


def labels_correct_bulk(*, photos, new_label: str, corrected_by) -> int:
    """Corrects several photos in one transaction; returns how many changed."""
    with transaction.atomic():
        changed = [label_correct(photo=photo, new_label=new_label, corrected_by=corrected_by) for photo in photos]
    return sum(1 for c in changed if c is not None)


def labels_flag_contradicted() -> int:
    """Re-checks every staff label against the active models (e.g. after a new version is
    promoted): flags the ones they strongly contradict. Returns how many are flagged now.
    Labels a reviewer confirmed after the models' predictions are left alone."""
    flagged = 0
    for photo_id, label in Photo.objects.exclude(label="").filter(label_flag="").values_list("pk", "label"):
        last = LabelCorrection.objects.filter(photo_id=photo_id).order_by("-created_at", "-id").first()
        newest_prediction = Prediction.objects.filter(photo_id=photo_id).order_by("-created_at").first()
        if last and last.is_confirmation and newest_prediction and last.created_at >= newest_prediction.created_at:
            continue
        reason = _label_flag_reason(photo_id, label)
        if reason:
            flagged += Photo.objects.filter(pk=photo_id, label=label).update(label_flag=reason)
    return flagged


# Model versions


def _artifact_location(directory: Path) -> str:
    directory = Path(directory).resolve()
    root = Path(settings.ML_ARTIFACTS_DIR).resolve()
    try:
        return str(directory.relative_to(root))
    except ValueError:
        return str(directory)


def _read_metadata(directory: Path) -> dict:
    # metadata.json is read directly (ml.artifact imports keras; the web process must not).
    path = Path(directory) / "metadata.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValidationError(f"no metadata.json in {directory}") from None
    except json.JSONDecodeError as error:
        raise ValidationError(f"unreadable {path}: {error}") from None
    if not isinstance(data, dict) or not data.get("classes"):
        raise ValidationError(f"{path} lists no classes")
    return data


def model_version_register(*, artifact_dir, active: bool = True, default: bool = False, using: str = "default") -> ModelVersion:
    return _model_version_register(artifact_dir=artifact_dir, active=active, default=default, using=using)[0]


def _model_version_register(*, artifact_dir, active, default, using) -> tuple[ModelVersion, bool]:
    """Registers (or finds) the ModelVersion of an artifact directory; idempotent.

    The version is metadata's "version", else its "created" timestamp, so retraining into the
    same directory makes a new version and retires the old one.
    """
    from butterflysite import artifact_store

    if artifact_store.is_stored(str(artifact_dir)):
        # A model published to object storage: "storage:<prefix>/<name>", fetched once to a cache.
        location = str(artifact_dir)
        try:
            directory = artifact_store.local_dir(location)
        except artifact_store.ArtifactStoreError as error:
            raise ValidationError(str(error)) from None
    else:
        directory = Path(artifact_dir)
        if not directory.is_absolute():
            directory = Path(settings.ML_ARTIFACTS_DIR) / directory
        location = _artifact_location(directory)
    data = _read_metadata(directory)
    name = str(data.get("name") or directory.name)
    version = str(data.get("version") or data.get("created") or "1")
    with transaction.atomic(using=using):
        model_version, created = ModelVersion.objects.using(using).get_or_create(
            name=name,
            version=version,
            defaults={
                "backbone": str(data.get("backbone", "")),
                "classes": list(data["classes"]),
                "metrics": data.get("metrics") or {},
                "unknown_threshold": float(data.get("unknown_threshold") or 0.0),
                "artifact_path": location,
                "is_active": active,
                "training_data_fingerprint": str(data.get("training_data_fingerprint", ""))[:100],
            },
        )
        # The directory now holds this version: older versions registered from it are retired.
        ModelVersion.objects.using(using).filter(artifact_path=location).exclude(pk=model_version.pk).update(
            is_active=False, is_default=False
        )
        if default:
            model_version_make_default(model_version=model_version, using=using)
    return model_version, created


def model_version_make_default(*, model_version: ModelVersion, using: str = "default") -> ModelVersion:
    with transaction.atomic(using=using):
        ModelVersion.objects.using(using).filter(is_default=True).exclude(pk=model_version.pk).update(is_default=False)
        ModelVersion.objects.using(using).filter(pk=model_version.pk).update(is_default=True, is_active=True)
    model_version.is_default, model_version.is_active = True, True
    return model_version


def model_version_register_trained(*, artifact_dir, number: int, created_by=None, replaces: ModelVersion | None = None,
                                   training_photo_ids=()) -> ModelVersion:
    """Registers a retrained artifact, inactive until promoted, with who made it, from which
    version, and which staff-labelled photos trained it."""
    model_version = model_version_register(artifact_dir=artifact_dir, active=False)
    ModelVersion.objects.filter(pk=model_version.pk).update(
        number=number, created_by=created_by, replaces=replaces, training_photo_ids=sorted(set(training_photo_ids))
    )
    model_version.refresh_from_db()
    return model_version


def model_version_next_number(*, name: str) -> int:
    from django.db.models import Max

    return (ModelVersion.objects.filter(name=name).aggregate(n=Max("number"))["n"] or 0) + 1


def model_version_promote(*, model_version: ModelVersion, replaces: ModelVersion | None = None) -> ModelVersion:
    """Makes the version the active default; the version it replaces stops classifying (workers
    read the active set on every task, so no restart is needed)."""
    with transaction.atomic():
        model_version_make_default(model_version=model_version)
        if replaces is not None and replaces.pk != model_version.pk:
            model_version_set_active(model_version=replaces, active=False)
    return model_version


def model_version_roll_back(*, model_version: ModelVersion) -> ModelVersion:
    """Returns to the version this one replaced: that one becomes the active default again and
    this one is deactivated. Returns the version now in use."""
    previous = model_version.replaces
    if previous is None:
        raise ValidationError(f"{model_version} replaced no earlier version; there is nothing to roll back to.")
    return model_version_promote(model_version=previous, replaces=model_version)


def model_version_set_active(*, model_version: ModelVersion, active: bool) -> ModelVersion:
    updates = {"is_active": active}
    if not active:
        updates["is_default"] = False
    ModelVersion.objects.filter(pk=model_version.pk).update(**updates)
    for key, value in updates.items():
        setattr(model_version, key, value)
    return model_version


def model_versions_register_shipped(*, using: str = "default") -> list[ModelVersion]:
    """Registers every artifact artifacts/manifest.json lists, active, with its default flagged."""
    root = Path(settings.ML_ARTIFACTS_DIR)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        logger.warning("no %s: no shipped model registered", manifest_path)
        return []
    manifest = json.loads(manifest_path.read_text())
    default = manifest.get("default")
    registered = []
    for name in manifest.get("artifacts", []):
        try:
            version, created = _model_version_register(artifact_dir=root / name, active=True, default=False, using=using)
        except ValidationError as error:
            logger.warning("shipped artifact %s not registered: %s", name, error.message)
            continue
        # A newly shipped default takes over; an existing one is left as staff set it.
        has_default = ModelVersion.objects.using(using).filter(is_default=True).exists()
        if name == default and (created or not has_default):
            model_version_make_default(model_version=version, using=using)
        registered.append(version)
    return registered
