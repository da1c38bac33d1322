"""Writes for the retraining loop: retrain runs, promotion, bulk re-classification, label export.

The training itself is `ml.retrain.retrain`, the one retraining entry point of the Django-free
`ml` package; it is imported inside the function that runs it, so web processes never load
TensorFlow.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import shutil
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from butterflysite import artifact_store
from classifier import artifacts, inference
from classifier import selectors as classifier_selectors
from classifier import services as classifier_services
from classifier.models import ModelVersion, Photo
from ml.cancel import Cancelled, raise_if_stopped
from retraining.models import RetrainRun

# What a retrain imports beyond the serving slug (requirements-ml.txt): TensorFlow/Keras to train
# and export, scikit-learn for the stratified validation split (ml.data.stratified_split).
TRAINING_MODULES = ("tensorflow", "keras", "sklearn")

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (RetrainRun.Status.QUEUED, RetrainRun.Status.RUNNING)
# A running run checks for a cancel request, and writes its heartbeat, this often (at most): one
# UPDATE of one row, from the training loop's own checks (every batch).
CHECK_INTERVAL_SECONDS = 1.0


# Retrain runs


def retrain_run_create(*, requested_by=None, include_flagged: bool = False, promote: bool = True,
                       holdout_fraction: float | None = None, train_config: dict | None = None) -> RetrainRun:
    """A queued run; refused while another run is queued or running (they would race for the
    next version number and the promotion)."""
    if holdout_fraction is not None and not 0 <= holdout_fraction < 1:
        raise ValidationError("The held-out fraction must be at least 0 and below 1.")
    # A run whose worker died must not block every later run (beat does this every minute too).
    retrain_runs_fail_lost()
    try:
        with transaction.atomic():
            _refuse_while_busy()
            return RetrainRun.objects.create(
                requested_by=requested_by,
                options={
                    "include_flagged": bool(include_flagged),
                    "promote": bool(promote),
                    "holdout_fraction": (settings.RETRAIN_HOLDOUT_FRACTION if holdout_fraction is None
                                         else float(holdout_fraction)),
                    "train_config": dict(train_config or {}),
                },
                stage="waiting for a worker",
            )
    except IntegrityError:
        # A concurrent request created its run first (constraint retrain_one_active_run).
        _refuse_while_busy()
        raise


def _refuse_while_busy() -> None:
    busy = RetrainRun.objects.filter(status__in=ACTIVE_STATUSES).first()
    if busy is not None:
        raise ValidationError(f"{busy} is still {busy.get_status_display().lower()}; wait for it to finish.")


def retrain_run_request(*, requested_by=None, **options) -> RetrainRun:
    """Creates a run and queues the Celery task that executes it (once the run is committed) on
    RETRAIN_TASK_QUEUE, which only the trainer process consumes."""
    from retraining.tasks import retrain_run_task

    with transaction.atomic():
        run = retrain_run_create(requested_by=requested_by, **options)
        run.task_id = str(uuid.uuid4())
        run.save(update_fields=["task_id"])
        transaction.on_commit(lambda: retrain_run_task.apply_async(args=[run.pk], queue=settings.RETRAIN_TASK_QUEUE,
                                                                   task_id=run.task_id))
    return run


def retrain_run_cancel(*, run: RetrainRun, cancelled_by=None) -> RetrainRun:
    """Stops a run. A queued run is cancelled at once and never starts; a running one is asked to
    stop, and its worker ends it as cancelled at its next check (within seconds: every training
    and evaluation batch), with no version registered and its output folder removed. The Celery
    task is revoked too, so a worker that has not started it drops it."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = RetrainRun.objects.filter(pk=run.pk, status=RetrainRun.Status.QUEUED).update(
            status=RetrainRun.Status.CANCELLED, cancel_requested_at=now, cancelled_by=cancelled_by, finished_at=now,
            stage="cancelled before it started")
        if not cancelled and not RetrainRun.objects.filter(pk=run.pk, status=RetrainRun.Status.RUNNING).update(
                cancel_requested_at=Coalesce("cancel_requested_at", Value(now)), cancelled_by=cancelled_by):
            run.refresh_from_db()
            raise ValidationError(f"{run} is {run.get_status_display().lower()}: there is nothing to cancel.")
        if run.task_id:
            transaction.on_commit(lambda: _revoke(run.task_id))
    run.refresh_from_db()
    return run


