"""One answer per photo: a species, look-alikes, an unknown butterfly or moth, or not a butterfly.

    identifier = Identifier.load("artifacts/identifier")       # once per process
    [signals] = identifier.signals(pixels)                      # per photo, stored with it
    answer = identifier.identify(model_tops, signals)           # pure numpy, cheap, repeatable

`signals` runs the open-set model of the identifier artifact: two frozen MobileNetV2s with their
own tops (iNaturalist insects, 1,022 species; ImageNet, 1,000 classes), whose outputs say whether
a photo shows a butterfly or moth at all and whether it looks like one of the species this site
knows. `identify` combines those signals with the classifiers' top-5 lists (default model first)
under the parameters fitted by scripts/build_identifier.py (see docs/ml.md, "Identification").

The open-set model is served from the artifact's model.tflite (its checked float32 LiteRT export,
ml/export.py `export_identifier`) with ai-edge-litert: no TensorFlow in the process. An artifact
without model.tflite is served by its model.keras (TensorFlow), with a warning.
Importing this module imports neither.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

KINDS = ("species", "uncertain", "unknown_species", "not_butterfly")
MODEL_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
SIGNATURE = "serve"  # the export's signature; its outputs are keyed by the names in OUTPUTS
KERAS = "keras"
LITERT = "litert"
SPLIT = "split"  # shared trunks + the identifier's tail (ml/serving.py), all LiteRT
PARAMETERS_FILE = "parameters.json"
ARRAYS_FILE = "parameters.npz"  # the fitted arrays: class centroids, the "known species" logistic
METADATA_FILE = "metadata.json"
INPUT_SIZE = 224
# The outputs of the open-set model, in order.
OUTPUTS = ("inat_probabilities", "imagenet_probabilities", "inat_features")
# ImageNet classes 321-326: admiral, ringlet, monarch, cabbage butterfly, sulphur, lycaenid.
IMAGENET_BUTTERFLIES = tuple(range(321, 327))
# ImageNet classes 300-320: beetles, flies, bees, ants, grasshoppers, dragonflies, ... (other insects).
IMAGENET_OTHER_INSECTS = tuple(range(300, 321))
DECIMALS = 6


@dataclass(frozen=True)
class Candidate:
    label: str
    probability: float


@dataclass(frozen=True)
class Identification:
    kind: str
    label: str | None
    candidates: tuple[Candidate, ...]
    scores: dict

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; kinds: {', '.join(KINDS)}")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "label": self.label,
            "candidates": [{"label": c.label, "probability": c.probability} for c in self.candidates],
            "scores": dict(self.scores),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Identification":
        return cls(
            kind=data["kind"],
            label=data.get("label"),
            candidates=tuple(Candidate(c["label"], float(c["probability"])) for c in data.get("candidates", ())),
            scores=dict(data.get("scores") or {}),
        )


class IdentifierError(Exception):
    """An identifier artifact directory is missing, incomplete or unreadable."""


def build_openset_model(weights_dir: str | Path):
    """Raw RGB pixels (0..255, 224x224) in; the iNat-insects top, the ImageNet top and the
    iNat backbone's pooled features out. Both networks frozen, weights from `weights_dir`
    (../shared/weights); the saved model needs nothing but itself to load."""
    import keras

    weights_dir = Path(weights_dir)
    pixels = keras.Input(shape=(INPUT_SIZE, INPUT_SIZE, 3), name="pixels")
    scaled = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="preprocess_tf")(pixels)

    inat = keras.applications.MobileNetV2(weights=None, classes=1022, classifier_activation="softmax",
                                          input_shape=(INPUT_SIZE, INPUT_SIZE, 3), name="inat_insects")
    inat.load_weights(weights_dir / "mobilenet_v2_1.0_224_inat_insects.weights.h5")
    imagenet = keras.applications.MobileNetV2(weights=None, input_shape=(INPUT_SIZE, INPUT_SIZE, 3),
                                              name="imagenet")
    imagenet.load_weights(weights_dir / "mobilenet_v2_1.0_224_imagenet.weights.h5")
    for network in (inat, imagenet):
        network.trainable = False
    # One pass through the iNat network gives both its pooled features and its top.
    inat_two = keras.Model(inat.input, [inat.output, inat.get_layer("predictions").input], name="inat_insects_two")
    inat_probabilities, inat_features = inat_two(scaled, training=False)
    imagenet_probabilities = imagenet(scaled, training=False)
    outputs = [
        keras.layers.Identity(name=OUTPUTS[0])(inat_probabilities),
        keras.layers.Identity(name=OUTPUTS[1])(imagenet_probabilities),
        keras.layers.Identity(name=OUTPUTS[2])(inat_features),
    ]
    return keras.Model(pixels, outputs, name="openset")


def combine_tops(model_tops) -> list[tuple[str, float]]:
    """The average of the models' top-5 lists (a class missing from a model's list counts as 0
    there), best first, probabilities rounded as the web app stores them. Works for any number
    of models, so a retrain that changes the active set changes nothing here."""
    tops = [[(str(label), round(float(p), DECIMALS)) for label, p in top] for top in model_tops if top]
    if not tops:
        return []
    mass: dict[str, float] = {}
    for top in tops:
        for label, probability in top:
            mass[label] = mass.get(label, 0.0) + probability
    # Ties (rare) break by label, so the answer never depends on dict order.
    return sorted(((label, total / len(tops)) for label, total in mass.items()), key=lambda item: (-item[1], item[0]))


class NamedLiteRTModel:
    """A .tflite model with one "serve" signature, run by ai-edge-litert (XNNPACK) without
    TensorFlow: a (batch, size, size, 3) float32 batch in, a dict of the OUTPUTS by name out.
    The outputs are read by their signature keys, never by tensor position."""

    def __init__(self, model: bytes | str | Path, num_threads: int | None = None):
        from ml.predict import litert_interpreter

        self.interpreter = litert_interpreter(model, num_threads)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise IdentifierError(f"the export has no {SIGNATURE!r} signature (has {sorted(signatures)})")
        names = signatures[SIGNATURE]["outputs"]
        if sorted(names) != sorted(OUTPUTS) or len(signatures[SIGNATURE]["inputs"]) != 1:
            raise IdentifierError(f"the export's outputs are {sorted(names)}, expected {sorted(OUTPUTS)}")
        [self._input] = signatures[SIGNATURE]["inputs"]
        self._runner = self.interpreter.get_signature_runner(SIGNATURE)
        self._lock = threading.Lock()  # one interpreter runs one batch at a time

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.ascontiguousarray(pixels, np.float32)
        with self._lock:
            outputs = self._runner(**{self._input: pixels})
        return {name: np.array(outputs[name]) for name in OUTPUTS}


class Identifier:
    """The open-set model and the fitted parameters of one identifier artifact directory."""

    def __init__(self, parameters: dict, arrays: dict | None = None, model=None, directory: Path | None = None):
        self.parameters = parameters
        self.arrays = dict(arrays or {})
        self.directory = directory
        self.input_size = int(parameters.get("input_size", INPUT_SIZE))
        # A SplitModel or NamedLiteRTModel (served) or a Keras model (artifacts without an export;
        # export checks).
        from ml.serving import SplitModel

        self.model = model
        self.runtime = SPLIT if isinstance(model, SplitModel) else LITERT if isinstance(model, NamedLiteRTModel) else KERAS
        self._forward = None

    @classmethod
    def load(cls, directory: str | Path, runtime: str | None = None) -> "Identifier":
        """`runtime`: None serves the split export when the artifact has one (serving.json), else
        model.tflite, else model.keras (with a warning); "split", "litert" or "keras" insists on
        one (export checks, benchmarks)."""
        from ml import serving

        directory = Path(directory)
        try:
            parameters = json.loads((directory / PARAMETERS_FILE).read_text())
        except FileNotFoundError:
            raise IdentifierError(f"no {PARAMETERS_FILE} in {directory}") from None
        except json.JSONDecodeError as error:
            raise IdentifierError(f"unreadable {directory / PARAMETERS_FILE}: {error}") from None
        tflite = directory / TFLITE_FILE
        if runtime is None:
            runtime = SPLIT if serving.has_split(directory) else LITERT if tflite.is_file() else KERAS
            if runtime == KERAS:
                logger.warning("%s has no %s: serving its Keras open-set model, which imports TensorFlow; "
                               "export it with `python -m ml export-identifier %s`", directory, TFLITE_FILE, directory)
        if runtime == SPLIT:
            try:
                model = serving.SplitModel.load(directory)
            except serving.ServingError as error:
                raise IdentifierError(str(error)) from error
            if sorted(model.output_names) != sorted(OUTPUTS):
                raise IdentifierError(f"the split export in {directory} gives {sorted(model.output_names)}, "
                                      f"expected {sorted(OUTPUTS)}")
        elif runtime == LITERT:
            if not tflite.is_file():
                raise IdentifierError(f"no {TFLITE_FILE} in {directory}")
            try:
                model = NamedLiteRTModel(tflite)
            except (ValueError, RuntimeError) as error:
                raise IdentifierError(f"cannot load {tflite}: {error}") from error
        elif runtime == KERAS:
            model_path = directory / MODEL_FILE
            if not model_path.is_file():
                raise IdentifierError(f"no {MODEL_FILE} in {directory}")
            import keras

            try:
                model = keras.saving.load_model(model_path, compile=False)
            except Exception as error:  # a truncated or corrupt file raises many kinds of errors
                raise IdentifierError(f"cannot load {model_path}: {error}") from error
        else:
            raise ValueError(f"unknown runtime {runtime!r}: {SPLIT!r}, {LITERT!r} or {KERAS!r}")
        try:
            with np.load(directory / ARRAYS_FILE) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except FileNotFoundError:
            raise IdentifierError(f"no {ARRAYS_FILE} in {directory}") from None
        identifier = cls(parameters, arrays, model, directory)
        identifier.signals(np.zeros((1, identifier.input_size, identifier.input_size, 3), np.float32))  # trace now
        return identifier

    # -- signals: the open-set model, once per photo ------------------------------------------

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """The open-set model's raw outputs for a batch of RGB pixels (0..255) at input_size."""
        if self.model is None:
            raise IdentifierError("this identifier has no open-set model loaded")
        pixels = np.asarray(pixels, np.float32)
        if len(pixels) == 0:
            return {name: np.zeros((0, 0), np.float32) for name in OUTPUTS}
        if self.runtime == SPLIT:
            return self.model.outputs(pixels)
        if self.runtime == LITERT:
            return self.model(pixels)
        if self._forward is None:
            import tensorflow as tf

            size = self.input_size
            self._forward = tf.function(lambda x: self.model(x, training=False),
                                        input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])
        return {name: np.asarray(value) for name, value in zip(OUTPUTS, self._forward(pixels))}

    def signals(self, pixels: np.ndarray) -> list[dict]:
        """One small JSON-able dict per photo: what `identify` needs besides the models' tops."""
        outputs = self.outputs(pixels)
        return signals_from_outputs(self.parameters, self.arrays, outputs)

    # -- the answer: pure numpy ---------------------------------------------------------------

    def identify(self, model_tops, signals: dict) -> Identification:
        return decide(self.parameters, model_tops, signals)


