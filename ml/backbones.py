"""Registry of Keras Applications backbones, each with its own input size and preprocessing.

Preprocessing is a Keras layer placed inside every model this package builds, so a feature
extractor, a trained artifact and a prediction all take raw RGB pixels in 0..255, and this
module is the one place that knows how each backbone wants them scaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras

IMAGENET = "imagenet"


@keras.saving.register_keras_serializable(package="ml")
class CaffePreprocess(keras.layers.Layer):
    """`preprocess_input` in "caffe" mode (ResNet50, VGG16): RGB to BGR, minus ImageNet means."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=inputs.dtype)


def _scale_to_unit_range(name: str = "preprocess_tf") -> keras.layers.Layer:
    # "tf" mode of preprocess_input: x / 127.5 - 1, i.e. [-1, 1].
    return keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name=name)


def _identity(name: str = "preprocess_none") -> keras.layers.Layer:
    # EfficientNetV2 rescales inside its own graph (include_preprocessing=True).
    return keras.layers.Identity(name=name)


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: Callable[..., keras.Model]
    input_size: int
    preprocessing: str  # "tf", "caffe" or "none": the mode of this backbone's preprocess_input
    # Layer from which fine-tuning unfreezes the top of the backbone: its input activations are
    # cached, so only the layers above it run during fine-tuning (the last block on a CPU budget).
    fine_tune_from: str | None = None
    constructor_kwargs: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, 3)

    def preprocessing_layer(self, name: str | None = None) -> keras.layers.Layer:
        """The layer that does this backbone's preprocess_input. `name` keeps several backbones
        in one model apart."""
        make = {
            "tf": _scale_to_unit_range,
            "caffe": lambda name="preprocess_caffe": CaffePreprocess(name=name),
            "none": _identity,
        }[self.preprocessing]
        return make(name) if name else make()

    def build(self, weights: str | Path | None = IMAGENET, name: str | None = None) -> keras.Model:
        """The convolutional base, globally average-pooled, expecting preprocessed input.

        weights: "imagenet" (Keras downloads and caches the official file), None (random), or
        the path of a local `.weights.h5` file holding this backbone without its top.
        name: the model's name, which must differ between backbones nested in one model.
        """
        if weights not in (None, IMAGENET):
            weights = str(weights)
            if not Path(weights).is_file():
                raise FileNotFoundError(f"weights file not found: {weights}")
        model = self.constructor(
            include_top=False,
            weights=weights,
            input_shape=self.input_shape,
            pooling="avg",
            **self.constructor_kwargs,
        )
        if name:  # renamed afterwards: some constructors (EfficientNetV2) look up settings by name
            model.name = name
        return model

    def build_feature_extractor(self, weights: str | Path | None = IMAGENET, name: str | None = None) -> keras.Model:
        """Raw RGB pixels (0..255) in, pooled features out; BatchNormalization in inference mode."""
        base = self.build(weights, name=name)
        base.trainable = False
        inputs = keras.Input(shape=self.input_shape, name="pixels")
        features = base(self.preprocessing_layer()(inputs), training=False)
        return keras.Model(inputs, features, name=f"{self.name}_features")


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone("mobilenet_v2", keras.applications.MobileNetV2, 224, "tf", "block_16_expand"),
        Backbone("mobilenet", keras.applications.MobileNet, 224, "tf", "conv_dw_13"),
        # The small MobileNet (alpha 0.5, 160 px): fast, and its weights ship in ../shared/weights.
        Backbone(
            "mobilenet_0.50_160",
            keras.applications.MobileNet,
            160,
            "tf",
            "conv_dw_13",
            {"alpha": 0.5},
        ),
        Backbone("efficientnet_v2_b0", keras.applications.EfficientNetV2B0, 224, "none", "block6a_expand_conv"),
        Backbone("resnet50", keras.applications.ResNet50, 224, "caffe", "conv5_block1_1_conv"),
        Backbone("vgg16", keras.applications.VGG16, 224, "caffe", "block5_conv1"),
        Backbone("inception_v3", keras.applications.InceptionV3, 299, "tf", "mixed9"),
        Backbone("xception", keras.applications.Xception, 299, "tf", "block13_sepconv1"),
    ]
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"unknown backbone {name!r}; known: {known}") from None
