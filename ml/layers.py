"""Custom Keras layers that trained artifacts contain; importing this module registers them."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="ml")
class HorizontalFlip(keras.layers.Layer):
    """Mirror images left-right (NHWC), always: the second view of flip test-time augmentation."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=2)