def _revoke(task_id: str) -> None:
    # A backstop only: the database says whether a run may start or go on; a broker that is down
    # must not make the cancel fail.
    from butterflysite.celery import app

    try:
        app.control.revoke(task_id)
    except Exception:  # noqa: BLE001 (any broker error)
        logger.warning("could not revoke retrain task %s; the run is cancelled in the database anyway", task_id,
                       exc_info=True)


def retrain_runs_fail_lost() -> int:
    """Ends every running run whose heartbeat is older than RETRAIN_HEARTBEAT_TIMEOUT: its worker
    died (a restart, out of memory, a crash). Runs that were being cancelled end cancelled, the
    others failed. Cheap (one UPDATE each); beat runs it every RETRAIN_LOST_CHECK_INTERVAL."""
    now = timezone.now()
    timeout = settings.RETRAIN_HEARTBEAT_TIMEOUT
    cutoff = now - timedelta(seconds=timeout)
    lost = RetrainRun.objects.filter(status=RetrainRun.Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff))
    cancelled = lost.exclude(cancel_requested_at=None).update(
        status=RetrainRun.Status.CANCELLED, finished_at=now, stage="cancelled (its worker stopped)")
    failed = lost.filter(cancel_requested_at=None).update(
        status=RetrainRun.Status.FAILED, finished_at=now, stage="failed",
        error=(f"Its worker stopped sending heartbeats for over {timeout} s (RETRAIN_HEARTBEAT_TIMEOUT): it died or "
               "was restarted (out of memory, a deploy, a crash). Nothing was registered; start a new run."))
    if cancelled or failed:
        logger.warning("retrain runs without a heartbeat for %s s: %s marked failed, %s cancelled", timeout, failed,
                       cancelled)
    return cancelled + failed


class _RunControl:
    """The link between a running run and its row: `should_stop` (called every training batch)
    asks the database at most every CHECK_INTERVAL_SECONDS whether the run may go on, and that
    same UPDATE is its heartbeat. It stops when staff cancel it or when it is no longer running
    (marked failed as lost meanwhile)."""

    def __init__(self, run_id: int):
        self.run_id, self.stop, self._checked = run_id, False, float("-inf")

    def should_stop(self) -> bool:
        if not self.stop and time.monotonic() - self._checked >= CHECK_INTERVAL_SECONDS:
            self._checked = time.monotonic()
            self.stop = not RetrainRun.objects.filter(
                pk=self.run_id, status=RetrainRun.Status.RUNNING, cancel_requested_at__isnull=True,
            ).update(heartbeat_at=timezone.now())
        return self.stop

    def progress(self, fraction: float, stage: str) -> None:
        RetrainRun.objects.filter(pk=self.run_id, status=RetrainRun.Status.RUNNING).update(
            progress=round(min(max(fraction, 0.0), 1.0), 3), stage=stage[:200], heartbeat_at=timezone.now())


