import keras
import numpy as np
import pytest

from ml.backbones import BACKBONES, get_backbone

# The independent oracle: each backbone's own keras.applications preprocess_input.
KERAS_MODULES = {
    "mobilenet_v2": keras.applications.mobilenet_v2,
    "mobilenet": keras.applications.mobilenet,
    "mobilenet_0.50_160": keras.applications.mobilenet,
    "efficientnet_v2_b0": keras.applications.efficientnet_v2,
    "resnet50": keras.applications.resnet50,
    "vgg16": keras.applications.vgg16,
    "inception_v3": keras.applications.inception_v3,
    "xception": keras.applications.xception,
}
REQUIRED = {"mobilenet_v2", "mobilenet", "efficientnet_v2_b0", "resnet50", "vgg16", "inception_v3", "xception"}


def test_registry_has_the_required_backbones():
    assert REQUIRED <= set(BACKBONES)
    assert set(BACKBONES) == set(KERAS_MODULES)
    assert {b.input_size for b in BACKBONES.values()} >= {160, 224, 299}


@pytest.mark.parametrize("name", sorted(KERAS_MODULES))
def test_preprocessing_layer_matches_keras_preprocess_input(name):
    backbone = get_backbone(name)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = KERAS_MODULES[name].preprocess_input(pixels.copy())
    actual = np.asarray(backbone.preprocessing_layer()(pixels))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-3)


def test_distinct_preprocessing_names_for_nested_backbones():
    backbone = get_backbone("mobilenet_v2")
    assert backbone.preprocessing_layer(name="preprocess_0").name == "preprocess_0"
    assert backbone.preprocessing_layer().name != get_backbone("resnet50").preprocessing_layer().name


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_backbone_builds_a_pixel_feature_extractor_with_random_weights(name):
    """weights=None: the code path of the backbones whose weights cannot be downloaded here."""
    backbone = get_backbone(name)
    extractor = backbone.build_feature_extractor(weights=None, name=f"test_{name}")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, *backbone.input_shape)).astype(np.float32)
    features = np.asarray(extractor(pixels, training=False))
    assert features.shape[0] == 2 and features.ndim == 2
    assert np.all(np.isfinite(features))
    assert backbone.fine_tune_from in {layer.name for layer in extractor.layers[-1].layers}


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        get_backbone("mobilenet_v2").build(tmp_path / "absent.weights.h5")


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(ValueError, match="mobilenet_v2"):
        get_backbone("alexnet")


def test_local_weights_file_loads_real_weights(small_weights):
    backbone = get_backbone("mobilenet_0.50_160")
    real = backbone.build(small_weights)
    random = backbone.build(None)
    assert not np.allclose(real.get_layer("conv1").get_weights()[0], random.get_layer("conv1").get_weights()[0])
