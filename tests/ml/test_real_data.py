"""Real photos from ../shared (skipped cleanly where it is absent)."""

import json

import numpy as np
import pytest

from ml import artifact, data
from ml.evaluate import evaluate
from ml.predict import Predictor
from ml.train import BackboneSpec, TrainConfig, train
from tests.conftest import ROOT

FIVE_SPECIES = ["adonis", "monarch", "morning cloak", "peacock", "sixspot burnet"]
ARTIFACTS = ROOT / "artifacts"


@pytest.mark.slow
def test_small_real_backbone_learns_five_real_species(tmp_path, butterflies_dir, small_weights):
    """Random weights score about 20% on five species; real ImageNet features far more."""
    train_dir = tmp_path / "train"
    for species in FIVE_SPECIES:  # links, not copies: the photos stay in ../shared
        (train_dir / species).mkdir(parents=True)
        for photo in sorted((butterflies_dir / "train" / species).iterdir())[:40]:
            (train_dir / species / photo.name).symlink_to(photo)
    config = TrainConfig(cache_dir=str(tmp_path / "cache"), progress=False, verbose=0, max_epochs=40, patience=5,
                         learning_rate=3e-3)
    train(train_dir, [BackboneSpec("mobilenet_0.50_160", small_weights)], config, out_dir=tmp_path / "five")
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    for species in FIVE_SPECIES + ["viceroy"]:  # viceroy: a folder the model does not know
        (test_dir / species).symlink_to(butterflies_dir / "test" / species)
    report = evaluate(tmp_path / "five", test_dir, progress=False)
    assert report["n"] == 100 and report["skipped_folders"] == ["viceroy"]
    assert report["top1"] >= 0.85, report["top1"]


def test_manifest_lists_shipped_artifacts_and_a_default():
    manifest = json.loads((ARTIFACTS / "manifest.json").read_text())
    assert len(manifest["artifacts"]) >= 2 and manifest["default"] in manifest["artifacts"]
    total = 0
    backbones = set()
    for name in manifest["artifacts"]:
        metadata = artifact.read_metadata(ARTIFACTS / name)
        assert len(metadata.classes) == 49 and metadata.name == name
        assert metadata.metrics.get("test_top1"), f"{name} has no measured test top-1"
        backbones.add((metadata.backbone, metadata.weights))
        total += sum(p.stat().st_size for p in (ARTIFACTS / name).rglob("*") if p.is_file())
    assert len(backbones) == len(manifest["artifacts"])  # really different models
    # model.keras (what retraining fine-tunes), its float32 model.tflite (about as large; the
    # fallback), the split export that is served (trunks + tail, about as large again) + reports.
    assert total <= 128 * 2**20
    default = artifact.read_metadata(ARTIFACTS / manifest["default"])
    assert default.metrics["test_top1"] >= 0.97


@pytest.mark.slow
def test_shipped_default_names_real_test_photos(butterflies_dir):
    manifest = json.loads((ARTIFACTS / "manifest.json").read_text())
    predictor = Predictor.load(ARTIFACTS / manifest["default"])
    folder = data.load_image_folder(butterflies_dir / "test", predictor.classes)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(folder), 40, replace=False)
    predictions = predictor.predict([folder.paths[i] for i in sample])
    correct = [p.top[0].label == folder.classes[folder.labels[i]] for p, i in zip(predictions, sample)]
    assert np.mean(correct) >= 0.9
    assert np.mean([p.unknown for p in predictions]) <= 0.15
