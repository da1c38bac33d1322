"""Writes. Every change to photos, predictions, model versions and labels happens here."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
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
    # Only ever used in messages back to the same user, never for storage.
    name = Path(str(getattr(upload, "name", "") or "")).name
    return f'"{name[:80]}"' if name else "The file"


def photo_check_upload(upload) -> CheckedImage:
    """Decodes the content with Pillow: JPEG, PNG or WebP, one frame, within the pixel cap."""
    content = _read_limited(upload)
    if not content:
        raise UploadError(f"{_client_name(upload)} is empty.", code="empty")
    unreadable = UploadError(
        f"{_client_name(upload)} is not a JPEG, PNG or WebP image that can be read.", code="invalid_image"
    )
    try:
        with Image.open(io.BytesIO(content)) as image:
            image_format = image.format
            width, height = image.size
            frames = getattr(image, "n_frames", 1)
            if image_format not in ACCEPTED_FORMATS:
                raise unreadable
            if width * height > settings.UPLOAD_MAX_PIXELS:
                raise UploadError(
                    f"{_client_name(upload)} has {width}x{height} pixels; the limit is "
                    f"{settings.UPLOAD_MAX_PIXELS // 1_000_000} megapixels.",
                    code="too_many_pixels",
                )
            if frames != 1:
                raise UploadError(f"{_client_name(upload)} is animated; upload a single still photo.", code="animated")
            image.verify()
        with Image.open(io.BytesIO(content)) as image:
            image.load()
    except UploadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise unreadable from None
    return CheckedImage(content, image_format, width, height, hashlib.sha256(content).hexdigest())


def _reencode(content: bytes, max_side: int) -> bytes:
    """Upright (EXIF-transposed) RGB JPEG no larger than max_side, with no EXIF or other metadata."""
    with Image.open(io.BytesIO(content)) as image:
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


def _enqueue_classification(photo_id: int) -> None:
    from classifier.tasks import classify_photo

    transaction.on_commit(
        lambda: classify_photo.apply_async(args=[photo_id], queue=settings.CLASSIFIER_TASK_QUEUE)
    )


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


def photo_classify(*, photo_id: int) -> Photo:
    """Runs every active model version the photo has no prediction from yet; idempotent.

    Raises Photo.DoesNotExist (deleted meanwhile), NoActiveModel, inference.InferenceError.
    """
    from classifier.selectors import model_version_list_active

    photo = Photo.objects.get(pk=photo_id)
    versions = model_version_list_active()
    inference.forget_inactive([v.pk for v in versions])
    if not versions:
        raise NoActiveModel("No model is active; staff must activate one in the admin.")
    done = set(photo.predictions.values_list("model_version_id", flat=True))
    todo = [v for v in versions if v.pk not in done]
    if todo:
        with default_storage.open(photo.original.name, "rb") as file:
            content = file.read()
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            for version in todo:
                result = inference.predict(version, image, top_k=5)
                prediction_store(photo=photo, model_version=version, result=result)
    Photo.objects.filter(pk=photo.pk).update(status=Photo.Status.DONE, failure_reason="", classified_at=timezone.now())
    photo.refresh_from_db()
    return photo


def prediction_store(*, photo: Photo, model_version: ModelVersion, result) -> Prediction:
    """Stores one model's result; a second call for the same (photo, version) changes nothing."""
    top = [{"label": item.label, "probability": round(float(item.probability), 6)} for item in result.top]
    defaults = {
        "top": top,
        "label": top[0]["label"],
        "probability": top[0]["probability"],
        "unknown": bool(result.unknown),
        "latency_ms": round(float(result.latency_ms), 2),
    }
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


def label_correct(*, photo: Photo, new_label: str, corrected_by) -> LabelCorrection | None:
    """Sets the photo's label and appends who/when/old/new; None when the label is unchanged."""
    from classifier.selectors import label_choices, photo_annotate

    new_label = (new_label or "").strip()
    if new_label not in label_choices():
        raise ValidationError(f'"{new_label}" is not a species of an active model nor "{NOT_A_BUTTERFLY}".')
    with transaction.atomic():
        locked = Photo.objects.select_for_update().get(pk=photo.pk)
        old_label = photo_annotate(Photo.objects.filter(pk=photo.pk)).values_list("effective_label", flat=True)[0] or ""
        if locked.label == new_label:
            return None
        correction = LabelCorrection.objects.create(
            photo=locked, corrected_by=corrected_by, old_label=old_label, new_label=new_label
        )
        Photo.objects.filter(pk=photo.pk).update(label=new_label)
    photo.label = new_label
    return correction


def labels_correct_bulk(*, photos, new_label: str, corrected_by) -> int:
    """Corrects several photos in one transaction; returns how many changed."""
    with transaction.atomic():
        changed = [label_correct(photo=photo, new_label=new_label, corrected_by=corrected_by) for photo in photos]
    return sum(1 for c in changed if c is not None)


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
