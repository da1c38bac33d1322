"""Backbone features with an on-disk cache, so retraining a head on the same photos is cheap.

An entry is keyed by (backbone, weights identity, output, variant, image content hash):
  - weights identity: "imagenet", "none", or the sha256 of the local weights file;
  - output: "pooled" (the globally pooled features) or the name of a cut layer whose input
    activations feed fine-tuning of the backbone's top;
  - variant: "orig" or "flip" (mirrored): the deterministic augmentations worth caching.
Renaming or moving a photo keeps its entries; changing its bytes or the weights does not.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml import data
from ml.backbones import IMAGENET, Backbone

POOLED = "pooled"
VARIANTS = ("orig", "flip")
_weights_hashes: dict[tuple, str] = {}


def default_cache_dir() -> Path:
    """ML_CACHE_DIR, else ~/.cache/butterflysite/features (read when called, never at import)."""
    return Path(os.environ.get("ML_CACHE_DIR") or Path.home() / ".cache" / "butterflysite" / "features")


def weights_identity(weights) -> str:
    if weights is None or weights == "none":
        return "none"
    if weights == IMAGENET:
        return IMAGENET
    path = Path(weights)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _weights_hashes:
        _weights_hashes[key] = data.file_sha256(path)
    return _weights_hashes[key]


def weights_label(weights) -> str:
    """How metadata names a weights source: "imagenet", "none" or the file's name."""
    identity = weights_identity(weights)
    return identity if identity in (IMAGENET, "none") else Path(weights).name


@dataclass
class FeatureCache:
    directory: Path

    def __post_init__(self):
        self.directory = Path(self.directory)

    def _path(self, backbone: str, weights_id: str, output: str, variant: str, image_hash: str) -> Path:
        return (self.directory / backbone / weights_id[:16] / output / variant
                / image_hash[:2] / f"{image_hash}.npy")

    def get(self, *key) -> np.ndarray | None:
        path = self._path(*key)
        try:
            return np.load(path)
        except (FileNotFoundError, ValueError, OSError):
            return None  # absent, or half-written by a process that died: recompute

    def put(self, value: np.ndarray, *key) -> None:
        path = self._path(*key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, value)
        tmp.replace(path)


def extract(
    backbone: Backbone,
    weights,
    paths,
    *,
    variants=("orig",),
    outputs=(POOLED,),
    cache_dir=None,
    content_hashes: list[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    extractor=None,
) -> dict[tuple[str, str], np.ndarray]:
    """Features of every image for each (output, variant), computing only what the cache lacks.

    Returns {(output, variant): array of shape (len(paths), ...)} in the order of `paths`.
    """
    cache = FeatureCache(cache_dir or default_cache_dir())
    weights_id = weights_identity(weights)
    hashes = content_hashes or [data.file_sha256(p) for p in paths]
    found: dict[tuple[str, str], list] = {}
    for output in outputs:
        for variant in variants:
            found[output, variant] = [cache.get(backbone.name, weights_id, output, variant, h) for h in hashes]

    for variant in variants:
        missing = sorted({i for output in outputs for i, v in enumerate(found[output, variant]) if v is None})
        if not missing:
            continue
        if extractor is None:
            extractor = build_multi_output_extractor(backbone, weights, outputs)
        computed = _run(extractor, [paths[i] for i in missing], backbone.input_size, variant == "flip",
                        batch_size, progress, f"{backbone.name} {variant}")
        for output, values in zip(outputs, computed):
            for i, value in zip(missing, values):
                cache.put(value, backbone.name, weights_id, output, variant, hashes[i])
                found[output, variant][i] = value
    return {key: np.stack(values) if values else np.zeros((0,)) for key, values in found.items()}


def build_multi_output_extractor(backbone: Backbone, weights, outputs=(POOLED,)):
    """Raw pixels in; the pooled features and/or the inputs of named cut layers out."""
    import keras

    base = backbone.build(weights)
    base.trainable = False
    tensors = [base.output if o == POOLED else base.get_layer(o).input for o in outputs]
    multi = keras.Model(base.input, tensors)
    inputs = keras.Input(shape=backbone.input_shape, name="pixels")
    result = multi(backbone.preprocessing_layer()(inputs), training=False)
    return keras.Model(inputs, result if isinstance(result, (list, tuple)) else [result])


def _run(extractor, paths, size, flip, batch_size, progress, description) -> list[list[np.ndarray]]:
    from tqdm import tqdm

    pipeline = data.pixel_dataset(paths, size, batch_size=batch_size, flip=flip)
    per_output: list[list[np.ndarray]] | None = None
    with tqdm(total=len(paths), desc=f"features {description}", unit="img", disable=not progress,
              file=sys.stderr) as bar:
        for batch in pipeline:
            results = extractor(batch, training=False)
            results = results if isinstance(results, (list, tuple)) else [results]
            if per_output is None:
                per_output = [[] for _ in results]
            for store, result in zip(per_output, results):
                store.extend(np.asarray(result))
            bar.update(int(batch.shape[0]))
    return per_output or []