def retrain_run_execute(*, run_id: int) -> RetrainRun:
    """Runs a queued run: trains a new version of the default model from the base data plus the
    staff labels, evaluates it and the default on the same held-out photos, registers it, and
    promotes it when the rule allows. Idempotent: a run that is not queued is left as it is."""
    now = timezone.now()
    if not RetrainRun.objects.filter(pk=run_id, status=RetrainRun.Status.QUEUED).update(
        status=RetrainRun.Status.RUNNING, started_at=now, heartbeat_at=now, progress=0.0, stage="starting"
    ):
        return RetrainRun.objects.get(pk=run_id)
    run = RetrainRun.objects.get(pk=run_id)
    control = _RunControl(run_id)
    out_dir, made_out_dir = None, False
    try:
        missing = [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]
        if missing:  # a slug worker (requirements.txt): it serves, it cannot train
            raise ValidationError(
                f"This worker cannot retrain: {', '.join(missing)} not installed (training extras, "
                "requirements-ml.txt). Retrains run on a worker that has them: see docs/retraining.md.")
        baseline = classifier_selectors.model_version_get_default()
        if baseline is None:
            raise ValidationError("No default model version: make one the default in the admin first.")
        number = classifier_services.model_version_next_number(name=baseline.name)
        out_dir = Path(settings.RETRAIN_OUTPUT_DIR) / f"{baseline.name}-{number}-run{run.pk}"
        made_out_dir = not out_dir.exists()
        outcome = _train(run, baseline, number, out_dir, control)
        if not retrain_run_finish(run=run, baseline=baseline, outcome=outcome, number=number):
            raise Cancelled("cancelled, or marked failed as lost, as it finished")
    except Cancelled:
        _remove_unregistered(out_dir if made_out_dir else None)
        ended = RetrainRun.objects.filter(pk=run_id, status=RetrainRun.Status.RUNNING).exclude(
            cancel_requested_at=None).update(status=RetrainRun.Status.CANCELLED, finished_at=timezone.now(),
                                             stage="cancelled")
        logger.warning("retrain run %s stopped: %s", run_id, "cancelled" if ended else "no longer running")
    except Exception as error:
        logger.exception("retrain run %s failed", run_id)
        _remove_unregistered(out_dir if made_out_dir else None)
        if isinstance(error, SoftTimeLimitExceeded):
            message = (f"Stopped: still training after RETRAIN_SOFT_TIME_LIMIT ({settings.RETRAIN_SOFT_TIME_LIMIT} s); "
                       "raise the limit or train with fewer epochs.")
        else:
            message = f"{type(error).__name__}: {error}"
        RetrainRun.objects.filter(pk=run_id, status=RetrainRun.Status.RUNNING).update(
            status=RetrainRun.Status.FAILED, finished_at=timezone.now(), stage="failed", error=message[:2000],
        )
        if not isinstance(error, (ValidationError, OSError, ValueError, SoftTimeLimitExceeded)):
            raise
    return RetrainRun.objects.get(pk=run_id)


def _remove_unregistered(out_dir: Path | None) -> None:
    """Removes a run's output folder unless a version was registered from it: no half-written or
    cancelled artifact stays on disk without its version."""
    if out_dir is not None and not ModelVersion.objects.filter(artifact_path__endswith=out_dir.name).exists():
        shutil.rmtree(out_dir, ignore_errors=True)


def retrain_run_finish(*, run: RetrainRun, baseline: ModelVersion, outcome, number: int) -> bool:
    """Records a trained run's outcome (an `ml.retrain.RetrainOutcome`): registers the new
    version, promotes it when the rule allows and the run asked for it, and marks the run
    succeeded. Returns False, changing nothing, when the run is no longer running (marked failed
    as lost meanwhile) or staff asked to cancel it."""
    with transaction.atomic():
        # First, so the run row's lock (on SQLite the database's write lock) keeps the lost-run
        # sweep and a cancel out until this commits; a run no longer running is not overwritten.
        if not RetrainRun.objects.filter(pk=run.pk, status=RetrainRun.Status.RUNNING,
                                         cancel_requested_at__isnull=True).update(stage="registering the new version"):
            return False
        candidate = classifier_services.model_version_register_trained(
            artifact_dir=artifact_location_for_workers(Path(outcome.artifact_dir)), number=number,
            created_by=run.requested_by, replaces=baseline,
            training_photo_ids=[int(key.split("-", 1)[1]) for key in outcome.training_keys],
        )
        promote = outcome.decision.promote and run.options.get("promote", True)
        if promote:
            classifier_services.model_version_promote(model_version=candidate, replaces=baseline)
        reasons = "; ".join(outcome.decision.reasons)
        if not run.options.get("promote", True):
            decision = RetrainRun.Decision.UNDECIDED
            reasons = f"evaluation only (the rule {'would' if outcome.decision.promote else 'would not'} promote): {reasons}"
        else:
            decision = RetrainRun.Decision.PROMOTED if promote else RetrainRun.Decision.REJECTED
        RetrainRun.objects.filter(pk=run.pk).update(
            status=RetrainRun.Status.SUCCEEDED, finished_at=timezone.now(), progress=1.0, stage="done",
            baseline=baseline, candidate=candidate,
            training_photo_ids=sorted(int(k.split("-", 1)[1]) for k in outcome.training_keys),
            holdout_photo_ids=sorted(int(k.split("-", 1)[1]) for k in outcome.holdout_keys),
            candidate_report=outcome.candidate, baseline_report=outcome.baseline or {},
            report_dir=str(outcome.artifact_dir),
            summary={"skipped": outcome.skipped, "timings_s": outcome.timings_s,
                     "retrain": outcome.metadata.get("retrain", {}), "rule_promotes": outcome.decision.promote},
            decision=decision, decision_reason=reasons, decided_at=timezone.now() if decision else None,
        )
    return True


