"""Classification (runs in Celery workers): claim a batch, decode each photo once, run every
active model once on the batch, store the predictions and then each photo's one answer."""

from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image

from classifier import inference
from classifier.models import ModelVersion, Photo, Prediction
from classifier.services.dispatch import photos_claim, photos_release

logger = logging.getLogger(__name__)


class NoActiveModel(Exception):
    pass


class ModelsFailed(inference.InferenceError):
    """Some active model versions could not be loaded or run; the others' predictions are stored."""


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
    if not _missing_versions([photo], versions)[photo.pk] and (
        photo.identification is not None or not inference.identifier_installed()
    ):
        # Nothing to run (e.g. another task's batch classified it): just make sure it says so.
        Photo.objects.filter(pk=photo.pk).exclude(status=Photo.Status.DONE).update(
            status=Photo.Status.DONE, failure_reason="", classified_at=timezone.now(), claimed_by="", claim_expires=None
        )
        photo.refresh_from_db()
        return [photo]
    batch = photos_claim(photo_id=photo.pk, claimant=claimant, limit=batch_size)
    try:
        report = photos_classify(photos=batch, versions=versions, strict_photo_id=photo.pk)
    except BaseException:
        photos_release(claimant=claimant, photo_ids=[p.pk for p in batch])
        raise
    # A photo of another task that cannot be read is left to its own task, which reports the error.
    photos_release(claimant=claimant, photo_ids=list(report.dropped))
    done_ids, broken = report.classified, dict(report.failed_models)
    if report.identifier_error:
        broken[0] = report.identifier_error
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


def _missing_versions(photos, versions) -> dict[int, list[ModelVersion]]:
    done: dict[int, set[int]] = {p.pk: set() for p in photos}
    rows = Prediction.objects.filter(photo__in=[p.pk for p in photos], model_version__in=[v.pk for v in versions])
    for photo_id, version_id in rows.values_list("photo_id", "model_version_id"):
        done[photo_id].add(version_id)
    return {p.pk: [v for v in versions if v.pk not in done[p.pk]] for p in photos}


@dataclass
class ClassifyReport:
    """What one run of the classify core did."""

    classified: list[int] = field(default_factory=list)  # photos not dropped, in the order given
    stored: int = 0  # predictions written
    identified: int = 0  # photos whose answer was stored
    dropped: dict[int, str] = field(default_factory=dict)  # photo id -> why it was left out
    failed_models: dict[int, str] = field(default_factory=dict)  # version id -> why it could not run
    identifier_error: str = ""  # why the identifier could not load or run ("" when it did)


def _needs_answer(photo: Photo, todo: list) -> bool:
    """The photo gets a new answer: it has none yet, or a model is about to add its prediction."""
    return photo.identification is None or bool(todo)


