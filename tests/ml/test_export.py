"""LiteRT exports (ml/export.py) and serving them (ml/predict.py)."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml import artifact, export
from ml.predict import KERAS, LITERT, Predictor

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((ROOT / "artifacts" / "manifest.json").read_text())["artifacts"]
SIZE = 32
CLASSES = ["blue morpho", "cabbage white", "monarch"]


def tiny_model(seed: int = 0):
    """A small real convolutional classifier taking 0..255 pixels, as the artifacts' models do."""
    import keras

    keras.utils.set_random_seed(seed)
    pixels = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(pixels)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(pixels, keras.layers.Dense(len(CLASSES), activation="softmax")(x))


def tiny_metadata(name: str = "tiny") -> artifact.ArtifactMetadata:
    return artifact.ArtifactMetadata(name=name, classes=CLASSES, backbone="none", weights="none",
                                     input_size=SIZE, preprocessing="tf", unknown_threshold=0.2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An artifact written by ml.artifact.save, as training writes one."""
    directory = tmp_path_factory.mktemp("artifact") / "tiny"
    model = tiny_model()
    artifact.save(directory, model, tiny_metadata())
    return directory, model


def photos(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def test_save_writes_a_checked_export_that_serves_like_keras(saved):
    directory, model = saved
    assert (directory / artifact.TFLITE_FILE).is_file()
    figures = artifact.read_metadata(directory).export
    assert figures["dtype"] == "float32" and figures["top1_disagreements"] == 0
    assert figures["max_probability_diff"] < export.MAX_PROBABILITY_DIFF
    predictor = Predictor.load(directory)
    assert predictor.runtime == LITERT and predictor.model is None
    for batch in (1, 5, 1):  # the interpreter's input follows the batch size
        pixels = photos(batch, seed=batch)
        np.testing.assert_allclose(predictor.predict_arrays(pixels), np.asarray(model(pixels)), atol=1e-5)


def test_a_mismatched_export_is_refused_and_nothing_is_left_behind(tmp_path, monkeypatch):
    # The converter hands back the export of another model (other weights): the check must catch it.
    other = export.convert(tiny_model(seed=1), SIZE)
    monkeypatch.setattr(export, "convert", lambda model, input_size, representative=None: other)
    directory = tmp_path / "tiny"
    with pytest.raises(export.ExportError, match="refused the LiteRT export of tiny.*was not written"):
        artifact.save(directory, tiny_model(seed=0), tiny_metadata())
    assert not directory.exists()


def test_export_verb_checks_on_photos_and_records_figures(tmp_path, saved):
    directory, _ = saved
    target = tmp_path / "copy"
    target.mkdir()
    for name in (artifact.MODEL_FILE, artifact.METADATA_FILE):
        (target / name).write_bytes((directory / name).read_bytes())
    result = subprocess.run([sys.executable, "-m", "ml", "export", str(target)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])["export"]
    assert figures["photos"] == export.SYNTHETIC_CHECK_PHOTOS and figures["top1_agreement"] == 1.0
    assert artifact.read_metadata(target).export == figures
    assert Predictor.load(target).runtime == LITERT


def test_an_artifact_without_an_export_is_served_by_keras_with_a_warning(tmp_path, saved, caplog):
    directory, model = saved
    old = tmp_path / "old"
    old.mkdir()
    for name in (artifact.MODEL_FILE, artifact.METADATA_FILE):
        (old / name).write_bytes((directory / name).read_bytes())
    with caplog.at_level(logging.WARNING, logger="ml.predict"):
        predictor = Predictor.load(old)
    assert predictor.runtime == KERAS
    assert any("no model.tflite" in record.getMessage() for record in caplog.records)
    pixels = photos(3)
    np.testing.assert_allclose(predictor.predict_arrays(pixels), np.asarray(model(pixels)), atol=1e-5)
    with pytest.raises(artifact.ArtifactError, match="no model.tflite"):
        Predictor.load(old, runtime=LITERT)


def test_a_corrupt_export_is_a_clear_artifact_error(tmp_path, saved):
    directory, _ = saved
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / artifact.METADATA_FILE).write_bytes((directory / artifact.METADATA_FILE).read_bytes())
    (broken / artifact.TFLITE_FILE).write_bytes(b"not a flatbuffer")
    with pytest.raises(artifact.ArtifactError, match="cannot load"):
        Predictor.load(broken)


def test_serving_an_export_never_imports_tensorflow(saved, tmp_path):
    directory, _ = saved
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.fromarray(photos(1)[0].astype(np.uint8)).save(photo)
    code = (
        "import json, sys\n"
        "from ml.predict import Predictor\n"
        f"predictor = Predictor.load({str(directory)!r})\n"
        f"[prediction] = predictor.predict([{str(photo)!r}], top_k=3)\n"
        "print(json.dumps({'runtime': predictor.runtime, 'top': [l.label for l in prediction.top],\n"
        "                  'loaded': sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["runtime"] == LITERT and sorted(report["top"]) == sorted(CLASSES)
    assert report["loaded"] == []


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_exports_classify_validation_photos_like_their_keras_models(name, butterflies_dir):
    """The committed model.tflite against model.keras on every 25th validation photo (32 photos)."""
    directory = ROOT / "artifacts" / name
    litert = Predictor.load(directory, runtime=LITERT)
    paths, labels, _ = export.validation_photos(butterflies_dir, litert.classes)
    assert len(paths) == 801
    keras_predictor = Predictor.load(directory, runtime=KERAS)
    picked = list(range(0, len(paths), 25))
    pixels = next(export.photo_batches([paths[i] for i in picked], litert.metadata.input_size, batch_size=len(picked)))
    figures = export.compare(keras_predictor.predict_arrays(pixels), litert.predict_arrays(pixels), labels[picked])
    assert figures["top1_disagreements"] == 0
    assert figures["max_probability_diff"] < export.MAX_PROBABILITY_DIFF
    recorded = litert.metadata.export
    assert recorded["photos"] == 801 and recorded["top1_disagreements"] == 0
    assert recorded["max_probability_diff"] < export.MAX_PROBABILITY_DIFF


def test_named_outputs_are_read_back_by_name_not_position():
    import keras

    from ml import identify

    keras.utils.set_random_seed(0)
    pixels = keras.Input((SIZE, SIZE, 3), name="pixels")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(keras.layers.Rescaling(1 / 255)(pixels)))
    outputs = [keras.layers.Dense(n, activation="softmax", name=name)(features)
               for n, name in ((7, identify.OUTPUTS[0]), (5, identify.OUTPUTS[1]))]
    model = keras.Model(pixels, [*outputs, keras.layers.Identity(name=identify.OUTPUTS[2])(features)])
    served = identify.NamedLiteRTModel(export.convert_named(model, SIZE, identify.OUTPUTS))
    for batch in (1, 4):
        x = photos(batch, seed=batch)
        got = served(x)
        for name, expected in zip(identify.OUTPUTS, model(x)):
            np.testing.assert_allclose(got[name], np.asarray(expected), atol=1e-5)
    with pytest.raises(export.ExportError, match="3 outputs, 2 names"):
        export.convert_named(model, SIZE, identify.OUTPUTS[:2])