def artifact_location_for_workers(artifact_dir: Path) -> str:
    """Where every worker can load a new version from. With object storage (production) a dyno's
    disk is its own and ephemeral, so the artifact is published to the bucket and registered as a
    `storage:` reference that each worker fetches once; on one machine the folder itself serves."""
    if isinstance(default_storage, FileSystemStorage):
        return str(artifact_dir)
    return artifact_store.publish(artifact_dir, artifact_dir.name)


def _original_suffix(row: classifier_selectors.LabelledPhoto) -> str:
    return Path(row.original).suffix.lower() or ".jpg"


def _copy_original(row: classifier_selectors.LabelledPhoto, target: Path, purpose: str) -> bool:
    """Copies a labelled photo's original from storage to a local file; False (logged, the photo
    left out of `purpose`) when it cannot be read."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with default_storage.open(row.original, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    except OSError:
        logger.warning("photo %s left out of %s: its original cannot be read", row.photo_id, purpose)
        return False
    return True


def _train(run: RetrainRun, baseline: ModelVersion, number: int, out_dir: Path, control: _RunControl):
    from ml import retrain as ml_retrain

    baseline_dir = artifacts.artifact_dir(baseline)
    metadata = artifacts.read_metadata(baseline_dir)
    labelled = classifier_selectors.labelled_photos(include_flagged=run.options.get("include_flagged", False),
                                                    include_not_butterfly=False)
    with tempfile.TemporaryDirectory(prefix="labelled-") as work:
        photos = []
        for row in labelled:
            raise_if_stopped(control.should_stop)  # copying from the bucket can take a while
            local = Path(work) / f"photo-{row.photo_id}{_original_suffix(row)}"
            if not _copy_original(row, local, "retraining"):
                continue
            photos.append(ml_retrain.LabelledPhoto(key=f"photo-{row.photo_id}", path=local, label=row.label,
                                                   previous_label=row.previous_label, content_hash=row.sha256))
        request = ml_retrain.RetrainRequest(
            base_data_dir=Path(settings.RETRAIN_BASE_DATA_DIR), benchmark_dir=Path(settings.RETRAIN_BENCHMARK_DIR), labelled=photos,
            backbones=ml_retrain.backbones_from_metadata(metadata, Path(settings.RETRAIN_WEIGHTS_DIR)),
            out_dir=out_dir, name=baseline.name, version=str(number), baseline_dir=baseline_dir,
            holdout_fraction=run.options.get("holdout_fraction", settings.RETRAIN_HOLDOUT_FRACTION),
            max_benchmark_drop=settings.RETRAIN_MAX_BENCHMARK_DROP,
            max_class_recall_drop=settings.RETRAIN_MAX_CLASS_RECALL_DROP,
            train_config={**ml_retrain.train_config_from_metadata(metadata), **run.options.get("train_config", {})},
            cache_dir=str(settings.RETRAIN_CACHE_DIR),
        )
        control.progress(0.01, f"{len(photos)} staff-labelled photos")
        outcome = ml_retrain.retrain(request, progress=control.progress, should_stop=control.should_stop)
    return outcome


def retrain_run_promote(*, run: RetrainRun, promoted_by) -> RetrainRun:
    """Staff promote a run's new version although the rule refused it (or it was evaluate-only)."""
    if run.status != RetrainRun.Status.SUCCEEDED or run.candidate is None:
        raise ValidationError(f"{run} has no new version to promote.")
    if run.decision in (RetrainRun.Decision.PROMOTED, RetrainRun.Decision.OVERRIDDEN):
        raise ValidationError(f"{run}'s version is already promoted.")
    with transaction.atomic():
        classifier_services.model_version_promote(model_version=run.candidate, replaces=run.baseline)
        rule_promotes = run.summary.get("rule_promotes", False)
        RetrainRun.objects.filter(pk=run.pk).update(
            decision=RetrainRun.Decision.PROMOTED if rule_promotes else RetrainRun.Decision.OVERRIDDEN,
            decided_by=promoted_by, decided_at=timezone.now(),
            decision_reason=f"{run.decision_reason} — promoted by {promoted_by}" if promoted_by else run.decision_reason,
        )
    run.refresh_from_db()
    return run


