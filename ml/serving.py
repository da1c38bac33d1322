"""Shared-trunk serving: each distinct frozen backbone trunk runs once per view of a batch,
however many models (and the identifier) read it.

Every shipped model fine-tunes its MobileNetV2s only from `block_16_expand` up; the layers below
are the frozen pretrained weights, the same in every artifact built on the same weights file. So
an artifact's split export (ml/export.py `export_split`) is:

- one trunk .tflite per backbone: pixels (0..255) -> preprocessing -> backbone up to the input of
  its cut layer; its fingerprint (sha256 over the trunk's weight arrays, preprocessing and cut
  layer) says which trunks compute the same function;
- one tail .tflite: the trunks' activations for ONE view -> the model's outputs;
- serving.json: the trunks (file, fingerprint, the tail input each feeds), the tail, the views
  ("orig", "mirror": flip test-time augmentation) and how views combine ("mean": the mean of
  the per-view outputs, exactly as the Keras `Average` layer).

A process holds one interpreter per trunk fingerprint (`TRUNKS`), and each trunk remembers its
last batch per view by array identity: when the web side calls every model and the identifier
on the same decoded array, a trunk runs once per view, not once per model. Callers must not
change a batch array in place between calls (the worker never does: it decodes a new array).

Runs with ai-edge-litert alone: importing this module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

SERVING_FILE = "serving.json"
SERVING_FORMAT = 1
SIGNATURE = "serve"  # every split file's one signature
TRUNK_INPUT = "pixels"
TRUNK_OUTPUT = "activations"
ORIG, MIRROR = "orig", "mirror"
VIEWS = (ORIG, MIRROR)
MEAN = "mean"
PROBABILITIES = "probabilities"  # a classifier tail's one output


class ServingError(Exception):
    """A split export is missing, incomplete, or does not fit together."""


def view_pixels(pixels: np.ndarray, view: str) -> np.ndarray:
    """The batch as one view sees it: the photos themselves, or mirrored left-right (the
    artifacts' `HorizontalFlip` layer: NHWC axis 2)."""
    if view == ORIG:
        return np.ascontiguousarray(pixels, np.float32)
    if view == MIRROR:
        return np.ascontiguousarray(pixels[:, :, ::-1, :], np.float32)
    raise ServingError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")


class SignatureModel:
    """A .tflite file with one "serve" signature, run by ai-edge-litert: named arrays in, a dict of
    named arrays out (keyed by the signature, never by tensor position)."""

    def __init__(self, model: bytes | str | Path, num_threads: int | None = None):
        from ml.predict import litert_interpreter

        try:
            self.interpreter = litert_interpreter(model, num_threads)
        except (ValueError, RuntimeError) as error:
            raise ServingError(f"cannot load {model if isinstance(model, (str, Path)) else 'the export'}: "
                               f"{error}") from error
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ServingError(f"the export has no {SIGNATURE!r} signature (has {sorted(signatures)})")
        self.inputs = tuple(signatures[SIGNATURE]["inputs"])
        self.outputs = tuple(signatures[SIGNATURE]["outputs"])
        self._runner = self.interpreter.get_signature_runner(SIGNATURE)
        self._lock = threading.Lock()  # one interpreter runs one batch at a time

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        arrays = {name: np.ascontiguousarray(value, np.float32) for name, value in arrays.items()}
        with self._lock:
            outputs = self._runner(**arrays)
        return {name: np.array(value) for name, value in outputs.items()}


class Trunk:
    """One trunk interpreter and its last result per view, remembered by the batch array's
    identity (holding a reference to it, so the identity cannot be reused meanwhile)."""

    def __init__(self, fingerprint: str, model: SignatureModel):
        if model.inputs != (TRUNK_INPUT,) or model.outputs != (TRUNK_OUTPUT,):
            raise ServingError(f"a trunk takes {TRUNK_INPUT!r} and gives {TRUNK_OUTPUT!r}; this export takes "
                               f"{list(model.inputs)} and gives {list(model.outputs)}")
        self.fingerprint = fingerprint
        self.model = model
        self.runs = 0  # interpreter invocations, for tests and benchmarks
        self._last: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def activations(self, pixels: np.ndarray, view: str) -> np.ndarray:
        with self._lock:
            last = self._last.get(view)
            if last is not None and last[0] is pixels:
                return last[1]
            activations = self.model(**{TRUNK_INPUT: view_pixels(pixels, view)})[TRUNK_OUTPUT]
            self.runs += 1
            self._last[view] = (pixels, activations)
            return activations


class TrunkRegistry:
    """One `Trunk` per fingerprint: the first artifact that needs a trunk loads it from its own
    file; every later one with the same fingerprint shares that interpreter."""

    def __init__(self):
        self._trunks: dict[str, Trunk] = {}
        self._lock = threading.Lock()

    def get(self, fingerprint: str, source: bytes | str | Path) -> Trunk:
        with self._lock:
            trunk = self._trunks.get(fingerprint)
            if trunk is None:
                trunk = self._trunks[fingerprint] = Trunk(fingerprint, SignatureModel(source))
            return trunk

    def __len__(self) -> int:
        return len(self._trunks)

    def __iter__(self):
        return iter(list(self._trunks.values()))

    def clear(self) -> None:
        with self._lock:
            self._trunks.clear()


TRUNKS = TrunkRegistry()  # the process's one registry


class SplitModel:
    """An artifact's trunks and tail, composed: for each view, the tail on the trunks' activations
    for that view; the views' outputs combined by their mean. Callable like the whole model:
    a (batch, size, size, 3) float32 batch of pixels (0..255) in, a dict of named outputs out."""

    def __init__(self, spec: dict, trunks: list[Trunk], tail: SignatureModel, directory: Path | None = None):
        self.spec = spec
        self.directory = directory
        self.views = tuple(spec["views"])
        if spec.get("combine", MEAN) != MEAN or not self.views or any(v not in VIEWS for v in self.views):
            raise ServingError(f"views {list(self.views)} combined by {spec.get('combine')!r}: expected some of "
                               f"{list(VIEWS)} combined by {MEAN!r}")
        self.inputs = tuple(t["input"] for t in spec["trunks"])
        if sorted(self.inputs) != sorted(tail.inputs):
            raise ServingError(f"the tail takes {sorted(tail.inputs)} but the trunks feed {sorted(self.inputs)}")
        self.trunks = trunks
        self.tail = tail
        self.output_names = tail.outputs
        self.input_size = int(spec["input_size"])

    @classmethod
    def load(cls, directory: str | Path, registry: TrunkRegistry = TRUNKS) -> "SplitModel":
        directory = Path(directory)
        spec = read_spec(directory)
        trunks = []
        for trunk in spec["trunks"]:
            path = directory / trunk["file"]
            if not path.is_file():
                raise ServingError(f"{directory / SERVING_FILE} names {trunk['file']}, which is missing")
            trunks.append(registry.get(trunk["fingerprint"], path))
        tail_path = directory / spec["tail"]["file"]
        if not tail_path.is_file():
            raise ServingError(f"{directory / SERVING_FILE} names {spec['tail']['file']}, which is missing")
        return cls(spec, trunks, SignatureModel(tail_path), directory)

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        per_view = []
        for view in self.views:
            activations = {name: trunk.activations(pixels, view) for name, trunk in zip(self.inputs, self.trunks)}
            per_view.append(self.tail(**activations))
        if len(per_view) == 1:
            return per_view[0]
        combined = {}
        for name in self.output_names:
            # As keras.layers.Average: the views' outputs added in order, divided by their number.
            total = per_view[0][name]
            for view in per_view[1:]:
                total = total + view[name]
            combined[name] = total / np.float32(len(per_view))
        return combined

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """A classifier's probabilities (its tail has one output)."""
        [name] = self.output_names
        return self.outputs(pixels)[name]


def has_split(directory: str | Path) -> bool:
    return (Path(directory) / SERVING_FILE).is_file()


def read_spec(directory: str | Path) -> dict:
    path = Path(directory) / SERVING_FILE
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ServingError(f"no {SERVING_FILE} in {directory}") from None
    except json.JSONDecodeError as error:
        raise ServingError(f"unreadable {path}: {error}") from None
    if spec.get("format") != SERVING_FORMAT or not spec.get("trunks") or "tail" not in spec:
        raise ServingError(f"{path} is not a split export of format {SERVING_FORMAT}")
    return spec


def split_files(spec: dict) -> list[str]:
    """The files a split export needs besides serving.json, trunks first."""
    return [trunk["file"] for trunk in spec["trunks"]] + [spec["tail"]["file"]]
