import json
import subprocess
import sys

import numpy as np
import pytest

from ml import artifact, ensemble, images, openset
from ml.evaluate import evaluate, metrics_report
from ml.predict import Predictor
from ml.train import BackboneSpec, TrainConfig, train
from tests.conftest import ROOT

FAST = dict(max_epochs=40, patience=5, progress=False, verbose=0, val_fraction=0.3, learning_rate=3e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_dir, small_weights):
    """A linear probe + fine-tuned top on the small real MobileNet, saved as an artifact."""
    out = tmp_path_factory.mktemp("artifacts") / "small"
    cache = tmp_path_factory.mktemp("cache")
    config = TrainConfig(fine_tune=True, fine_tune_epochs=2, cache_dir=str(cache), **FAST)
    result = train(synthetic_dir, [BackboneSpec("mobilenet_0.50_160", small_weights)], config, name="small", out_dir=out)
    return out, result, cache


def test_artifact_directory_is_self_describing(trained, synthetic_dir):
    out, result, _ = trained
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.keras", "model.tflite",
                                                        "serving.json", "tail.tflite", "trunk_0.tflite"]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["classes"] == ["blue morpho", "cabbage white", "monarch"]
    assert metadata["backbone"] == "mobilenet_0.50_160"
    assert metadata["weights"] == "mobilenet_0.50_160_imagenet_no_top.weights.h5"
    assert metadata["input_size"] == 160 and metadata["preprocessing"] == "tf"
    assert metadata["training_data_fingerprint"].startswith("sha256:")
    assert metadata["training"]["stage"] == "fine_tuned"
    assert metadata["metrics"]["n_val"] == 9 and metadata["metrics"]["val_top1"] >= 0.8
    assert 0 < metadata["unknown_threshold"] < 1
    assert metadata["created"]


def test_loaded_artifact_predicts_held_out_photos(trained, synthetic_test_dir):
    out, result, _ = trained
    predictor = Predictor.load(out)
    report = evaluate(out, synthetic_test_dir, predictor=predictor, progress=False)
    assert report["n"] == 15 and report["top1"] >= 0.8 and report["top5"] == 1.0
    assert report["skipped_folders"] == ["zebra longwing"]
    assert set(report["per_class"]) == set(predictor.classes)
    photo = next((synthetic_test_dir / "monarch").iterdir())
    [prediction] = predictor.predict([photo], top_k=2)
    assert len(prediction.top) == 2 and prediction.top[0].probability >= prediction.top[1].probability


def test_loaded_model_and_predictor_match_the_trained_one(trained, synthetic_test_dir):
    out, result, _ = trained
    model, _ = artifact.load(out)
    predictor = Predictor.load(out)
    for batch in (1, 3):  # the predictor's traced graph serves every batch size
        pixels = np.random.default_rng(batch).uniform(0, 255, (batch, 160, 160, 3)).astype(np.float32)
        expected = np.asarray(result.model(pixels))
        np.testing.assert_allclose(np.asarray(model(pixels)), expected, atol=1e-5)
        np.testing.assert_allclose(predictor.predict_arrays(pixels), expected, atol=1e-5)


def test_retraining_the_head_reuses_cached_features(trained, synthetic_dir, small_weights, monkeypatch):
    _, _, cache = trained
    from ml import features

    monkeypatch.setattr(features, "build_multi_output_extractor",
                        lambda *a, **k: pytest.fail("features were recomputed despite a warm cache"))
    config = TrainConfig(cache_dir=str(cache), tta_flip=False, **FAST)
    result = train(synthetic_dir, [BackboneSpec("mobilenet_0.50_160", small_weights)], config)
    assert result.metadata.training["stage"] == "linear_probe"


def test_two_backbones_of_one_architecture_combine_by_features(tmp_path, synthetic_dir, small_weights):
    specs = [BackboneSpec("mobilenet_0.50_160", small_weights), BackboneSpec("mobilenet_0.50_160", None)]
    config = TrainConfig(cache_dir=str(tmp_path / "cache"), tta_flip=False, **FAST)
    result = train(synthetic_dir, specs, config, out_dir=tmp_path / "combined")
    predictor = Predictor.load(tmp_path / "combined")
    assert predictor.metadata.backbone == "mobilenet_0.50_160+mobilenet_0.50_160"
    assert result.model.get_layer("head").input_shape[-1] == 1024


