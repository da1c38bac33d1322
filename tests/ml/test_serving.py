"""Split exports and shared-trunk serving (ml/export.py `export_split`, ml/serving.py)."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml import artifact, export, serving
from ml.predict import KERAS, LITERT, SPLIT, Predictor

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((ROOT / "artifacts" / "manifest.json").read_text())["artifacts"]
CLASSES = ["blue morpho", "cabbage white", "monarch"]
BACKBONE = "mobilenet_0.50_160"  # small: its trunk and tail convert in seconds
SIZE = 160


def random_weights(model, seed: int) -> list[np.ndarray]:
    """Weights whose activations neither vanish nor explode through a deep network: every kernel
    drawn with He scaling (Keras' default initialisation fades to ~1e-18 by the pooled features
    of an untrained MobileNet), every other array (BatchNormalization, biases) as it is."""
    rng = np.random.default_rng(seed)
    weights = []
    for layer in model.layers:
        for weight in layer.get_weights():
            if weight.ndim == 4:  # a (depthwise) convolution kernel: height, width, in, out/multiplier
                fan_in = np.prod(weight.shape[:2]) * (1 if "Depthwise" in type(layer).__name__ else weight.shape[2])
                weight = rng.normal(0, np.sqrt(2 / fan_in), weight.shape).astype(np.float32)
            weights.append(weight)
    return weights


def assembled_model(head_seed: int, base_weights=None, tta_flip: bool = True):
    """A classifier exactly as ml.train.assemble builds one (preprocessing, backbone, head, flip
    averaging), with random backbone weights (or `base_weights`) and a head seeded by `head_seed`."""
    import keras

    from ml import train

    spec = train.BackboneSpec(BACKBONE, None)
    base = spec.backbone.build(None, name=train._model_name(spec, 0))
    base.set_weights(random_weights(base, seed=0) if base_weights is None else base_weights)
    keras.utils.set_random_seed(head_seed)
    head = train.build_head(base.output_shape[-1], len(CLASSES), train.TrainConfig())
    return train.assemble([spec], [base], head, tta_flip=tta_flip), base


def metadata(name: str) -> artifact.ArtifactMetadata:
    return artifact.ArtifactMetadata(name=name, classes=CLASSES, backbone=BACKBONE, weights="none",
                                     input_size=SIZE, preprocessing="tf", unknown_threshold=0.2)


def photos(n: int, seed: int = 1) -> np.ndarray:
    """Photo-like pixels: smooth colour fields (not mirror-symmetric, so the two views differ)."""
    return next(export.synthetic_batches(SIZE, n=n, seed=seed))


@pytest.fixture(scope="module")
def two_artifacts(tmp_path_factory):
    """Two artifacts saved by ml.artifact.save whose models share one frozen backbone (same
    weights) under different heads, as the shipped iNat and iNat+ImageNet models do."""
    root = tmp_path_factory.mktemp("split")
    first, base = assembled_model(head_seed=1)
    second, _ = assembled_model(head_seed=2, base_weights=base.get_weights())
    artifact.save(root / "first", first, metadata("first"))
    artifact.save(root / "second", second, metadata("second"))
    return {"first": (root / "first", first), "second": (root / "second", second)}


@pytest.fixture
def registry():
    """The process's trunk registry, emptied before and after the test."""
    serving.TRUNKS.clear()
    yield serving.TRUNKS
    serving.TRUNKS.clear()


def test_save_writes_a_checked_split_export_that_serves_like_keras(two_artifacts, registry):
    directory, model = two_artifacts["first"]
    spec = serving.read_spec(directory)
    assert spec["views"] == [serving.ORIG, serving.MIRROR] and spec["combine"] == serving.MEAN
    assert [t["cut_layer"] for t in spec["trunks"]] == ["conv_dw_13"]
    assert spec["check"]["top1_disagreements"] == 0
    assert spec["check"]["max_probability_diff"] < export.MAX_PROBABILITY_DIFF
    assert all((directory / f).is_file() for f in serving.split_files(spec))
    recorded = artifact.read_metadata(directory).export["split"]
    assert recorded["trunks"] == [spec["trunks"][0]["fingerprint"]]
    predictor = Predictor.load(directory)
    assert predictor.runtime == SPLIT and predictor.model is None
    for batch in (1, 4, 1):  # interpreters follow the batch size
        pixels = photos(batch, seed=batch)
        np.testing.assert_allclose(predictor.predict_arrays(pixels), np.asarray(model(pixels)), atol=1e-5)


