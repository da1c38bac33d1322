import shutil

import numpy as np
import pytest

from ml import data, features, images
from ml.backbones import get_backbone


def test_image_folder_lists_classes_in_sorted_order(synthetic_dir):
    folder = data.load_image_folder(synthetic_dir)
    assert folder.classes == ["blue morpho", "cabbage white", "monarch"]
    assert len(folder) == 30
    assert folder.class_counts().tolist() == [10, 10, 10]
    assert all(folder.classes[label] == path.parent.name for path, label in zip(folder.paths, folder.labels))


def test_training_root_uses_the_train_folder_when_present(synthetic_dir):
    assert data.training_root(synthetic_dir.parent) == synthetic_dir
    assert data.training_root(synthetic_dir) == synthetic_dir


def test_known_classes_order_labels_and_unknown_folders_are_left_out(synthetic_test_dir):
    classes = ["monarch", "blue morpho", "cabbage white"]
    folder = data.load_image_folder(synthetic_test_dir, classes)
    assert folder.classes == classes
    assert {folder.classes[label] for label in folder.labels} == set(classes)
    assert data.unknown_folders(synthetic_test_dir, classes) == ["zebra longwing"]


def test_stratified_split_is_seeded_and_keeps_every_class_in_both_parts():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, val = data.stratified_split(labels, 0.2, seed=3)
    assert len(val) == 20 and not set(train) & set(val)
    assert np.bincount(labels[val]).tolist() == [10, 6, 4]
    again = data.stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(data.stratified_split(labels, 0.2, seed=4)[1], val)


def test_balanced_class_weights_favour_rare_classes():
    weights = data.balanced_class_weights(np.array([0] * 90 + [1] * 10), 2)
    assert weights[1] == pytest.approx(9 * weights[0])


def test_fingerprint_follows_content_and_paths(tmp_path, synthetic_dir):
    copy = tmp_path / "train"
    shutil.copytree(synthetic_dir, copy)
    original = data.fingerprint(data.load_image_folder(synthetic_dir))
    assert data.fingerprint(data.load_image_folder(copy)) == original  # relative paths, not absolute
    photo = next((copy / "monarch").iterdir())
    photo.write_bytes(photo.read_bytes() + b"\0")
    changed = data.fingerprint(data.load_image_folder(copy))
    assert changed != original and changed.startswith("sha256:")


def test_pipeline_decodes_like_prediction_and_flips(synthetic_dir):
    folder = data.load_image_folder(synthetic_dir)
    paths = folder.paths[:3]
    batch = next(iter(data.pixel_dataset(paths, 64, batch_size=3)))
    np.testing.assert_array_equal(np.asarray(batch), images.to_batch(paths, 64))
    flipped = next(iter(data.pixel_dataset(paths, 64, batch_size=3, flip=True)))
    np.testing.assert_array_equal(np.asarray(flipped), images.to_batch(paths, 64)[:, :, ::-1])
    augmented, labels = next(iter(data.pixel_dataset(paths, 64, folder.labels[:3], batch_size=3, augment=True)))
    assert augmented.shape == (3, 64, 64, 3) and labels.shape == (3,)
    assert float(np.min(augmented)) >= 0 and float(np.max(augmented)) <= 255


def test_feature_cache_is_keyed_by_content_weights_and_variant(tmp_path, synthetic_dir, small_weights, monkeypatch):
    backbone = get_backbone("mobilenet_0.50_160")
    photos = tmp_path / "photos"
    shutil.copytree(synthetic_dir / "monarch", photos)
    paths = sorted(photos.iterdir())[:4]
    cache = tmp_path / "cache"
    cold = features.extract(backbone, small_weights, paths, variants=("orig", "flip"), cache_dir=cache, progress=False)
    assert cold["pooled", "orig"].shape == (4, 512)
    assert not np.allclose(cold["pooled", "orig"], cold["pooled", "flip"])

    def no_model(*args, **kwargs):
        raise AssertionError("a warm cache must not run the backbone")

    monkeypatch.setattr(features, "build_multi_output_extractor", no_model)
    renamed = photos / "renamed.jpg"
    paths[0].rename(renamed)  # same bytes under another name: still a hit
    warm = features.extract(backbone, small_weights, [renamed, *paths[1:]], variants=("orig", "flip"), cache_dir=cache,
                            progress=False)
    np.testing.assert_array_equal(warm["pooled", "orig"], cold["pooled", "orig"])

    renamed.write_bytes(renamed.read_bytes() + b"\0")  # new content: a miss
    with pytest.raises(AssertionError, match="warm cache"):
        features.extract(backbone, small_weights, [renamed], cache_dir=cache, progress=False)
    with pytest.raises(AssertionError, match="warm cache"):  # other weights: a miss
        features.extract(backbone, None, paths[1:2], cache_dir=cache, progress=False)


def test_cut_layer_activations_are_cached_next_to_pooled_features(tmp_path, synthetic_dir):
    backbone = get_backbone("mobilenet_0.50_160")
    paths = data.load_image_folder(synthetic_dir).paths[:2]
    result = features.extract(backbone, None, paths, outputs=(features.POOLED, backbone.fine_tune_from),
                              cache_dir=tmp_path, progress=False)
    assert result[backbone.fine_tune_from, "orig"].shape[0] == 2
    assert result[backbone.fine_tune_from, "orig"].ndim == 4


def test_weights_identity_hashes_local_files(small_weights):
    assert features.weights_identity(None) == "none"
    assert features.weights_identity("imagenet") == "imagenet"
    assert len(features.weights_identity(small_weights)) == 64
    assert features.weights_label(small_weights) == "mobilenet_0.50_160_imagenet_no_top.weights.h5"


def test_default_cache_dir_follows_the_environment_when_called(monkeypatch, tmp_path):
    monkeypatch.setenv("ML_CACHE_DIR", str(tmp_path))
    assert features.default_cache_dir() == tmp_path