@pytest.mark.parametrize("name", ["efficientnet_v2_b0", "resnet50"])  # preprocessing "none" and "caffe"
def test_other_backbones_train_with_random_weights(tmp_path, synthetic_dir, name):
    """No weights for these offline: their train -> save -> load path runs with weights=None."""
    config = TrainConfig(cache_dir=str(tmp_path / "cache"), tta_flip=False, flip_augment=False,
                         **{**FAST, "max_epochs": 2})
    result = train(synthetic_dir, [BackboneSpec(name, None)], config, out_dir=tmp_path / name)
    predictor = Predictor.load(tmp_path / name)
    probabilities = predictor.predict_arrays(np.zeros((1, *result.model.input_shape[1:]), np.float32))
    assert probabilities.shape == (1, 3) and probabilities.sum() == pytest.approx(1, abs=1e-4)
    assert predictor.metadata.weights == "none"


def test_artifact_errors_are_clear(tmp_path, trained):
    with pytest.raises(artifact.ArtifactError, match="metadata.json"):
        artifact.load(tmp_path)
    out, _, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text((out / "metadata.json").read_text())
    (broken / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(artifact.ArtifactError, match="cannot load"):
        artifact.load(broken)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ml", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_predict_and_evaluate(trained, synthetic_test_dir, tmp_path):
    out, _, _ = trained
    photos = sorted((synthetic_test_dir / "cabbage white").iterdir())[:2]
    result = _cli("predict", out, *photos, "--top-k", "3")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in photos]
    assert all(len(line["top"]) == 3 and {"label", "probability"} <= set(line["top"][0]) for line in lines)

    result = _cli("evaluate", out, synthetic_test_dir, "--json", "--report-dir", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"top1", "top5", "n", "per_class"} <= set(report) and report["n"] == 15
    assert report["skipped_folders"] == ["zebra longwing"]
    assert (tmp_path / "report" / "confusion_matrix.svg").read_text().startswith("<svg")
    assert json.loads((tmp_path / "report" / "report.json").read_text())["top1"] == report["top1"]


def test_cli_train_writes_an_artifact(tmp_path, synthetic_dir, small_weights):
    result = _cli("train", synthetic_dir, "--backbone", "mobilenet_0.50_160", "--weights", small_weights,
                  "--out", tmp_path / "cli_model", "--cache-dir", tmp_path / "cache", "--epochs", "3", "--no-tta")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["artifact"].endswith("cli_model")
    assert artifact.read_metadata(tmp_path / "cli_model").name == "cli_model"


def test_metrics_report_counts_top1_top5_and_per_class():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    report = metrics_report(probabilities, np.array([0, 1, 1]), ["a", "b", "c"], unknown_threshold=0.55)
    assert report["top1"] == pytest.approx(1 / 3) and report["top5"] == 1.0
    assert report["per_class"]["b"]["recall"] == 0.0 and report["per_class"]["a"]["precision"] == 0.5
    assert report["wrongly_rejected"] == pytest.approx(1 / 3)


def test_threshold_keeps_the_requested_share_of_known_photos():
    best = np.linspace(0.01, 1.0, 100)
    threshold = openset.calibrate_threshold(best, keep_known=0.95)
    assert np.mean(best >= threshold) == pytest.approx(0.95, abs=0.011)


def test_openset_report_on_real_non_butterfly_photos(trained, synthetic_test_dir):
    out, _, _ = trained
    photos = openset.skimage_photos()
    assert {"chelsea", "coffee", "astronaut", "rocket"} <= set(photos)
    report = openset.rejection_report(Predictor.load(out), sorted((synthetic_test_dir / "monarch").iterdir()), photos)
    assert report["n_non_butterflies"] == len(photos) and report["n_butterflies"] == 5
    assert 0 <= report["non_butterflies_rejected"] <= 1


