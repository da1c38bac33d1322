"""Training: cached backbone features -> linear probe (a regularised softmax head) -> optional
fine-tuning of the backbone's top on cached cut-layer activations -> one deployable model.

Every step sees the same photos through `images.to_array`, the decode+resize prediction uses.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ml import artifact, data, features, metrics, openset
from ml.backbones import IMAGENET, Backbone, get_backbone
from ml.cancel import ShouldStop, raise_if_stopped

END_TO_END = "fine_tuned_end_to_end"
# With `should_stop` or `on_progress`, features are extracted this many photos at a time, so a
# stop request is seen (and progress reported) within a few seconds even on a cold cache.
FEATURE_CHUNK = 64
# Shares of `train`'s progress (0..1): features, head, fine-tuning; saving and the export check last.
_FEATURES_END, _HEAD_END, _FINE_TUNE_END = 0.7, 0.85, 0.9


@dataclass(frozen=True)
class BackboneSpec:
    """A registry backbone with one weights source ("imagenet", None or a .weights.h5 path)."""

    name: str
    weights: str | None = IMAGENET

    @property
    def backbone(self) -> Backbone:
        return get_backbone(self.name)

    def describe(self) -> str:
        return f"{self.name}[{features.weights_label(self.weights)}]"


@dataclass
class TrainConfig:
    val_fraction: float = 0.15
    seed: int = 0
    # Train the head on mirrored copies of the training photos too (cached like the originals).
    flip_augment: bool = True
    # Average the predictions for the photo and its mirror image (doubles inference cost).
    tta_flip: bool = True
    dropout: float = 0.3
    l2: float = 1e-4
    label_smoothing: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 60
    patience: int = 6
    fine_tune: bool = False
    # "cached_top": train the layers from the backbone's `fine_tune_from` up on cached activations
    # of that layer (original + mirrored photos): cheap on a CPU, no random augmentation.
    # "end_to_end": train the same layers on pixels through the tf.data pipeline with random
    # flips, crops and brightness; every epoch runs whole backbones, so it suits a GPU.
    fine_tune_mode: str = "cached_top"
    # Train from this layer up instead of the backbone's own `fine_tune_from`; the backbone's first
    # layer ("Conv1" in MobileNetV2) trains all of it (BatchNormalization stays frozen either way).
    fine_tune_from: str | None = None
    fine_tune_learning_rate: float = 1e-4
    fine_tune_epochs: int = 8
    fine_tune_patience: int = 2
    # Share of validation butterflies that must stay above the open-set threshold.
    keep_known: float = 0.95
    cache_dir: str | None = None
    progress: bool = True
    verbose: int = 2


@dataclass
class TrainResult:
    model: object
    metadata: artifact.ArtifactMetadata
    val_probabilities: np.ndarray
    val_labels: np.ndarray
    timings: dict = field(default_factory=dict)
    # The parts, for scoring more photos from cached features without running whole backbones.
    specs: list = field(default_factory=list)
    config: TrainConfig | None = None
    head: object = None
    tops: list | None = None  # the fine-tuned top of each backbone, when fine-tuned

    def probabilities_from_cache(self, paths) -> np.ndarray:
        """What `model` outputs for these photos, computed from the feature cache (filling it
        where needed): the same numbers, without re-running the frozen part of each backbone."""
        if self.metadata.training["stage"] == END_TO_END:  # the cached features are no longer the model's
            return _predict_pixels(self.model, paths, self.metadata.input_size, self.config.progress)
        variants = ("orig", "flip") if self.config.tta_flip else ("orig",)
        outputs = [_cut_layer(spec, self.config) if self.tops else features.POOLED for spec in self.specs]
        per_spec = [features.extract(spec.backbone, spec.weights, paths, variants=variants, outputs=(output,),
                                     cache_dir=self.config.cache_dir, progress=self.config.progress)
                    for spec, output in zip(self.specs, outputs)]
        views = []
        for variant in variants:
            parts = [f[output, variant] for f, output in zip(per_spec, outputs)]
            pooled = _pooled_from(self.tops, parts) if self.tops else np.concatenate(parts, axis=1)
            views.append(_predict(self.head, pooled))
        return np.mean(views, axis=0)


def train(data_dir, specs: list[BackboneSpec], config: TrainConfig | None = None, name: str = "model",
          out_dir=None, should_stop: ShouldStop | None = None,
          on_progress: Callable[[float, str], None] | None = None) -> TrainResult:
    """Train a classifier for the class folders of `data_dir`; save it to `out_dir` if given.

    `should_stop` is checked between steps, every feature chunk and every training batch: when it
    returns True, `ml.cancel.Cancelled` is raised (nothing is saved). `on_progress(fraction,
    stage)` hears how far training is."""
    import keras

    def report(fraction: float, stage: str) -> None:
        raise_if_stopped(should_stop)
        if on_progress is not None:
            on_progress(fraction, stage)

    config = config or TrainConfig()
    if config.fine_tune_mode not in ("cached_top", "end_to_end"):
        raise ValueError(f"unknown fine_tune_mode {config.fine_tune_mode!r}")
    cached_top = config.fine_tune and config.fine_tune_mode == "cached_top"
    if config.fine_tune:
        for spec in specs:
            _check_cut_layer(spec, config)
    keras.utils.set_random_seed(config.seed)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    folder = data.load_image_folder(data.training_root(data_dir))
    if len(folder.classes) < 2:
        raise ValueError("need at least two class folders")
    hashes = [data.file_sha256(p) for p in folder.paths]
    train_idx, val_idx = data.stratified_split(folder.labels, config.val_fraction, config.seed)
    y_train, y_val = folder.labels[train_idx], folder.labels[val_idx]
    variants = ("orig", "flip") if (config.flip_augment or config.tta_flip) else ("orig",)

    tick = time.perf_counter()
    per_spec = []
    chunk = FEATURE_CHUNK if (should_stop or on_progress) else len(folder.paths)
    for index, spec in enumerate(specs):
        outputs = (features.POOLED, _cut_layer(spec, config)) if cached_top else (features.POOLED,)
        extractor = _LazyExtractor(spec, outputs)
        chunks = []
        for start in range(0, len(folder.paths), chunk):
            report(_FEATURES_END * (index + start / len(folder.paths)) / len(specs),
                   f"backbone features {spec.name}: {start} of {len(folder.paths)} photos")
            chunks.append(features.extract(
                spec.backbone, spec.weights, folder.paths[start:start + chunk], variants=variants, outputs=outputs,
                cache_dir=config.cache_dir, content_hashes=hashes[start:start + chunk], progress=config.progress,
                extractor=extractor))
        per_spec.append({key: np.concatenate([part[key] for part in chunks]) for key in chunks[0]})
    timings["features_s"] = time.perf_counter() - tick

    def pooled(variant, indices):
        return np.concatenate([f[features.POOLED, variant][indices] for f in per_spec], axis=1)

    train_variants = ("orig", "flip") if config.flip_augment else ("orig",)
    x_train = np.concatenate([pooled(v, train_idx) for v in train_variants])
    y_train_aug = np.concatenate([y_train] * len(train_variants))
    x_val, x_val_flip = pooled("orig", val_idx), (pooled("flip", val_idx) if "flip" in variants else None)

    tick = time.perf_counter()
    report(_FEATURES_END, "training the head")
    head = build_head(x_train.shape[1], len(folder.classes), config)
    _fit(head, x_train, y_train_aug, x_val, y_val, folder, config, config.learning_rate,
         config.max_epochs, config.patience,
         _stop_and_report(should_stop, lambda epoch: report(
             _FEATURES_END + (_HEAD_END - _FEATURES_END) * epoch / config.max_epochs,
             f"training the head: epoch {epoch}")))
    timings["head_s"] = time.perf_counter() - tick
    stage = "linear_probe"

    uppers = None
    bases = [spec.backbone.build(spec.weights, name=_model_name(spec, i)) for i, spec in enumerate(specs)]
    fine_tune_callback = _stop_and_report(should_stop, lambda epoch: report(
        _HEAD_END + (_FINE_TUNE_END - _HEAD_END) * epoch / config.fine_tune_epochs, f"fine-tuning: epoch {epoch}"))
    if config.fine_tune:
        report(_HEAD_END, "fine-tuning")
    if config.fine_tune and not cached_top:
        tick = time.perf_counter()
        tuned = assemble(specs, bases, head)
        for base, spec in zip(bases, specs):
            _unfreeze_top(base, _cut_layer(spec, config))
        _fit_pixels(tuned, folder, train_idx, val_idx, config, fine_tune_callback)
        timings["fine_tune_s"] = time.perf_counter() - tick
        stage = END_TO_END
    elif cached_top:
        tick = time.perf_counter()
        uppers = [_trainable_top(base, _cut_layer(spec, config)) for base, spec in zip(bases, specs)]
        tuned = _fine_tune_model(uppers, head, specs)

        def cut(variant, indices):
            return [f[_cut_layer(spec, config), variant][indices] for f, spec in zip(per_spec, specs)]

        a_train = [np.concatenate([cut(v, train_idx)[i] for v in train_variants]) for i in range(len(specs))]
        _fit(tuned, a_train, y_train_aug, cut("orig", val_idx), y_val, folder, config,
             config.fine_tune_learning_rate, config.fine_tune_epochs, config.fine_tune_patience, fine_tune_callback)
        if len(val_idx):
            x_val = _pooled_from(uppers, cut("orig", val_idx))
            x_val_flip = _pooled_from(uppers, cut("flip", val_idx)) if x_val_flip is not None else None
        timings["fine_tune_s"] = time.perf_counter() - tick
        stage = "fine_tuned"

    model = assemble(specs, bases, head, tta_flip=config.tta_flip)
    if len(y_val) == 0:  # --val-fraction 0: nothing held out to score or calibrate on
        val_probabilities = np.zeros((0, len(folder.classes)), np.float32)
    elif stage == END_TO_END:
        val_probabilities = _predict_pixels(model, [folder.paths[i] for i in val_idx], model.input_shape[1], False)
    else:
        val_probabilities = _predict(head, x_val)
        if config.tta_flip:
            val_probabilities = (val_probabilities + _predict(head, x_val_flip)) / 2
    timings["total_s"] = time.perf_counter() - started

    threshold = openset.calibrate_threshold(val_probabilities.max(1), config.keep_known) if len(y_val) else 0.0
    metadata = artifact.ArtifactMetadata(
        name=name,
        classes=folder.classes,
        backbone="+".join(s.name for s in specs),
        weights="+".join(features.weights_label(s.weights) for s in specs),
        input_size=specs[0].backbone.input_size,
        preprocessing="+".join(s.backbone.preprocessing for s in specs),
        training_data_fingerprint=data.fingerprint(folder, hashes),
        metrics={"val_top1": metrics.top_k_accuracy(val_probabilities, y_val, 1),
                 "val_top5": metrics.top_k_accuracy(val_probabilities, y_val, 5), "n_val": int(len(y_val))},
        unknown_threshold=float(threshold),
        training={
            "stage": stage,
            "backbones": [spec.describe() for spec in specs],
            "n_train": int(len(train_idx)),
            "class_counts": folder.class_counts().tolist(),
            "config": {k: v for k, v in asdict(config).items() if k not in ("cache_dir", "progress", "verbose")},
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
        },
    )
    if out_dir is not None:
        report(_FINE_TUNE_END, "saving the model and checking its LiteRT export")
        # The export must classify the validation photos exactly as the Keras model does.
        artifact.save(out_dir, model, metadata, check_photos=[folder.paths[i] for i in val_idx] or None)
    return TrainResult(model, metadata, val_probabilities, y_val, timings, list(specs), config, head, uppers)


def build_head(n_features: int, n_classes: int, config: TrainConfig):
    """The linear probe: dropout then an L2-regularised softmax layer."""
    import keras

    inputs = keras.Input(shape=(n_features,), name="features")
    x = keras.layers.Dropout(config.dropout, seed=config.seed)(inputs)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="species",
                                 kernel_regularizer=keras.regularizers.L2(config.l2))(x)
    return keras.Model(inputs, outputs, name="head")


def assemble(specs: list[BackboneSpec], bases, head, tta_flip: bool = False):
    """Raw pixels in, probabilities out: each backbone's preprocessing and base, pooled features
    concatenated, the head; with `tta_flip`, averaged over the photo and its mirror image."""
    import keras

    from ml.layers import HorizontalFlip

    sizes = {s.backbone.input_size for s in specs}
    if len(sizes) != 1:
        raise ValueError(f"backbones combined by features need one input size, got {sorted(sizes)}")
    size = sizes.pop()
    for base in bases:
        base.trainable = False
    pixels = keras.Input(shape=(size, size, 3), name="pixels")
    parts = [base(spec.backbone.preprocessing_layer(name=f"preprocess_{i}")(pixels), training=False)
             for i, (spec, base) in enumerate(zip(specs, bases))]
    extractor = keras.Model(pixels, parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts),
                            name="features")
    inputs = keras.Input(shape=(size, size, 3), name="pixels")
    probabilities = head(extractor(inputs))
    if tta_flip:
        mirrored = head(extractor(HorizontalFlip(name="mirror")(inputs)))
        probabilities = keras.layers.Average(name="tta_average")([probabilities, mirrored])
    return keras.Model(inputs, probabilities, name="classifier")


def _model_name(spec: BackboneSpec, index: int) -> str:
    return f"backbone_{index}_{spec.name.replace('.', '_')}"


def _cut_layer(spec: BackboneSpec, config: TrainConfig) -> str:
    return config.fine_tune_from or spec.backbone.fine_tune_from


def _check_cut_layer(spec: BackboneSpec, config: TrainConfig) -> None:
    """Fail before any work when the layer to fine-tune from is not in the backbone."""
    if config.fine_tune_from is not None:
        names = {layer.name for layer in spec.backbone.build(None).layers}
        if config.fine_tune_from not in names:
            raise ValueError(f"{spec.name} has no layer {config.fine_tune_from!r} to fine-tune from")


def _trainable_top(base, cut_layer: str):
    """The layers from `cut_layer` up, trainable except BatchNormalization, which stays frozen
    and in inference mode (the shared weights have BN folded into the convolutions)."""
    import keras

    top = keras.Model(base.get_layer(cut_layer).input, base.output, name=f"{base.name}_top")
    top.trainable = True
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return top


def _unfreeze_top(base, cut_layer: str) -> None:
    """Make the layers from `cut_layer` up trainable, BatchNormalization excepted."""
    import keras

    base.trainable = True
    names = [layer.name for layer in base.layers]
    first = names.index(cut_layer)
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first and not isinstance(layer, keras.layers.BatchNormalization)


def _fit_pixels(model, folder, train_idx, val_idx, config, extra_callback=None) -> None:
    """Train a whole pixel-input model on randomly augmented photos (tf.data), early stopping."""
    import keras
    import tensorflow as tf

    n_classes, size = len(folder.classes), model.input_shape[1]

    def one_hot(pixels, label):
        return pixels, tf.one_hot(label, n_classes)

    def pipeline(indices, augment):
        return data.pixel_dataset([folder.paths[i] for i in indices], size, folder.labels[indices],
                                  batch_size=32, augment=augment, shuffle=augment, seed=config.seed).map(one_hot)

    model.compile(optimizer=keras.optimizers.Adam(config.fine_tune_learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=["accuracy"])
    has_val = len(val_idx) > 0
    model.fit(pipeline(train_idx, True), validation_data=pipeline(val_idx, False) if has_val else None,
              epochs=config.fine_tune_epochs, verbose=config.verbose, shuffle=False,  # the pipeline shuffles
              class_weight=data.balanced_class_weights(folder.labels[train_idx], n_classes),
              callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss" if has_val else "loss",
                                                       patience=config.fine_tune_patience, restore_best_weights=True),
                         *([extra_callback] if extra_callback else [])])


def _predict_pixels(model, paths, size, progress) -> np.ndarray:
    from tqdm import tqdm

    chunks = []
    with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
        for batch in data.pixel_dataset(paths, size, batch_size=32):
            chunks.append(np.asarray(model(batch, training=False)))
            bar.update(len(chunks[-1]))
    return np.concatenate(chunks) if chunks else np.zeros((0, model.output_shape[-1]), np.float32)


def _fine_tune_model(uppers, head, specs):
    import keras

    inputs = [keras.Input(shape=u.input_shape[1:], name=f"cut_{i}") for i, u in enumerate(uppers)]
    parts = [u(x) for u, x in zip(uppers, inputs)]  # BN layers are frozen, so they run in inference mode
    merged = parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)
    return keras.Model(inputs, head(merged), name="fine_tune")


def _pooled_from(uppers, activations) -> np.ndarray:
    return np.concatenate([np.asarray(u.predict(a, batch_size=256, verbose=0)) for u, a in zip(uppers, activations)], axis=1)


def _fit(model, x_train, y_train, x_val, y_val, folder, config, learning_rate, epochs, patience,
         extra_callback=None):
    import keras

    n_classes = len(folder.classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    has_val = len(y_val) > 0
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss" if has_val else "loss", patience=patience,
                                               restore_best_weights=True), *([extra_callback] if extra_callback else [])]
    model.fit(
        x_train, keras.utils.to_categorical(y_train, n_classes),
        validation_data=(x_val, keras.utils.to_categorical(y_val, n_classes)) if has_val else None,
        epochs=epochs, batch_size=config.batch_size, shuffle=True, callbacks=callbacks,
        class_weight=data.balanced_class_weights(y_train, n_classes), verbose=config.verbose,
    )


def _predict(model, x) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=512, verbose=0))


class _LazyExtractor:
    """The backbone's feature extractor, built on first use: chunks whose features are all cached
    never build it, and the chunks that need it share one."""

    def __init__(self, spec: BackboneSpec, outputs):
        self.spec, self.outputs, self.model = spec, outputs, None

    def __call__(self, batch, training=False):
        if self.model is None:
            self.model = features.build_multi_output_extractor(self.spec.backbone, self.spec.weights, self.outputs)
        return self.model(batch, training=training)


def _stop_and_report(should_stop: ShouldStop | None, on_epoch: Callable[[int], None]):
    """A Keras callback: checks `should_stop` after every batch (raising ml.cancel.Cancelled) and
    reports each finished epoch."""
    import keras

    class StopAndReport(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise_if_stopped(should_stop)

        def on_epoch_end(self, epoch, logs=None):
            on_epoch(epoch + 1)

    return StopAndReport()