def _rounded(value: float) -> float:
    return round(float(value), DECIMALS)


def shipped_artifacts(artifacts_root: str | Path) -> list[Path]:
    """The model artifact directories artifacts/manifest.json lists, the default first."""
    root = Path(artifacts_root)
    manifest = json.loads((root / "manifest.json").read_text())
    names = list(manifest["artifacts"])
    default = manifest.get("default")
    if default in names:
        names.remove(default)
        names.insert(0, default)
    return [root / name for name in names]


def signals_from_outputs(parameters: dict, arrays: dict, outputs: dict) -> list[dict]:
    """The per-photo signals from the open-set model's outputs (see `Identifier.signals`):
    - inat_lepidoptera: the iNat-insects top's mass on butterflies and moths (ml/lepidoptera);
    - imagenet_butterflies / imagenet_insects: the ImageNet top's mass on its six butterfly
      classes / on its other insect classes;
    - nearest, similarity: the known species whose centroid (train photos' iNat features) is the
      nearest, and the cosine similarity to it;
    - lepidoptera_similarity: the same to the nearest centroid of any butterfly or moth species
      fitted on (the known ones and those of other_lepidoptera);
    - known: the fitted logistic P(one of the known species | iNat features)."""
    inat = np.asarray(outputs["inat_probabilities"], np.float64)
    imagenet = np.asarray(outputs["imagenet_probabilities"], np.float64)
    features = np.asarray(outputs["inat_features"], np.float64)
    inat_lepidoptera = inat[:, np.asarray(parameters["inat_lepidoptera"], np.int64)].sum(axis=1)
    imagenet_butterflies = imagenet[:, list(IMAGENET_BUTTERFLIES)].sum(axis=1)
    imagenet_insects = imagenet[:, list(IMAGENET_OTHER_INSECTS)].sum(axis=1)
    similarities = None
    if arrays.get("centroids") is not None:
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        similarities = unit @ np.asarray(arrays["centroids"], np.float64).T
    lepidoptera_similarities = None
    if arrays.get("lepidoptera_centroids") is not None:
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        lepidoptera_similarities = (unit @ np.asarray(arrays["lepidoptera_centroids"], np.float64).T).max(axis=1)
    known = None
    if arrays.get("known_weights") is not None:
        logits = features @ np.asarray(arrays["known_weights"], np.float64) + float(parameters["known_bias"])
        known = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
    classes = parameters["classes"]
    results = []
    for i in range(len(features)):
        signal = {
            "inat_lepidoptera": _rounded(inat_lepidoptera[i]),
            "imagenet_butterflies": _rounded(imagenet_butterflies[i]),
            "imagenet_insects": _rounded(imagenet_insects[i]),
        }
        if similarities is not None:
            nearest = int(np.argmax(similarities[i]))
            signal["nearest"] = classes[nearest]
            signal["similarity"] = _rounded(similarities[i, nearest])
        if lepidoptera_similarities is not None:
            signal["lepidoptera_similarity"] = _rounded(lepidoptera_similarities[i])
        if known is not None:
            signal["known"] = _rounded(known[i])
        results.append(signal)
    return results


