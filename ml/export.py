"""LiteRT exports: model.keras -> model.tflite (float32), checked against the Keras model.

    python -m ml export artifacts/inat_imagenet_mobilenet_v2 ../shared/data/butterflies50 [--int8]

The Keras model stays the source of truth (training writes it); serving runs its float32 export
with ai-edge-litert (ml/predict.py), which needs no TensorFlow. An export is written only after
it has classified the check photos (the validation photos of the artifact's own split) with the
same top-1 as the Keras model and probabilities within MAX_PROBABILITY_DIFF; otherwise
`ExportError` is raised and nothing is written.

Full-integer int8 exports (calibrated on train photos) are measured here, not served: the
artifact's open-set threshold is calibrated on float32 outputs.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ml import artifact, images, serving

MAX_PROBABILITY_DIFF = 1e-4
CHECK_BATCH = 32
SYNTHETIC_CHECK_PHOTOS = 16
TAIL_FILE = "tail.tflite"
INT8_REPRESENTATIVE_PHOTOS = 100
# The shipped models' validation split (ml.train defaults): 801 of butterflies50/train.
VAL_FRACTION = 0.15
SEED = 0


class ExportError(artifact.ArtifactError):
    """An export does not classify like its Keras model, or cannot be made."""


def convert(model, input_size: int, representative: Iterable[np.ndarray] | None = None) -> bytes:
    """The .tflite bytes of a Keras model taking (batch, size, size, 3) pixels.

    Keras 3's own route (keras.export.ExportArchive -> SavedModel -> TFLiteConverter), limited to
    LiteRT builtin ops so the ai-edge-litert wheel runs it without TensorFlow's Flex ops. With
    `representative` (batches of pixels), full-integer int8 weights and activations; input and
    output stay float32, so both exports are called the same way.
    """
    import functools

    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="export-") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                             input_signature=[tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name="pixels")])
        archive.write_out(saved_model, verbose=False)
        return _convert_saved_model(tf.lite.TFLiteConverter.from_saved_model(saved_model), representative)


def _convert_saved_model(converter, representative: Iterable[np.ndarray] | None) -> bytes:
    """Run a TFLiteConverter limited to LiteRT builtin ops; with `representative` (batches of a
    one-input model's input), full-integer int8 with float32 input and output."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if representative is not None:
        batches = list(representative)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([batch[i:i + 1]] for batch in batches for i in range(len(batch)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as error:  # the converter raises many kinds of errors
        raise ExportError(f"cannot convert the model to LiteRT: {error}") from error


def keras_forward(model, input_size: int):
    """The Keras model as one traced graph for every batch size (as the Keras Predictor runs it)."""
    import tensorflow as tf

    forward = tf.function(lambda pixels: model(pixels, training=False),
                          input_signature=[tf.TensorSpec((None, input_size, input_size, 3), tf.float32)])
    return lambda pixels: np.asarray(forward(np.asarray(pixels, np.float32)))


def photo_batches(paths: Sequence[str | Path], size: int, batch_size: int = CHECK_BATCH):
    for start in range(0, len(paths), batch_size):
        yield images.to_batch(list(paths[start:start + batch_size]), size)


def synthetic_batches(size: int, n: int = SYNTHETIC_CHECK_PHOTOS, seed: int = SEED):
    """Photo-like pixels when no check photos are given: smooth random colour fields with edges
    (an upsampled 8x8 grid of colours plus noise), the same every time."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = []
    for _ in range(n):
        grid = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR), np.float32)
        pixels.append(np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.float32))
    yield np.stack(pixels)


def validation_photos(data_dir: str | Path, classes: list[str], val_fraction: float = VAL_FRACTION,
                      seed: int = SEED):
    """(val paths, val labels, train paths) of the split ml.train makes of `data_dir`."""
    from ml import data

    folder = data.load_image_folder(data.training_root(data_dir), classes)
    train_idx, val_idx = data.stratified_split(folder.labels, val_fraction, seed)
    return [folder.paths[i] for i in val_idx], folder.labels[val_idx], [folder.paths[i] for i in train_idx]


def compare(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Figures of an export's probabilities against the reference's on the same photos."""
    same_top1 = reference.argmax(1) == exported.argmax(1)
    figures = {
        "photos": int(len(reference)),
        "top1_agreement": round(float(same_top1.mean()), 6),
        "top1_disagreements": int((~same_top1).sum()),
        "max_probability_diff": float(np.abs(reference - exported).max()),
    }
    if labels is not None and len(labels):
        figures["reference_top1"] = round(float((reference.argmax(1) == labels).mean()), 6)
        figures["export_top1"] = round(float((exported.argmax(1) == labels).mean()), 6)
    return figures


def export_model(model, metadata: artifact.ArtifactMetadata, target: str | Path,
                 check_photos: Sequence[str | Path] | None = None, labels: np.ndarray | None = None,
                 reference: np.ndarray | None = None) -> dict:
    """Convert `model` to float32 LiteRT, check it, and only then write it to `target`.

    Returns the figures for metadata.json's "export". Raises ExportError (writing nothing) when the
    export's top-1 differs from the Keras model's on any check photo, or a probability differs by
    MAX_PROBABILITY_DIFF or more.
    """
    from ml.predict import LiteRTModel

    target = Path(target)
    size = metadata.input_size
    started = time.perf_counter()
    content = convert(model, size)
    convert_s = time.perf_counter() - started
    runtime = LiteRTModel(content)
    forward = keras_forward(model, size) if reference is None else None
    batches = photo_batches(check_photos, size) if check_photos else synthetic_batches(size)
    keras_out, exported = [], []
    for pixels in batches:
        if forward is not None:
            keras_out.append(forward(pixels))
        exported.append(runtime(pixels))
    reference = np.concatenate(keras_out) if forward is not None else reference
    figures = compare(reference, np.concatenate(exported), labels)
    figures.update({
        "format": "litert",
        "dtype": "float32",
        "file": target.name,
        "mb": round(len(content) / 1e6, 2),
        "check_set": "validation photos" if check_photos else f"{SYNTHETIC_CHECK_PHOTOS} synthetic images (no check photos given)",
        "max_probability_diff_allowed": MAX_PROBABILITY_DIFF,
        "convert_s": round(convert_s, 1),
    })
    if figures["top1_disagreements"] or not figures["max_probability_diff"] < MAX_PROBABILITY_DIFF:
        raise ExportError(
            f"refused the LiteRT export of {metadata.name}: on {figures['photos']} check photos its top-1 differs "
            f"from the Keras model's on {figures['top1_disagreements']} and probabilities differ by up to "
            f"{figures['max_probability_diff']:.3g} (allowed: same top-1, under {MAX_PROBABILITY_DIFF:g}); "
            f"{target} was not written")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(content)
    temporary.replace(target)  # atomic: a reader never sees half a model
    return figures


def keras_reference(model, size: int, check_photos) -> np.ndarray:
    """The Keras model's probabilities on the check photos (synthetic images without them)."""
    forward = keras_forward(model, size)
    batches = photo_batches(check_photos, size) if check_photos else synthetic_batches(size)
    return np.concatenate([forward(pixels) for pixels in batches])


def export_artifact(directory: str | Path, data_dir: str | Path | None = None, int8: bool = False,
                    int8_out: str | Path | None = None, whole: bool = True, split: bool = True,
                    converted: dict | None = None) -> dict:
    """Export an artifact's model.keras to its model.tflite and its split export (trunks, tail,
    serving.json: `export_split`), each checked on the validation photos of `data_dir`
    (synthetic images without it), and record the figures in its metadata.json ("export", and
    "export"["split"]). `whole`/`split` False skips one (the other's figures stay as they were).

    With `int8`, also measure a full-integer export calibrated on INT8_REPRESENTATIVE_PHOTOS train
    photos against the float32 export on the same validation photos (written to `int8_out` if
    given, never into the artifact)."""
    directory = Path(directory)
    model, metadata = artifact.load(directory)
    check, labels, train_paths = (validation_photos(data_dir, metadata.classes) if data_dir else (None, None, []))
    reference = keras_reference(model, metadata.input_size, check)
    figures = dict(metadata.export)
    if whole:
        figures = export_model(model, metadata, directory / artifact.TFLITE_FILE, check, labels, reference)
        if data_dir:
            figures["check_split"] = {"data": Path(data_dir).name, "val_fraction": VAL_FRACTION, "seed": SEED}
    if split and splittable(model):
        spec = export_split(model, metadata, directory, check, labels, reference, converted)
        figures["split"] = split_summary(spec)
    elif split and not whole:
        raise ExportError(f"cannot split {metadata.name}: it has no features and head layers "
                          f"(ml.train.assemble builds them); it is served whole from {artifact.TFLITE_FILE}")
    if int8:
        if not data_dir:
            raise ExportError("an int8 export needs DATA_DIR: it is calibrated on train photos")
        figures["int8"] = measure_int8(model, metadata, directory / artifact.TFLITE_FILE, check, labels,
                                       train_paths, int8_out)
    metadata.export = figures
    artifact.write_metadata(directory, metadata)
    return figures


def split_summary(spec: dict) -> dict:
    """What metadata.json records of a split export (serving.json holds all of it)."""
    return {"file": serving.SERVING_FILE, "trunks": [t["fingerprint"] for t in spec["trunks"]],
            "views": spec["views"], "combine": spec["combine"], **spec["check"]}


def representative_photos(train_paths: Sequence[Path], n: int = INT8_REPRESENTATIVE_PHOTOS, seed: int = SEED):
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(train_paths), size=min(n, len(train_paths)), replace=False)
    return [train_paths[i] for i in sorted(picked)]


def measure_int8(model, metadata: artifact.ArtifactMetadata, float32_tflite: Path, check_photos, labels,
                 train_paths, out: str | Path | None = None) -> dict:
    """A full-integer int8 export against the float32 one on the check photos: top-1, agreement,
    largest probability difference, and the share of photos each keeps above the artifact's
    open-set threshold (calibrated on float32)."""
    from ml.predict import LiteRTModel

    size = metadata.input_size
    representative = representative_photos(train_paths)
    started = time.perf_counter()
    content = convert(model, size, representative=photo_batches(representative, size))
    convert_s = time.perf_counter() - started
    quantized, reference = LiteRTModel(content), LiteRTModel(Path(float32_tflite).read_bytes())
    q, f = [], []
    for pixels in photo_batches(check_photos, size):
        q.append(quantized(pixels))
        f.append(reference(pixels))
    q, f = np.concatenate(q), np.concatenate(f)
    figures = compare(f, q, labels)
    figures["float32_top1"] = figures.pop("reference_top1")
    figures["int8_top1"] = figures.pop("export_top1")
    figures.update({
        "representative_photos": len(representative),
        "kept_above_threshold_float32": round(float((f.max(1) >= metadata.unknown_threshold).mean()), 6),
        "kept_above_threshold_int8": round(float((q.max(1) >= metadata.unknown_threshold).mean()), 6),
        "mb": round(len(content) / 1e6, 2),
        "convert_s": round(convert_s, 1),
        "served": False,
    })
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(content)
    return figures


# -- split exports: shared frozen trunks + a tail per model (ml/serving.py) ----------------------

@dataclass
class TrunkPart:
    """One backbone's trunk inside a Keras model: its preprocessing layer, the (nested) backbone
    model, and the layer where the trainable top begins."""
    input: str  # the tail's input this trunk feeds
    preprocess: object
    base: object
    cut_layer: str

    def core(self):
        import keras

        return keras.Model(self.base.input, self.base.get_layer(self.cut_layer).input, name=f"{self.input}_core")

    def model(self, input_size: int):
        """Pixels (0..255) -> preprocessing -> the backbone up to its cut layer's input."""
        import keras

        pixels = keras.Input(shape=(input_size, input_size, 3), name=serving.TRUNK_INPUT)
        return keras.Model(pixels, self.core()(self.preprocess(pixels)), name=self.input)

    def upper(self, outputs=None):
        """The backbone from its cut layer up (its output, or `outputs`)."""
        import keras

        return keras.Model(self.base.get_layer(self.cut_layer).input,
                           self.base.output if outputs is None else outputs, name=f"{self.input}_upper")

    def fingerprint(self, input_size: int) -> str:
        """sha256 over what the trunk computes: its layers, weight arrays, preprocessing, cut layer
        and input size. Equal fingerprints: interchangeable trunks, whatever model they came from."""
        import hashlib
        import json

        core = self.core()
        config = {key: value for key, value in self.preprocess.get_config().items()
                  if key not in ("name", "trainable", "dtype")}
        described = {
            "cut_layer": self.cut_layer,
            "input_size": input_size,
            "preprocessing": [type(self.preprocess).__name__, config],
            # Input layers are left out: Keras numbers their names per process.
            "layers": [[type(layer).__name__, layer.name] for layer in core.layers
                       if type(layer).__name__ != "InputLayer"],
        }
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
        for weight in core.weights:
            array = np.ascontiguousarray(np.asarray(weight.numpy()))
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        return "sha256:" + digest.hexdigest()


def splittable(model) -> bool:
    """Whether a classifier has the layers ml.train.assemble gives it (features, head): those
    are split; any other model is served whole (model.tflite)."""
    return {"features", "head"} <= {layer.name for layer in model.layers}


def classifier_parts(model, metadata: artifact.ArtifactMetadata):
    """(trunk parts, tail Keras model, views) of a classifier built by ml.train.assemble: pixels ->
    [mirror ->] features (preprocess_i -> backbone_i_*, concatenated) -> head [-> tta_average]."""
    import keras

    from ml.backbones import get_backbone

    try:
        extractor, head = model.get_layer("features"), model.get_layer("head")
        parts = []
        for i, backbone in enumerate(metadata.backbone.split("+")):
            cut = get_backbone(backbone).fine_tune_from
            [base] = [layer for layer in extractor.layers if layer.name.startswith(f"backbone_{i}_")]
            if cut is None:
                raise ValueError(f"backbone {backbone} has no cut layer")
            parts.append(TrunkPart(f"trunk_{i}", extractor.get_layer(f"preprocess_{i}"), base, cut))
    except ValueError as error:  # a layer missing or ambiguous: not a model ml.train assembled
        raise ExportError(f"cannot split {metadata.name}: {error}") from error
    inputs = [keras.Input(shape=part.base.get_layer(part.cut_layer).input.shape[1:], name=part.input) for part in parts]
    pooled = [part.upper()(x) for part, x in zip(parts, inputs)]
    merged = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate()(pooled)
    tail = keras.Model(inputs, {serving.PROBABILITIES: head(merged)}, name="tail")
    views = [serving.ORIG, serving.MIRROR] if "mirror" in {layer.name for layer in model.layers} else [serving.ORIG]
    return parts, tail, views


def identifier_parts(model):
    """(trunk parts, tail Keras model, views) of the identifier's open-set model
    (ml.identify.build_openset_model): one view, its three named outputs."""
    import keras

    from ml import identify
    from ml.backbones import get_backbone

    cut = get_backbone("mobilenet_v2").fine_tune_from
    preprocess = model.get_layer("preprocess_tf")
    inat, imagenet = model.get_layer("inat_insects_two"), model.get_layer("imagenet")
    parts = [TrunkPart("trunk_0", preprocess, inat, cut), TrunkPart("trunk_1", preprocess, imagenet, cut)]
    inputs = [keras.Input(shape=part.base.get_layer(cut).input.shape[1:], name=part.input) for part in parts]
    inat_probabilities, inat_features = parts[0].upper(list(inat.outputs))(inputs[0])
    imagenet_probabilities = parts[1].upper()(inputs[1])
    outputs = dict(zip(identify.OUTPUTS, (inat_probabilities, imagenet_probabilities, inat_features)))
    return parts, keras.Model(inputs, outputs, name="tail"), [serving.ORIG]


def convert_signature(model, inputs: dict[str, tuple], representative: Iterable[np.ndarray] | None = None) -> bytes:
    """The float32 .tflite bytes of a Keras model whose inputs and outputs are dicts keyed by
    name, under one signature ("serve") with those keys; `inputs`: name -> shape without batch.
    With `representative` (batches for a one-input model), full-integer int8 weights and
    activations, input and output kept float32 (called the same way)."""
    import keras
    import tensorflow as tf

    names = list(inputs)

    def serve(*arrays):
        outputs = model(arrays[0] if len(arrays) == 1 else list(arrays), training=False)
        return outputs if isinstance(outputs, dict) else {serving.TRUNK_OUTPUT: outputs}

    with tempfile.TemporaryDirectory(prefix="export-") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(serving.SIGNATURE, serve, input_signature=[
            tf.TensorSpec((None, *inputs[name]), tf.float32, name=name) for name in names])
        archive.write_out(saved_model, verbose=False)
        return _convert_saved_model(
            tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[serving.SIGNATURE]), representative)


def convert_split(parts, tail, views, input_size: int, converted: dict | None = None):
    """(serving.json's spec without its check, {file: bytes}) of a split export. `converted`
    (fingerprint -> trunk bytes) saves converting a trunk already converted for another model."""
    converted = {} if converted is None else converted
    started = time.perf_counter()
    trunks, contents = [], {}
    for part in parts:
        fingerprint = part.fingerprint(input_size)
        if fingerprint not in converted:
            converted[fingerprint] = convert_signature(part.model(input_size), {
                serving.TRUNK_INPUT: (input_size, input_size, 3)})
        file = f"{part.input}.tflite"
        contents[file] = converted[fingerprint]
        trunks.append({"input": part.input, "file": file, "fingerprint": fingerprint,
                       "backbone": part.base.name, "cut_layer": part.cut_layer,
                       "mb": round(len(converted[fingerprint]) / 1e6, 2)})
    tail_inputs = {part.input: tuple(part.base.get_layer(part.cut_layer).input.shape[1:]) for part in parts}
    contents[TAIL_FILE] = convert_signature(tail, tail_inputs)
    spec = {"format": serving.SERVING_FORMAT, "input_size": input_size, "trunks": trunks,
            "tail": {"file": TAIL_FILE, "outputs": list(serving.SignatureModel(contents[TAIL_FILE]).outputs),
                     "mb": round(len(contents[TAIL_FILE]) / 1e6, 2)},
            "views": list(views), "combine": serving.MEAN,
            "dtype": "float32", "convert_s": round(time.perf_counter() - started, 1)}
    return spec, contents


def split_runtime(spec: dict, contents: dict[str, bytes]) -> serving.SplitModel:
    """The split export composed from bytes, with a registry of its own (nothing shared with the
    process's serving registry until it is written and loaded)."""
    registry = serving.TrunkRegistry()
    trunks = [registry.get(trunk["fingerprint"], contents[trunk["file"]]) for trunk in spec["trunks"]]
    return serving.SplitModel(spec, trunks, serving.SignatureModel(contents[spec["tail"]["file"]]))


def write_split(directory: Path, spec: dict, contents: dict[str, bytes]) -> None:
    """Each file atomically, serving.json last: its presence is what makes Predictor.load serve the split."""
    import json

    for file, content in contents.items():
        temporary = directory / f".{file}.{os.getpid()}.tmp"
        temporary.write_bytes(content)
        temporary.replace(directory / file)
    temporary = directory / f".{serving.SERVING_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(spec, indent=2) + "\n")
    temporary.replace(directory / serving.SERVING_FILE)


def export_split(model, metadata: artifact.ArtifactMetadata, directory: str | Path,
                 check_photos: Sequence[str | Path] | None = None, labels: np.ndarray | None = None,
                 reference: np.ndarray | None = None, converted: dict | None = None) -> dict:
    """Convert a classifier's trunks and tail, check their composition (LiteRT, views averaged)
    against the Keras model, and only then write them and serving.json into `directory`.

    `reference`: the Keras model's probabilities on the check photos, if already computed.
    Raises ExportError (writing nothing) when the composition's top-1 differs from the Keras
    model's on any check photo, or a probability differs by MAX_PROBABILITY_DIFF or more."""
    directory = Path(directory)
    size = metadata.input_size
    parts, tail, views = classifier_parts(model, metadata)
    spec, contents = convert_split(parts, tail, views, size, converted)
    composed = split_runtime(spec, contents)
    if composed.output_names != (serving.PROBABILITIES,):
        raise ExportError(f"the tail of {metadata.name} gives {list(composed.output_names)}, "
                          f"expected [{serving.PROBABILITIES!r}]")
    forward = keras_forward(model, size) if reference is None else None
    batches = photo_batches(check_photos, size) if check_photos else synthetic_batches(size)
    keras_out, split_out = [], []
    for pixels in batches:
        if forward is not None:
            keras_out.append(forward(pixels))
        split_out.append(composed(pixels))
    reference = np.concatenate(keras_out) if forward is not None else reference
    figures = compare(reference, np.concatenate(split_out), labels)
    figures.update({
        "check_set": "validation photos" if check_photos else f"{SYNTHETIC_CHECK_PHOTOS} synthetic images (no check photos given)",
        "max_probability_diff_allowed": MAX_PROBABILITY_DIFF,
    })
    if figures["top1_disagreements"] or not figures["max_probability_diff"] < MAX_PROBABILITY_DIFF:
        raise ExportError(
            f"refused the split export of {metadata.name}: on {figures['photos']} check photos its top-1 differs "
            f"from the Keras model's on {figures['top1_disagreements']} and probabilities differ by up to "
            f"{figures['max_probability_diff']:.3g} (allowed: same top-1, under {MAX_PROBABILITY_DIFF:g}); "
            f"nothing was written to {directory}")
    spec["check"] = figures
    write_split(directory, spec, contents)
    return spec


def int8_trunks(artifacts_root: str | Path, data_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Full-integer int8 exports of every distinct trunk of the shipped models (float32 in and
    out), calibrated on INT8_REPRESENTATIVE_PHOTOS photos of the shipped models' training split
    (both views: the trunks see mirrored photos too); written to `out_dir`/<fingerprint>.tflite,
    never into an artifact. Returns {fingerprint: path}; converts only those not there yet."""
    from ml.identify import shipped_artifacts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for directory in shipped_artifacts(artifacts_root):
        spec = serving.read_spec(directory)
        missing = [t for t in spec["trunks"] if t["fingerprint"] not in paths
                   and not (out_dir / f"{t['fingerprint'].split(':')[1]}.tflite").is_file()]
        for trunk in spec["trunks"]:
            paths[trunk["fingerprint"]] = out_dir / f"{trunk['fingerprint'].split(':')[1]}.tflite"
        if not missing:
            continue
        model, metadata = artifact.load(directory)
        parts, _, _ = classifier_parts(model, metadata)
        size = metadata.input_size
        _, _, train_paths = validation_photos(data_dir, metadata.classes)
        photos = next(photo_batches(representative_photos(train_paths), size, batch_size=INT8_REPRESENTATIVE_PHOTOS))
        calibration = [photos, photos[:, :, ::-1, :]]
        for part in parts:
            fingerprint = part.fingerprint(size)
            if fingerprint in {t["fingerprint"] for t in missing}:
                content = convert_signature(part.model(size), {serving.TRUNK_INPUT: (size, size, 3)},
                                            representative=calibration)
                paths[fingerprint].write_bytes(content)
    return paths


def measure_int8_trunks(artifacts_root: str | Path, data_root: str | Path, out_dir: str | Path) -> dict:
    """Each shipped model and the identifier served with int8 trunks (float32 tails) against the
    float32 split exports: each model's validation top-1 (801 photos), agreement, largest
    probability difference and share kept above its open-set threshold (calibrated on float32);
    the identifier's signals and answers on its check photos (with the int8 models' tops)."""
    from ml import identify
    from ml.predict import Predictor

    artifacts_root, data_root = Path(artifacts_root), Path(data_root)
    int8_paths = int8_trunks(artifacts_root, data_root / "butterflies50", out_dir)
    quantized = serving.TrunkRegistry()
    for fingerprint, path in int8_paths.items():
        quantized.get(fingerprint, path)
    figures: dict = {"representative_photos": INT8_REPRESENTATIVE_PHOTOS, "views_calibrated": list(serving.VIEWS),
                     "trunk_mb": {fp: round(p.stat().st_size / 1e6, 2) for fp, p in int8_paths.items()},
                     "models": {}}
    int8_models = {}
    for directory in identify.shipped_artifacts(artifacts_root):
        float32 = Predictor.load(directory, runtime="split")
        int8_models[directory.name] = Predictor(serving.SplitModel.load(directory, registry=quantized),
                                                float32.metadata, directory, runtime="split")
        check, labels, _ = validation_photos(data_root / "butterflies50", float32.classes)
        f, q = [], []
        for pixels in photo_batches(check, float32.metadata.input_size):
            f.append(float32.predict_arrays(pixels))
            q.append(int8_models[directory.name].predict_arrays(pixels))
        f, q = np.concatenate(f), np.concatenate(q)
        model = compare(f, q, labels)
        model["float32_top1"], model["int8_top1"] = model.pop("reference_top1"), model.pop("export_top1")
        threshold = float32.metadata.unknown_threshold
        model["kept_above_threshold_float32"] = round(float((f.max(1) >= threshold).mean()), 6)
        model["kept_above_threshold_int8"] = round(float((q.max(1) >= threshold).mean()), 6)
        model["top1_change_points"] = round(100 * (model["int8_top1"] - model["float32_top1"]), 2)
        figures["models"][directory.name] = model
    float32_identifier = identify.Identifier.load(artifacts_root / "identifier", runtime=identify.SPLIT)
    int8_identifier = identify.Identifier(float32_identifier.parameters, float32_identifier.arrays,
                                          serving.SplitModel.load(artifacts_root / "identifier", registry=quantized),
                                          float32_identifier.directory)
    photos = identifier_check_photos(data_root)
    int8_tops: list[list] = [[] for _ in photos]
    for predictor in int8_models.values():
        for start in range(0, len(photos), CHECK_BATCH):
            for i, prediction in enumerate(predictor.predict(photos[start:start + CHECK_BATCH])):
                int8_tops[start + i].append([(label.label, label.probability) for label in prediction.top])
    # The signals alone (both identifiers given the int8 models' tops) ...
    figures["identifier"] = compare_identifier(float32_identifier, int8_identifier, photos, int8_tops)
    figures["identifier"]["check_set"] = "2 photos of each butterflies50/train and other_lepidoptera folder"
    # ... and end to end: everything float32 against everything int8.
    float32_tops = shipped_tops(photos, artifacts_root)
    changed_kind = changed_answer = 0
    for start in range(0, len(photos), CHECK_BATCH):
        pixels = images.to_batch(list(photos[start:start + CHECK_BATCH]), float32_identifier.input_size)
        pairs = zip(float32_identifier.signals(pixels), int8_identifier.signals(pixels))
        for offset, (f_signals, q_signals) in enumerate(pairs):
            ours = float32_identifier.identify(float32_tops[start + offset], f_signals)
            theirs = int8_identifier.identify(int8_tops[start + offset], q_signals)
            changed_kind += ours.kind != theirs.kind
            changed_answer += (ours.kind, ours.label) != (theirs.kind, theirs.label)
    figures["identifier"]["end_to_end_kind_changed"] = changed_kind
    figures["identifier"]["end_to_end_answer_changed"] = changed_answer
    worst = max(abs(m["top1_change_points"]) for m in figures["models"].values())
    figures["within_0.2_points"] = worst <= 0.2
    figures["served"] = False
    return figures


# -- models with several named outputs (the identifier's open-set model) ---------------------------

def convert_named(model, input_size: int, names: Sequence[str]) -> bytes:
    """The float32 .tflite bytes of a Keras model with several outputs, served under one signature
    ("serve") whose outputs are keyed by `names` (in the model's output order). LiteRT reads
    them back by these keys, so no caller depends on the order the converter gives the tensors."""
    import keras
    import tensorflow as tf

    names = list(names)
    if len(model.outputs) != len(names):
        raise ExportError(f"the model has {len(model.outputs)} outputs, {len(names)} names given")

    def serve(pixels):
        return dict(zip(names, model(pixels, training=False)))

    with tempfile.TemporaryDirectory(prefix="export-") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", serve,
                             input_signature=[tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name="pixels")])
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serve"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return converter.convert()
        except Exception as error:  # the converter raises many kinds of errors
            raise ExportError(f"cannot convert the model to LiteRT: {error}") from error


def identifier_check_photos(data_root: str | Path, per_folder: int = 2, seed: int = SEED) -> list[Path]:
    """Real photos for the identifier's export check: `per_folder` photos of every species folder
    of butterflies50/train and of other_lepidoptera (known species, unknown
    butterflies and moths), the same every time. `data_root` is ../shared/data."""
    from ml import data

    root = Path(data_root)
    rng = np.random.default_rng(seed)
    photos: list[Path] = []
    folders = sorted(p for p in (root / "butterflies50" / "train").iterdir() if p.is_dir())
    folders += sorted(p for p in (root / "other_lepidoptera").iterdir() if p.is_dir())
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in data.IMAGE_SUFFIXES)
        picked = rng.choice(len(files), size=min(per_folder, len(files)), replace=False)
        photos += [files[i] for i in sorted(picked)]
    return photos


def compare_identifier(reference, exported, check_photos: Sequence[str | Path], model_tops) -> dict:
    """Figures of an exported identifier against the Keras one on the same photos: the largest
    difference of each raw output and of each numeric signal, photos whose nearest species or
    identification differ. `model_tops`: each photo's classifier top-5 lists (default first)."""
    from ml import identify

    figures: dict = {"photos": len(check_photos), "max_output_diff": {}, "max_signal_diff": 0.0,
                     "max_score_diff": 0.0, "nearest_disagreements": 0, "identification_disagreements": 0}
    for start in range(0, len(check_photos), CHECK_BATCH):
        paths = check_photos[start:start + CHECK_BATCH]
        pixels = images.to_batch(list(paths), reference.input_size)
        ours, theirs = reference.outputs(pixels), exported.outputs(pixels)
        for name in identify.OUTPUTS:
            diff = float(np.abs(ours[name] - theirs[name]).max())
            figures["max_output_diff"][name] = max(figures["max_output_diff"].get(name, 0.0), diff)
        for offset, (a, b) in enumerate(zip(reference.signals(pixels), exported.signals(pixels))):
            for key, value in a.items():
                if isinstance(value, str):
                    figures["nearest_disagreements"] += int(value != b[key])
                else:
                    figures["max_signal_diff"] = max(figures["max_signal_diff"], abs(value - b[key]))
            tops = model_tops[start + offset]
            ours_id, theirs_id = reference.identify(tops, a), exported.identify(tops, b)
            # The same answer: kind, species and candidates. Its scores are reported, not held to
            # 1e-4: the lepidoptera score is a log of a mass that can be ~0, which magnifies tiny
            # differences of the signals.
            if (ours_id.kind, ours_id.label, ours_id.candidates) != (theirs_id.kind, theirs_id.label, theirs_id.candidates):
                figures["identification_disagreements"] += 1
            for key, value in ours_id.scores.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    figures["max_score_diff"] = max(figures["max_score_diff"], abs(value - theirs_id.scores[key]))
    return figures


def shipped_tops(check_photos: Sequence[str | Path], artifacts_root: str | Path) -> list[list]:
    """Each photo's top-5 lists from the shipped classifiers (default first), as the worker stores them."""
    from ml.identify import shipped_artifacts
    from ml.predict import Predictor

    predictors = [Predictor.load(d) for d in shipped_artifacts(artifacts_root)]
    tops: list[list] = [[] for _ in check_photos]
    for predictor in predictors:
        for start in range(0, len(check_photos), CHECK_BATCH):
            batch = list(check_photos[start:start + CHECK_BATCH])
            for i, prediction in enumerate(predictor.predict(batch)):
                tops[start + i].append([(label.label, label.probability) for label in prediction.top])
    return tops


def export_identifier(directory: str | Path, data_root: str | Path, artifacts_root: str | Path,
                      per_folder: int = 2, whole: bool = True, split: bool = True,
                      converted: dict | None = None) -> dict:
    """Export the identifier artifact's open-set model.keras to a float32 model.tflite and to its
    split export (trunks, tail, serving.json; one view), each checked on real photos
    (`identifier_check_photos`): every raw output within MAX_PROBABILITY_DIFF, every signal
    within MAX_PROBABILITY_DIFF, the same nearest species and the same identification (with the
    shipped classifiers' tops). Only then written, and the figures recorded in its metadata.json
    under "export" (the split's under "export"["split"]); otherwise ExportError and nothing of
    that export written. `whole`/`split` False skips one."""
    import json

    from ml import identify

    directory = Path(directory)
    reference = identify.Identifier.load(directory, runtime=identify.KERAS)
    photos = identifier_check_photos(data_root, per_folder)
    tops = shipped_tops(photos, artifacts_root)
    check_set = f"{per_folder} photos of each butterflies50/train and other_lepidoptera folder"
    metadata_path = directory / identify.METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    figures = dict(metadata.get("export") or {})
    if whole:
        content = convert_named(reference.model, reference.input_size, identify.OUTPUTS)
        exported = identify.Identifier(reference.parameters, reference.arrays,
                                       identify.NamedLiteRTModel(content), directory)
        target = directory / identify.TFLITE_FILE
        figures = _checked_identifier(reference, exported, photos, tops, f"{target} was not written")
        figures.update({"format": "litert", "dtype": "float32", "file": target.name,
                        "mb": round(len(content) / 1e6, 2), "max_diff_allowed": MAX_PROBABILITY_DIFF,
                        "check_set": check_set})
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_bytes(content)
        temporary.replace(target)
    if split:
        parts, tail, views = identifier_parts(reference.model)
        spec, contents = convert_split(parts, tail, views, reference.input_size, converted)
        exported = identify.Identifier(reference.parameters, reference.arrays, split_runtime(spec, contents), directory)
        spec["check"] = _checked_identifier(reference, exported, photos, tops,
                                            f"nothing of its split export was written to {directory}")
        spec["check"].update({"max_diff_allowed": MAX_PROBABILITY_DIFF, "check_set": check_set})
        write_split(directory, spec, contents)
        figures["split"] = split_summary(spec)
    metadata["export"] = figures
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    return figures


def _checked_identifier(reference, exported, photos, tops, not_written: str) -> dict:
    figures = compare_identifier(reference, exported, photos, tops)
    worst = max(max(figures["max_output_diff"].values()), figures["max_signal_diff"])
    if worst >= MAX_PROBABILITY_DIFF or figures["nearest_disagreements"] or figures["identification_disagreements"]:
        raise ExportError(
            f"refused the LiteRT export of {reference.directory}: on {figures['photos']} check photos outputs or "
            f"signals differ by up to {worst:.3g} (allowed: under {MAX_PROBABILITY_DIFF:g}), the nearest species "
            f"on {figures['nearest_disagreements']} and the identification on "
            f"{figures['identification_disagreements']}; {not_written}")
    return figures


if __name__ == "__main__":
    # python -m ml.export identifier [ARTIFACT_DIR] [DATA_ROOT]: the identifier's checked exports (the same as
    # python -m ml export-identifier, kept for old instructions).
    import json
    import sys

    args = sys.argv[1:]
    if not args or args[0] != "identifier":
        sys.exit("usage: python -m ml.export identifier [artifacts/identifier] [../shared/data]")
    root = Path(__file__).resolve().parents[1]
    ident_dir = Path(args[1]) if len(args) > 1 else root / "artifacts" / "identifier"
    data_root = Path(args[2]) if len(args) > 2 else root.parent / "shared" / "data"
    try:
        print(json.dumps(export_identifier(ident_dir, data_root, root / "artifacts")))
    except ExportError as error:
        sys.exit(str(error))