def photos_classify(*, photos, versions, strict_photo_id: int | None = None) -> ClassifyReport:
    """The one classify core: runs each version the photos have no prediction from yet, decoding
    each photo once per input size and running each model once on the whole set, and stores the
    predictions (the batch task and the re-classification with a new version both call it).
    Then, with the identifier installed (settings.ML_IDENTIFIER_DIR), it stores each photo's
    answer: the open-set signals (once per photo, from the same 224 px decode the models use) and
    the identification from the active models' predictions, default model first.

    A photo whose file cannot be read or decoded is dropped with its reason, except
    `strict_photo_id`, whose error is raised. A model that cannot be loaded or run is reported
    in `failed_models`, and the others still answer; the photos it should have answered get no
    new answer until it does.
    """
    import numpy as np

    from ml import images

    photos = list(photos)
    report = ClassifyReport()
    todo = _missing_versions(photos, versions)
    needed = [v for v in versions if any(v in todo[p.pk] for p in photos)]
    sizes = {}
    for version in needed:
        try:
            sizes[version.pk] = inference.input_size(version)
        except inference.InferenceError as error:
            logger.error("model %s unusable: %s", version, error)
            report.failed_models[version.pk] = str(error)
    needed = [v for v in needed if v.pk not in report.failed_models]
    identifier = None
    answer_ids = [p.pk for p in photos if _needs_answer(p, todo[p.pk])]
    if answer_ids:
        try:
            identifier = inference.get_identifier()
        except inference.InferenceError as error:
            logger.error("identifier unusable: %s", error)
            report.identifier_error = str(error)
    signal_ids = {p.pk for p in photos if identifier is not None and p.pk in answer_ids and p.openset_signals is None}
    signal_size = identifier.input_size if identifier is not None else None

    def wants(photo, size) -> bool:
        return any(sizes.get(v.pk) == size for v in todo[photo.pk]) or (photo.pk in signal_ids and size == signal_size)

    def drop(photo, reason):
        logger.warning("photo %s left out: %s", photo.pk, reason, exc_info=True)
        report.dropped[photo.pk] = reason

    contents: dict[int, bytes] = {}
    for photo in photos:
        if not todo[photo.pk] and photo.pk not in signal_ids:
            continue
        try:
            with default_storage.open(photo.original.name, "rb") as file:
                contents[photo.pk] = file.read()
        except OSError:
            if photo.pk == strict_photo_id:
                raise
            drop(photo, "its file cannot be read")
    # One decode + resize per photo and input size, shared by every model of that size and the
    # identifier; the decode time goes into each prediction's latency.
    decoded: dict[int, tuple[dict[int, int], np.ndarray, float]] = {}
    for size in sorted(set(sizes.values()) | ({signal_size} if signal_ids else set())):
        started = time.perf_counter()
        rows, index = [], {}
        for photo in photos:
            if photo.pk in contents and photo.pk not in report.dropped and wants(photo, size):
                try:
                    rows.append(images.to_array(io.BytesIO(contents[photo.pk]), size))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                    if photo.pk == strict_photo_id:
                        raise
                    drop(photo, "it does not decode")
                    continue
                index[photo.pk] = len(rows) - 1
        pixels = np.stack(rows) if rows else np.zeros((0, size, size, 3), np.float32)
        decoded[size] = (index, pixels, (time.perf_counter() - started) * 1000 / max(len(rows), 1))

    subsets = {}  # one array per (size, rows): the shared trunks remember a batch by identity

    def rows_of(size, ids):
        index, pixels, decode_ms = decoded[size]
        rows = tuple(index[i] for i in ids)
        if rows == tuple(range(len(pixels))):
            return pixels, decode_ms
        if (size, rows) not in subsets:
            subsets[size, rows] = pixels[list(rows)]
        return subsets[size, rows], decode_ms

    for version in needed:
        index = decoded[sizes[version.pk]][0]
        ids = [p.pk for p in photos if version in todo[p.pk] and p.pk in index and p.pk not in report.dropped]
        if not ids:
            continue
        batch_pixels, decode_ms = rows_of(sizes[version.pk], ids)
        try:
            results = inference.predict_pixels(version, batch_pixels, top_k=5, extra_ms=decode_ms * len(ids))
        except inference.InferenceError as error:
            logger.error("model %s failed on a batch: %s", version, error)
            report.failed_models[version.pk] = str(error)
            continue
        predictions_store_many(model_version=version, results=list(zip(ids, results, strict=True)))
        report.stored += len(ids)
    report.classified = [p.pk for p in photos if p.pk not in report.dropped]
    if identifier is not None:
        signals = {p.pk: p.openset_signals for p in photos if p.openset_signals is not None}
        ids = [i for i in answer_ids if i in signal_ids and i not in report.dropped]
        if ids:
            try:
                signals.update(zip(ids, inference.openset_signals(identifier, rows_of(signal_size, ids)[0]), strict=True))
            except inference.InferenceError as error:
                logger.error("identifier failed on a batch: %s", error)
                report.identifier_error = str(error)
                return report
        answerable = [i for i in answer_ids if i in signals and i not in report.dropped]
        report.identified = photos_identify(photo_ids=answerable, identifier=identifier, signals=signals)
    return report


def photos_identify(*, photo_ids, identifier, signals: dict) -> int:
    """Stores the answer of each photo that has a prediction from every active model: the
    identifier's decision from their top-5 lists (default model first) and the photo's open-set
    signals ({photo id: signals}). Returns how many photos got one."""
    from classifier.selectors import model_version_list_active

    active = model_version_list_active()
    tops: dict[int, dict[int, list]] = {i: {} for i in photo_ids}
    rows = Prediction.objects.filter(photo_id__in=list(photo_ids), model_version__in=active)
    for photo_id, version_id, top in rows.values_list("photo_id", "model_version_id", "top"):
        tops[photo_id][version_id] = [(item["label"], item["probability"]) for item in top]
    identified = 0
    for photo_id in photo_ids:
        if not active or any(v.pk not in tops[photo_id] for v in active):
            continue  # a model has not answered yet: its own retry brings the answer
        answer = identifier.identify([tops[photo_id][v.pk] for v in active], signals[photo_id])
        identified += Photo.objects.filter(pk=photo_id).update(
            identification=answer.to_dict(), identification_kind=answer.kind,
            identification_label=answer.label or "", openset_signals=signals[photo_id],
        )
    return identified


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