def lepidoptera_mass(signals: dict) -> float:
    """How much the ImageNet top sees a butterfly: its butterfly mass, plus its other-insect mass
    as far as the iNat-insects top calls that insect a lepidopteran (a moth reads as "some
    insect" to ImageNet, which has no moth class; a bee on a flower is no lepidopteran to iNat)."""
    return min(1.0, float(signals.get("imagenet_butterflies", 0.0))
               + float(signals.get("inat_lepidoptera", 0.0)) * float(signals.get("imagenet_insects", 0.0)))


def lepidoptera_score(parameters: dict, signals: dict) -> float:
    """Butterfly-or-moth evidence: log of `lepidoptera_mass` plus a fitted weight times the
    cosine similarity of the photo's iNat features to the nearest butterfly or moth species
    centroid (the 49 known species and the other_lepidoptera species fitted on). ImageNet alone
    mistakes some butterflies for hair slides and bolo ties; the iNat features alone find
    textures insect-like; together they separate."""
    return _rounded(np.log(lepidoptera_mass(signals) + 1e-4)
                    + float(parameters.get("lepidoptera_weight", 0.0)) * float(signals.get("lepidoptera_similarity", 0.0)))


def decide(parameters: dict, model_tops, signals: dict) -> Identification:
    """The identification from the models' top-5 lists (default model first) and the photo's
    signals, under fitted `parameters`. Pure: the same inputs always give the same answer."""
    thresholds = parameters["thresholds"]
    model_tops = list(model_tops)
    if parameters.get("answer_source") == "default":
        model_tops = model_tops[:1]
    combined = combine_tops(model_tops)
    top_probability = combined[0][1] if combined else 0.0
    scores = {"lepidoptera": lepidoptera_score(parameters, signals), "top_probability": _rounded(top_probability)}
    for name in ("known", "similarity"):
        if name in signals:
            scores[name] = _rounded(signals[name])
    nearest = tuple(Candidate(label, _rounded(p)) for label, p in combined[:1])

    if scores["lepidoptera"] < thresholds["lepidoptera"]:
        return Identification("not_butterfly", None, nearest, scores)
    if "known" in thresholds and "known" in scores and scores["known"] < thresholds["known"]:
        return Identification("unknown_species", None, nearest, scores)
    if "similarity" in thresholds and "similarity" in scores and scores["similarity"] < thresholds["similarity"]:
        return Identification("unknown_species", None, nearest, scores)
    if not combined:
        return Identification("unknown_species", None, (), scores)
    if top_probability >= thresholds["species"]:
        return Identification("species", combined[0][0], _candidates(combined[:3]), scores)
    if sum(p for _, p in combined[:3]) >= thresholds["uncertain_mass"]:
        look_alikes = combined[:3]
        if len(look_alikes) == 3 and look_alikes[2][1] < thresholds.get("third_candidate", 0.0):
            look_alikes = look_alikes[:2]  # a third only when it is a real contender
        return Identification("uncertain", None, _candidates(look_alikes), scores)
    return Identification("unknown_species", None, nearest, scores)


def _candidates(ranked) -> tuple[Candidate, ...]:
    return tuple(Candidate(label, _rounded(p)) for label, p in ranked)
