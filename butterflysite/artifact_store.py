"""Model artifacts kept in object storage, copied once into a local cache before loading.

Shipped artifacts sit in the slug under settings.ML_ARTIFACTS_DIR and load from there. A model
trained after deploy cannot live on a dyno's filesystem (wiped on every restart, and each dyno
has its own), so it is published to the default storage (the private bucket in production):

    ref = artifact_store.publish("/tmp/run-42/artifact", "inat_v3")   # -> "storage:artifacts/inat_v3"
    ModelVersion.objects.create(..., artifact_path=ref)

and every worker turns the reference into a local directory that `ml.predict.Predictor.load`
reads, downloading it the first time only:

    directory = artifact_store.local_dir(ref)     # settings.ML_ARTIFACTS_CACHE_DIR/inat_v3

An artifact's files never change once published (a new model gets a new name), so a complete
copy in the cache is always current. Downloads go to a temporary folder renamed into place, so
two processes fetching the same artifact at once never see half a model.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from ml import serving

PREFIX = "storage:"
# model.tflite is what workers serve when an artifact has no split export (LiteRT, no TensorFlow
# on the slug); model.keras stays the source of truth. metadata.json last: its presence marks a
# complete upload.
FILES = ("model.keras", "model.tflite", "metadata.json")
EXPORT_FILE = "model.tflite"
# The split export (ml/serving.py): serving.json names its trunk and tail files, which travel with
# it. Artifacts published before it have none: still fetched (served from model.tflite).
SPLIT_FILE = serving.SERVING_FILE
# Artifacts published before LiteRT exports have no model.tflite: still fetched (served by Keras).
REQUIRED_FILES = tuple(f for f in FILES if f != EXPORT_FILE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ArtifactStoreError(Exception):
    """A stored artifact is missing, incomplete or misnamed."""


def is_stored(reference: str) -> bool:
    return reference.startswith(PREFIX)


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name in {".", ".."}:
        raise ArtifactStoreError(f"bad artifact name {name!r}")
    return name


def _key(name: str, filename: str) -> str:
    return str(PurePosixPath(settings.ML_ARTIFACTS_STORAGE_PREFIX) / name / filename)


def _split_files(spec: dict, where) -> list[str]:
    """The files serving.json names (trunks, tail), each a plain file name."""
    files = serving.split_files(spec)
    for filename in files:
        if not _NAME.match(filename) or filename in FILES or filename == SPLIT_FILE:
            raise ArtifactStoreError(f"{where} names a bad file {filename!r}")
    return files


def artifact_files(directory: str | Path) -> list[str]:
    """The files of an artifact directory to publish, in upload order: model.keras, model.tflite,
    the split export if it has one (its trunks and tail, then serving.json), metadata.json last."""
    directory = Path(directory)
    files = list(FILES[:-1])
    if (directory / SPLIT_FILE).is_file():
        try:
            spec = serving.read_spec(directory)
        except serving.ServingError as error:
            raise ArtifactStoreError(str(error)) from error
        files += [*_split_files(spec, directory / SPLIT_FILE), SPLIT_FILE]
    return files + [FILES[-1]]


def publish(directory: str | Path, name: str, storage=None) -> str:
    """Upload an artifact directory (model.keras, its checked model.tflite and split export,
    metadata.json) and return its reference. An artifact without model.tflite is refused:
    workers serve the exports."""
    storage = storage or default_storage
    directory = Path(directory)
    _check_name(name)
    files = artifact_files(directory)
    for filename in files:
        if not (directory / filename).is_file():
            hint = " (export it with `python -m ml export DIR`: workers serve it without TensorFlow)" \
                if filename == EXPORT_FILE else ""
            raise ArtifactStoreError(f"no {filename} in {directory}{hint}")
    for filename in files:
        key = _key(name, filename)
        if storage.exists(key):
            raise ArtifactStoreError(f"{key} already exists: published artifacts are immutable")
    for filename in files:
        with open(directory / filename, "rb") as handle:
            saved = storage.save(_key(name, filename), File(handle, name=filename))
        if saved != _key(name, filename):  # a storage that renames instead of writing the key
            raise ArtifactStoreError(f"storage wrote {saved!r} instead of {_key(name, filename)!r}")
    return PREFIX + str(PurePosixPath(settings.ML_ARTIFACTS_STORAGE_PREFIX) / name)


def local_dir(reference: str, storage=None) -> Path:
    """The local directory holding a stored artifact, downloaded on first use."""
    if not is_stored(reference):
        raise ArtifactStoreError(f"{reference!r} is not a stored artifact reference")
    storage = storage or default_storage
    stored = PurePosixPath(reference[len(PREFIX):])
    prefix = PurePosixPath(settings.ML_ARTIFACTS_STORAGE_PREFIX)
    if stored.parent != prefix:
        raise ArtifactStoreError(f"{reference!r} is not under {prefix}/")
    name = _check_name(stored.name)
    cache = Path(settings.ML_ARTIFACTS_CACHE_DIR)
    target = cache / name
    if all((target / filename).is_file() for filename in REQUIRED_FILES):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    try:
        for filename in FILES:
            if filename == EXPORT_FILE and not storage.exists(_key(name, filename)):
                continue  # published before exports: served by Keras, with a warning
            _download(storage, name, filename, partial)
        if storage.exists(_key(name, SPLIT_FILE)):  # else published before split exports
            _download(storage, name, SPLIT_FILE, partial)
            try:
                spec = serving.read_spec(partial)
            except serving.ServingError as error:
                raise ArtifactStoreError(f"{_key(name, SPLIT_FILE)}: {error}") from error
            for filename in _split_files(spec, _key(name, SPLIT_FILE)):
                _download(storage, name, filename, partial)
        try:
            os.rename(partial, target)
        except OSError:
            # Another process finished first (the target exists and is complete): use theirs.
            if not all((target / filename).is_file() for filename in REQUIRED_FILES):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _download(storage, name: str, filename: str, folder: Path) -> None:
    key = _key(name, filename)
    try:
        source = storage.open(key, "rb")
    except (FileNotFoundError, OSError) as error:
        raise ArtifactStoreError(f"cannot read {key}: {error}") from error
    with source, open(folder / filename, "wb") as out:
        shutil.copyfileobj(source, out, length=1024 * 1024)