# Bulk re-classification with one version


def photos_reclassify(*, model_version_id: int, batch_size: int = 32) -> int:
    """Classifies every finished photo that has no prediction from this version yet, `batch_size`
    at a time through the one classify core; idempotent. Photos that cannot be read are skipped
    (logged). Returns how many were classified; raises inference.InferenceError when the version
    cannot be loaded or run."""
    model_version = ModelVersion.objects.get(pk=model_version_id)
    done = 0
    last_id = 0
    while True:
        batch = list(
            Photo.objects.filter(status=Photo.Status.DONE, pk__gt=last_id)
            .exclude(predictions__model_version=model_version)
            .order_by("pk")[:batch_size]
        )
        if not batch:
            break
        last_id = batch[-1].pk
        report = classifier_services.photos_classify(photos=batch, versions=[model_version])
        if report.failed_models:
            raise inference.InferenceError("; ".join(report.failed_models.values()))
        done += len(report.classified)
    classifier_services.labels_flag_contradicted()
    return done


def photos_reclassify_request(*, model_version: ModelVersion) -> None:
    from retraining.tasks import reclassify_photos_task

    # Classification work: the classification workers do it (they hold the models), not the trainer.
    transaction.on_commit(lambda: reclassify_photos_task.apply_async(args=[model_version.pk],
                                                                     queue=settings.CLASSIFIER_TASK_QUEUE))


# Export of staff labels


@dataclass
class ExportResult:
    directory: Path
    n_photos: int
    manifest: Path


MANIFEST_FIELDS = ["photo_id", "label", "kind", "labelled_by", "labelled_at", "sha256", "path"]


def labels_export(*, destination, include_not_butterfly: bool = False, include_flagged: bool = False) -> ExportResult:
    """Writes the corrected and confirmed photos as an ImageFolder tree (<label>/<photo id>.<ext>)
    plus manifest.csv (photo id, label, corrected/confirmed, who, when). The tree is built next to
    `destination` and renamed into place, so a failed export leaves nothing behind."""
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise ValidationError(f"{destination} exists and is not an empty folder.")
    rows = classifier_selectors.labelled_photos(include_flagged=include_flagged,
                                                include_not_butterfly=include_not_butterfly)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=destination.parent))
    try:
        written = []
        for row in rows:
            relative = Path(row.label) / f"{row.photo_id}{_original_suffix(row)}"
            if _copy_original(row, staging / relative, "the export"):
                written.append((row, relative))
        with open(staging / "manifest.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(MANIFEST_FIELDS)
            for row, relative in written:
                writer.writerow([row.photo_id, row.label, "confirmed" if row.confirmed else "corrected", row.labelled_by,
                                 row.labelled_at.isoformat() if row.labelled_at else "", row.sha256, relative.as_posix()])
        if destination.exists():
            destination.rmdir()
        staging.replace(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(destination, len(written), destination / "manifest.csv")


def labels_export_zip(**options):
    """The export as a zip archive in a temporary file (rewound), for a download from the admin."""
    archive = tempfile.TemporaryFile()
    with tempfile.TemporaryDirectory(prefix="export-zip-") as work:
        result = labels_export(destination=Path(work) / "labels", **options)
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in sorted(result.directory.rglob("*")):
                if path.is_file():
                    zipped.write(path, Path("labels") / path.relative_to(result.directory))
    archive.seek(0)
    return archive, result.n_photos