def test_ensemble_picks_members_only_when_they_help():
    labels = np.array([0, 1, 0, 1])
    good = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.6, 0.4]])
    fixer = np.array([[0.6, 0.4], [0.4, 0.6], [0.45, 0.55], [0.1, 0.9]])
    noise = np.array([[0.4, 0.6], [0.6, 0.4], [0.4, 0.6], [0.6, 0.4]])
    subset, score = ensemble.best_subset({"good": good, "fixer": fixer, "noise": noise}, labels)
    assert subset == ("good", "fixer") and score == 1.0
    assert ensemble.average_probabilities([good, fixer]).sum(1) == pytest.approx(np.ones(4))


def test_training_without_a_validation_split(trained, synthetic_dir, small_weights):
    _, _, cache = trained
    config = TrainConfig(cache_dir=str(cache), **{**FAST, "val_fraction": 0.0, "max_epochs": 5})
    result = train(synthetic_dir, [BackboneSpec("mobilenet_0.50_160", small_weights)], config)
    assert result.metadata.metrics["n_val"] == 0 and result.metadata.unknown_threshold == 0.0
    assert result.metadata.training["n_train"] == 30


def _keeps_pretrained_weights(result, weights):
    """Whether a layer of the trained small MobileNet still holds the weights it started from."""
    from ml.backbones import get_backbone

    original = get_backbone("mobilenet_0.50_160").build(weights)
    tuned = result.model.get_layer("features").get_layer("backbone_0_mobilenet_0_50_160")
    return lambda name: all(np.array_equal(a, b) for a, b in zip(original.get_layer(name).get_weights(),
                                                                tuned.get_layer(name).get_weights()))


def test_end_to_end_fine_tuning_trains_only_the_top_on_augmented_pixels(tmp_path, synthetic_dir, small_weights):
    config = TrainConfig(cache_dir=str(tmp_path / "cache"), fine_tune=True, fine_tune_mode="end_to_end",
                         fine_tune_epochs=1, tta_flip=False, **{**FAST, "max_epochs": 5})
    result = train(synthetic_dir, [BackboneSpec("mobilenet_0.50_160", small_weights)], config, out_dir=tmp_path / "e2e")
    assert result.metadata.training["stage"] == "fine_tuned_end_to_end"
    same = _keeps_pretrained_weights(result, small_weights)
    assert same("conv1") and same("conv_dw_12")  # below the cut: frozen
    assert not same("conv_pw_13")  # the top: trained
    assert same("conv_pw_13_bn")  # BatchNormalization: frozen
    photos = sorted((synthetic_dir / "monarch").iterdir())[:2]
    from_training = result.probabilities_from_cache(photos)
    from_artifact = Predictor.load(tmp_path / "e2e").predict_arrays(images.to_batch(photos, 160))
    np.testing.assert_allclose(from_training, from_artifact, atol=1e-5)


def test_fine_tune_from_a_chosen_layer_trains_from_there_up(tmp_path, synthetic_dir, small_weights):
    config = TrainConfig(cache_dir=str(tmp_path / "cache"), fine_tune=True, fine_tune_mode="end_to_end",
                         fine_tune_from="conv_dw_12", fine_tune_epochs=1, tta_flip=False, **{**FAST, "max_epochs": 5})
    result = train(synthetic_dir, [BackboneSpec("mobilenet_0.50_160", small_weights)], config)
    same = _keeps_pretrained_weights(result, small_weights)
    assert same("conv_pw_11") and not same("conv_dw_12") and not same("conv_pw_13")
    assert same("conv_dw_12_bn")


def test_fine_tune_from_a_layer_the_backbone_lacks_fails_before_any_work(tmp_path, synthetic_dir, small_weights):
    config = TrainConfig(cache_dir=str(tmp_path / "cache"), fine_tune=True, fine_tune_from="block_16_expand", **FAST)
    with pytest.raises(ValueError, match="mobilenet_0.50_160 has no layer 'block_16_expand'"):
        train(synthetic_dir, [BackboneSpec("mobilenet_0.50_160", small_weights)], config)
    assert not (tmp_path / "cache").exists()