def test_models_sharing_a_trunk_load_one_interpreter_and_run_it_once_per_view(two_artifacts, registry):
    (first_dir, first_model), (second_dir, second_model) = two_artifacts["first"], two_artifacts["second"]
    first_spec, second_spec = serving.read_spec(first_dir), serving.read_spec(second_dir)
    # Exported separately, fingerprinted alike: the same frozen weights, preprocessing and cut.
    assert first_spec["trunks"][0]["fingerprint"] == second_spec["trunks"][0]["fingerprint"]
    first, second = Predictor.load(first_dir), Predictor.load(second_dir)
    assert len(registry) == 1
    [trunk] = registry
    pixels = photos(3)
    runs = trunk.runs
    first_probabilities = first.predict_pixels(pixels)
    second.predict_pixels(pixels)
    assert trunk.runs - runs == 2  # orig and mirror, once for both models
    # Each model still gives its own answer, the one its Keras model gives.
    np.testing.assert_allclose([[label.probability for label in p.top] for p in first_probabilities],
                               np.sort(np.asarray(first_model(pixels)), axis=1)[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(second.predict_arrays(pixels), np.asarray(second_model(pixels)), atol=1e-5)
    # A new batch array (even with equal contents) is a new batch: the trunk runs again.
    runs = trunk.runs
    first.predict_arrays(pixels.copy())
    assert trunk.runs - runs == 2


def test_other_weights_give_another_fingerprint(two_artifacts):
    _, base = assembled_model(head_seed=1)
    other, _ = assembled_model(head_seed=1, base_weights=random_weights(base, seed=1))
    parts, _, _ = export.classifier_parts(other, metadata("other"))
    first_dir, _ = two_artifacts["first"]
    assert parts[0].fingerprint(SIZE) != serving.read_spec(first_dir)["trunks"][0]["fingerprint"]


def test_a_tail_from_another_model_is_refused_and_nothing_is_written(tmp_path, two_artifacts, monkeypatch):
    first, _ = assembled_model(head_seed=1)
    _, other_tail, _ = export.classifier_parts(assembled_model(head_seed=3)[0], metadata("other"))
    convert_split = export.convert_split

    def with_the_other_tail(parts, tail, views, input_size, converted=None):
        return convert_split(parts, other_tail, views, input_size, converted)

    monkeypatch.setattr(export, "convert_split", with_the_other_tail)
    directory = tmp_path / "first"
    directory.mkdir()
    with pytest.raises(export.ExportError, match="refused the split export of first.*nothing was written"):
        export.export_split(first, metadata("first"), directory)
    assert list(directory.iterdir()) == []
    # ml.artifact.save refuses it too, and leaves no file of the artifact behind.
    with pytest.raises(export.ExportError, match="refused the split export"):
        artifact.save(tmp_path / "saved", first, metadata("first"))
    assert not (tmp_path / "saved").exists()


def test_the_split_must_fit_together(tmp_path, two_artifacts, registry):
    directory, _ = two_artifacts["first"]
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    spec = serving.read_spec(broken)
    spec["trunks"][0]["input"] = "trunk_9"
    (broken / serving.SERVING_FILE).write_text(json.dumps(spec))
    with pytest.raises(artifact.ArtifactError, match="the tail takes"):
        Predictor.load(broken)
    (broken / spec["tail"]["file"]).unlink()
    with pytest.raises(artifact.ArtifactError, match="which is missing"):
        Predictor.load(broken)


def test_old_artifacts_fall_back_to_model_tflite_then_to_keras(tmp_path, two_artifacts, registry, caplog):
    directory, model = two_artifacts["first"]
    pixels = photos(2)
    whole = tmp_path / "whole"
    whole.mkdir()
    for name in (artifact.MODEL_FILE, artifact.TFLITE_FILE, artifact.METADATA_FILE):
        shutil.copy(directory / name, whole / name)
    predictor = Predictor.load(whole)
    assert predictor.runtime == LITERT and len(registry) == 0
    np.testing.assert_allclose(predictor.predict_arrays(pixels), np.asarray(model(pixels)), atol=1e-5)
    (whole / artifact.TFLITE_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="ml.predict"):
        predictor = Predictor.load(whole)
    assert predictor.runtime == KERAS and "no model.tflite" in caplog.text
    np.testing.assert_allclose(predictor.predict_arrays(pixels), np.asarray(model(pixels)), atol=1e-5)
    with pytest.raises(artifact.ArtifactError, match="no serving.json"):
        Predictor.load(whole, runtime=SPLIT)


def test_the_export_verb_adds_the_split_to_an_artifact_made_before_it(tmp_path, two_artifacts, registry):
    directory, model = two_artifacts["first"]
    old = tmp_path / "old"
    old.mkdir()
    for name in (artifact.MODEL_FILE, artifact.TFLITE_FILE, artifact.METADATA_FILE):
        shutil.copy(directory / name, old / name)
    whole = artifact.read_metadata(old).export
    result = subprocess.run([sys.executable, "-m", "ml", "export", str(old), "--split-only"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])["export"]
    assert figures["split"]["photos"] == export.SYNTHETIC_CHECK_PHOTOS and figures["split"]["top1_disagreements"] == 0
    assert {k: v for k, v in figures.items() if k != "split"} == {k: v for k, v in whole.items() if k != "split"}
    assert artifact.read_metadata(old).export == figures
    predictor = Predictor.load(old)
    assert predictor.runtime == SPLIT
    np.testing.assert_allclose(predictor.predict_arrays(photos(2)), np.asarray(model(photos(2))), atol=1e-5)


def test_split_only_export_of_a_model_that_cannot_be_split_is_a_clear_error(tmp_path):
    import keras

    pixels = keras.Input((SIZE, SIZE, 3))
    flat = keras.layers.GlobalAveragePooling2D()(pixels)
    model = keras.Model(pixels, keras.layers.Dense(len(CLASSES), activation="softmax")(flat))
    directory = tmp_path / "plain"
    artifact.save(directory, model, metadata("plain"))  # served whole: no split
    assert not serving.has_split(directory) and "split" not in artifact.read_metadata(directory).export
    with pytest.raises(export.ExportError, match="cannot split plain"):
        export.export_artifact(directory, whole=False, split=True)


# -- the shipped artifacts (need ../shared) ----------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_split_exports_classify_validation_photos_like_their_keras_models(name, butterflies_dir):
    """The committed split export against model.keras on every 25th validation photo (32 photos)."""
    directory = ROOT / "artifacts" / name
    if not serving.has_split(directory):
        pytest.fail(f"{directory} has no split export (python -m ml export {directory} DATA_DIR --split-only)")
    split = Predictor.load(directory)
    assert split.runtime == SPLIT
    paths, labels, _ = export.validation_photos(butterflies_dir, split.classes)
    keras_predictor = Predictor.load(directory, runtime=KERAS)
    picked = list(range(0, len(paths), 25))
    pixels = next(export.photo_batches([paths[i] for i in picked], split.metadata.input_size, batch_size=len(picked)))
    figures = export.compare(keras_predictor.predict_arrays(pixels), split.predict_arrays(pixels), labels[picked])
    assert figures["top1_disagreements"] == 0
    assert figures["max_probability_diff"] < export.MAX_PROBABILITY_DIFF
    recorded = serving.read_spec(directory)["check"]
    assert recorded["photos"] == 801 and recorded["top1_disagreements"] == 0
    assert recorded["max_probability_diff"] < export.MAX_PROBABILITY_DIFF


def test_a_worker_holding_every_shipped_model_runs_two_trunks_and_no_tensorflow(butterflies_dir):
    """The three shipped models and the identifier, as the worker holds them: 2 distinct trunks
    (iNat insects, ImageNet), each run once per view for a batch, and no TensorFlow loaded."""
    photo = sorted((butterflies_dir / "test" / "monarch").iterdir())[0]
    code = (
        "import json, sys\n"
        "from ml import images, serving\n"
        "from ml.identify import Identifier, shipped_artifacts\n"
        "from ml.predict import Predictor\n"
        f"predictors = [Predictor.load(d) for d in shipped_artifacts({str(ROOT / 'artifacts')!r})]\n"
        f"identifier = Identifier.load({str(ROOT / 'artifacts' / 'identifier')!r})\n"
        f"pixels = images.to_batch([{str(photo)!r}] * 2, 224)\n"
        "before = {t.fingerprint: t.runs for t in serving.TRUNKS}\n"
        "tops = [[(l.label, l.probability) for l in p.predict_pixels(pixels)[0].top] for p in predictors]\n"
        "[signals, _] = identifier.signals(pixels)\n"
        "print(json.dumps({'runtimes': [p.runtime for p in predictors] + [identifier.runtime],\n"
        "  'runs': sorted(t.runs - before[t.fingerprint] for t in serving.TRUNKS),\n"
        "  'answer': identifier.identify(tops, signals).label,\n"
        "  'loaded': sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["runtimes"] == [SPLIT] * 4
    assert report["runs"] == [2, 2]  # iNat: orig + mirror; ImageNet: orig + mirror
    assert report["answer"] == "monarch"
    assert report["loaded"] == []
