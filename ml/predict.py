"""The one interface the web application uses: load an artifact once, classify photos.

    predictor = Predictor.load("artifacts/inat_mobilenet_v2")   # once per process (LiteRT: its split
                                                               # export, else model.tflite)
    results = predictor.predict([image_file_or_path, ...])     # a batch
    results[0].top  # [Label("monarch", 0.97), ...]
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ml import artifact, images, serving

logger = logging.getLogger(__name__)

KERAS = "keras"
LITERT = "litert"
SPLIT = "split"  # shared trunks + the model's tail (ml/serving.py), all LiteRT


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


def litert_interpreter(model: bytes | str | Path, num_threads: int | None = None):
    """ai-edge-litert's interpreter (XNNPACK) for a .tflite file or its bytes, with as many threads
    as the process may use (as TensorFlow does by default), unless `num_threads` says otherwise."""
    from ai_edge_litert.interpreter import Interpreter

    threads = num_threads or len(os.sched_getaffinity(0))
    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model), num_threads=threads)
    return Interpreter(model_path=str(model), num_threads=threads)


class LiteRTModel:
    """A .tflite model run by ai-edge-litert's interpreter (XNNPACK), without TensorFlow.

    Callable like the Keras forward pass: a (batch, size, size, 3) float32 batch in, probabilities
    out. The input is resized to each new batch size (tensors are re-allocated only then).
    """

    def __init__(self, model: bytes | str | Path, num_threads: int | None = None):
        self.interpreter = litert_interpreter(model, num_threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        output = self.interpreter.get_output_details()[0]
        self._output = output["index"]
        self.n_outputs = int(output["shape"][-1])
        self._shape: tuple[int, ...] | None = None
        self._lock = threading.Lock()  # one interpreter runs one batch at a time

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, np.float32)
        with self._lock:
            if pixels.shape != self._shape:
                self.interpreter.resize_tensor_input(self._input, list(pixels.shape))
                self.interpreter.allocate_tensors()
                self._shape = pixels.shape
            self.interpreter.set_tensor(self._input, pixels)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._output).copy()


class Predictor:
    """Serves an artifact's split export (shared trunks + its tail, ml/serving.py) or else its
    model.tflite with LiteRT (no TensorFlow in the process); an artifact made before exports
    existed is served by its Keras model, with a warning."""

    def __init__(self, model, metadata: artifact.ArtifactMetadata, directory: Path, runtime: str = "keras"):
        self.metadata = metadata
        self.directory = directory
        self.runtime = runtime
        if runtime == SPLIT:
            self.model = None
            self._forward = model
        elif runtime == LITERT:
            self.model = None
            self._forward = model if isinstance(model, LiteRTModel) else LiteRTModel(model)
        else:
            from ml.export import keras_forward

            # A traced graph: calling the Keras model eagerly dispatches every layer from Python,
            # which measured ~16x slower for one photo (695 ms against 43 ms, default model, 2 CPUs).
            # One trace serves every batch size.
            self.model = model
            self._forward = keras_forward(model, metadata.input_size)

    @classmethod
    def load(cls, directory: str | Path, runtime: str | None = None) -> "Predictor":
        """`runtime`: None serves the split export when the artifact has one (serving.json), else
        model.tflite, else model.keras; "split", "litert" or "keras" insists on one (benchmarks,
        export checks)."""
        directory = Path(directory)
        tflite = directory / artifact.TFLITE_FILE
        if runtime is None:
            runtime = SPLIT if serving.has_split(directory) else LITERT if tflite.is_file() else KERAS
            if runtime == KERAS:
                logger.warning("%s has no %s (made before LiteRT exports): serving its Keras model, which "
                               "imports TensorFlow; export it with `python -m ml export %s`",
                               directory, artifact.TFLITE_FILE, directory)
        if runtime == SPLIT:
            metadata = artifact.read_metadata(directory)
            try:
                model = serving.SplitModel.load(directory)
            except serving.ServingError as error:
                raise artifact.ArtifactError(str(error)) from error
            if model.output_names != (serving.PROBABILITIES,) or model.input_size != metadata.input_size:
                raise artifact.ArtifactError(f"the split export in {directory} gives {list(model.output_names)} at "
                                             f"{model.input_size} px; expected [{serving.PROBABILITIES!r}] at "
                                             f"{metadata.input_size} px")
        elif runtime == LITERT:
            metadata = artifact.read_metadata(directory)
            if not tflite.is_file():
                raise artifact.ArtifactError(f"no {artifact.TFLITE_FILE} in {directory}")
            try:
                model = LiteRTModel(tflite)
            except (ValueError, RuntimeError) as error:
                raise artifact.ArtifactError(f"cannot load {tflite}: {error}") from error
            if model.n_outputs != len(metadata.classes):
                raise artifact.ArtifactError(f"{tflite} has {model.n_outputs} outputs but metadata lists "
                                             f"{len(metadata.classes)} classes")
        elif runtime == KERAS:
            model, metadata = artifact.load(directory)
        else:
            raise ValueError(f"unknown runtime {runtime!r}: {SPLIT!r}, {LITERT!r} or {KERAS!r}")
        predictor = cls(model, metadata, directory, runtime)
        predictor.warm_up()
        return predictor

    def _input_shape(self) -> tuple[int, int, int]:
        size = self.metadata.input_size
        return size, size, 3

    @property
    def classes(self) -> list[str]:
        return self.metadata.classes

    def warm_up(self) -> None:
        """Trace the graph (Keras) or allocate the tensors (LiteRT) at load time, not on the first request."""
        probabilities = self.predict_arrays(np.zeros((1, *self._input_shape()), np.float32))
        if probabilities.shape[-1] != len(self.classes):
            raise artifact.ArtifactError(f"{self.directory} ({self.runtime}) gives {probabilities.shape[-1]} "
                                         f"probabilities but metadata lists {len(self.classes)} classes")

    def predict_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of RGB pixel arrays (0..255) at the model's input size."""
        if len(pixels) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        # A direct call (traced graph or interpreter) skips model.predict's per-call dataset
        # machinery, which costs more than the network itself for small batches.
        return self._forward(np.asarray(pixels, np.float32))

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
