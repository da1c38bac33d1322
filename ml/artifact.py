"""Model artifacts: one directory per trained model, holding model.keras, metadata.json,
model.tflite (the checked LiteRT export of model.keras) and its checked split export (trunk_*.tflite,
tail.tflite, serving.json: what serving uses, see ml/export.py and ml/serving.py).

Loading an artifact needs nothing but its directory (and this package, which registers the
custom layers the model may use). Reading metadata imports no Keras/TensorFlow: a serving
process that runs model.tflite never loads them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1


class ArtifactError(Exception):
    """An artifact directory is missing, incomplete or unreadable."""


@dataclass
class ArtifactMetadata:
    name: str
    classes: list[str]
    # One backbone name, or several joined by "+" when features of several are concatenated.
    backbone: str
    weights: str  # where the backbone weights came from: "imagenet", a file name, or "none"
    input_size: int
    preprocessing: str
    training_data_fingerprint: str = ""
    metrics: dict = field(default_factory=dict)
    # Best probability under which a photo is reported as probably none of `classes`.
    unknown_threshold: float = 0.0
    training: dict = field(default_factory=dict)
    # How model.tflite was made and checked against model.keras (ml/export.py).
    export: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, data: dict) -> "ArtifactMetadata":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def save(directory: str | Path, model: "keras.Model", metadata: ArtifactMetadata,
         check_photos: Sequence[str | Path] | None = None) -> Path:
    """Write model.keras, its checked model.tflite and split export, and metadata.json (with the
    checks' figures).

    `check_photos` are the photos the export must classify like the Keras model (the validation
    photos); without them a fixed synthetic set is used. An export that fails its check raises
    `ml.export.ExportError` and leaves no file of this artifact behind.
    """
    from ml import export

    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    try:
        reference = export.keras_reference(model, metadata.input_size, check_photos)
        metadata.export = export.export_model(model, metadata, directory / TFLITE_FILE, check_photos,
                                              reference=reference)
        if export.splittable(model):
            metadata.export["split"] = export.split_summary(
                export.export_split(model, metadata, directory, check_photos, reference=reference))
    except BaseException:
        (directory / MODEL_FILE).unlink(missing_ok=True)
        (directory / TFLITE_FILE).unlink(missing_ok=True)
        if created and not any(directory.iterdir()):
            directory.rmdir()
        raise
    write_metadata(directory, metadata)
    return directory


def write_metadata(directory: str | Path, metadata: ArtifactMetadata) -> None:
    path = Path(directory) / METADATA_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def read_metadata(directory: str | Path) -> ArtifactMetadata:
    path = Path(directory) / METADATA_FILE
    try:
        return ArtifactMetadata.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ArtifactError(f"no {METADATA_FILE} in {directory}") from None
    except (json.JSONDecodeError, TypeError) as error:
        raise ArtifactError(f"unreadable {path}: {error}") from None


def load(directory: str | Path) -> tuple["keras.Model", ArtifactMetadata]:
    """The Keras model and metadata (imports TensorFlow: training, evaluation, the Keras fallback)."""
    import keras

    from ml import backbones as _backbones  # noqa: F401  registers custom layers for loading
    from ml import layers as _layers  # noqa: F401

    directory = Path(directory)
    metadata = read_metadata(directory)
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise ArtifactError(f"no {MODEL_FILE} in {directory}")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as error:  # a truncated or corrupt file raises many kinds of errors
        raise ArtifactError(f"cannot load {model_path}: {error}") from error
    n_outputs = model.output_shape[-1]
    if n_outputs != len(metadata.classes):
        raise ArtifactError(
            f"{model_path} has {n_outputs} outputs but metadata lists {len(metadata.classes)} classes"
        )
    return model, metadata
