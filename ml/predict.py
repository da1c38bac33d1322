"""The one interface the web application uses: load an artifact once, classify photos.

    predictor = Predictor.load("artifacts/inat_mobilenet_v2")   # once per process
    results = predictor.predict([image_file_or_path, ...])     # a batch
    results[0].top  # [Label("monarch", 0.97), ...]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ml import artifact, images


@dataclass(frozen=True)
class Label:
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    top: list[Label]
    # True when the best probability is under the artifact's calibrated threshold: the photo is
    # probably none of the species this model knows (or not a butterfly at all).
    unknown: bool
    # This photo's share of the batch's wall time, in milliseconds.
    latency_ms: float


class Predictor:
    def __init__(self, model, metadata: artifact.ArtifactMetadata, directory: Path):
        import tensorflow as tf

        self.model = model
        self.metadata = metadata
        self.directory = directory
        # A traced graph: calling the Keras model eagerly dispatches every layer from Python,
        # which measured ~16x slower for one photo (695 ms against 43 ms, default model, 2 CPUs).
        # One trace serves every batch size.
        size = metadata.input_size
        self._forward = tf.function(
            lambda pixels: self.model(pixels, training=False),
            input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)],
        )

    @classmethod
    def load(cls, directory: str | Path) -> "Predictor":
        directory = Path(directory)
        model, metadata = artifact.load(directory)
        predictor = cls(model, metadata, directory)
        predictor.warm_up()
        return predictor

    @property
    def classes(self) -> list[str]:
        return self.metadata.classes

    def warm_up(self) -> None:
        """Trace the graph at load time, not on the first request."""
        size = self.metadata.input_size
        self.predict_arrays(np.zeros((1, size, size, 3), np.float32))

    def predict_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of RGB pixel arrays (0..255) at the model's input size."""
        if len(pixels) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        # A direct (traced) call skips model.predict's per-call dataset machinery,
        # which costs more than the network itself for small batches.
        return np.asarray(self._forward(np.asarray(pixels, np.float32)))

    def predict(self, sources: Sequence[images.ImageSource], top_k: int = 5) -> list[Prediction]:
        started = time.perf_counter()
        pixels = images.to_batch(list(sources), self.metadata.input_size)
        decode_ms = (time.perf_counter() - started) * 1000
        return self.predict_pixels(pixels, top_k, extra_ms=decode_ms)

    def predict_pixels(self, pixels: np.ndarray, top_k: int = 5, extra_ms: float = 0.0) -> list[Prediction]:
        """Predictions for a batch already decoded with `images.to_batch` at this model's input
        size (so several models can share one decode); `extra_ms` (the decode time) is added to
        the batch's wall time before it is shared out per photo."""
        started = time.perf_counter()
        probabilities = self.predict_arrays(pixels)
        per_image_ms = (extra_ms + (time.perf_counter() - started) * 1000) / max(len(pixels), 1)
        return [self._prediction(row, top_k, per_image_ms) for row in probabilities]

    def _prediction(self, probabilities: np.ndarray, top_k: int, latency_ms: float) -> Prediction:
        order = np.argsort(probabilities)[::-1][:top_k]
        top = [Label(self.classes[i], float(probabilities[i])) for i in order]
        return Prediction(top=top, unknown=top[0].probability < self.metadata.unknown_threshold, latency_ms=latency_ms)
