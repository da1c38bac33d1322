"""Where a model version's artifact is, and what its metadata.json says. Imports nothing of
ml (ml.artifact imports Keras; web processes must not), so inference, selectors, services and
retraining all read artifacts through here."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from butterflysite import artifact_store


class ArtifactUnavailable(OSError):
    """A version's artifact published to object storage cannot be fetched."""


def local_dir(reference) -> Path:
    """The local directory of an artifact reference: a path (relative ones are under
    ML_ARTIFACTS_DIR), or "storage:..." (published to object storage, downloaded once)."""
    reference = str(reference)
    if artifact_store.is_stored(reference):
        try:
            return artifact_store.local_dir(reference)
        except (artifact_store.ArtifactStoreError, OSError) as error:
            raise ArtifactUnavailable(f"cannot fetch artifact {reference}: {error}") from error
    path = Path(reference)
    return path if path.is_absolute() else Path(settings.ML_ARTIFACTS_DIR) / path


def artifact_dir(model_version) -> Path:
    """The local directory of a ModelVersion's artifact (see local_dir)."""
    return local_dir(model_version.artifact_path)


def artifact_location(directory) -> str:
    """How a local artifact directory is recorded: relative to ML_ARTIFACTS_DIR when under it."""
    directory = Path(directory).resolve()
    root = Path(settings.ML_ARTIFACTS_DIR).resolve()
    try:
        return str(directory.relative_to(root))
    except ValueError:
        return str(directory)


def read_metadata(directory) -> dict:
    """The artifact's metadata.json; ValidationError when it is missing, unreadable or lists no classes."""
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
