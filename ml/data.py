"""ImageFolder datasets (root/<class>/<image>): listing, fingerprints, splits, tf.data pipelines."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml import images

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageFolder:
    root: Path
    classes: list[str]  # sorted folder names: index i is label i
    paths: list[Path]
    labels: np.ndarray  # int64, one per path

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> "ImageFolder":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageFolder(self.root, self.classes, [self.paths[i] for i in indices], self.labels[indices])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


def training_root(data_dir: str | Path) -> Path:
    """The folder of class folders: DATA_DIR itself, or DATA_DIR/train when it holds one
    (the layout of butterflies50 and of the original project)."""
    data_dir = Path(data_dir)
    train = data_dir / "train"
    return train if train.is_dir() and any(p.is_dir() for p in train.iterdir()) else data_dir


def load_image_folder(root: str | Path, classes: list[str] | None = None) -> ImageFolder:
    """List root/<class>/<image>. With `classes`, labels follow that order and folders not in it
    are left out (see `unknown_folders`)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = folders
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for folder in folders:
        if folder not in index:
            continue
        for path in sorted((root / folder).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(index[folder])
    if not paths:
        raise ValueError(f"no images in {root}/<class>/")
    return ImageFolder(root, list(classes), paths, np.asarray(labels, dtype=np.int64))


def unknown_folders(root: str | Path, classes: list[str]) -> list[str]:
    known = set(classes)
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and p.name not in known and not p.name.startswith("."))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(folder: ImageFolder, content_hashes: list[str] | None = None) -> str:
    """sha256 over the sorted (relative path, content sha256) pairs: names the exact training data."""
    hashes = content_hashes or [file_sha256(p) for p in folder.paths]
    digest = hashlib.sha256()
    for relative, content in sorted(
        (p.relative_to(folder.root).as_posix(), h) for p, h in zip(folder.paths, hashes)
    ):
        digest.update(f"{relative}\0{content}\n".encode())
    return "sha256:" + digest.hexdigest()


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), every class in both parts in proportion, the same for the same seed."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    if val_fraction <= 0:
        return indices, indices[:0]
    train, val = train_test_split(indices, test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(val)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """n / (k * count): rare classes weigh more, so imbalance does not bias the head."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def pixel_dataset(paths, size: int, labels=None, *, batch_size: int = 32, flip: bool = False,
                  augment: bool = False, shuffle: bool = False, seed: int = 0):
    """A tf.data pipeline of (pixels 0..255 at size x size[, label]) batches.

    Decoding goes through `images.to_array`, the same decode+resize prediction uses. `flip`
    mirrors every image (a deterministic variant, cacheable); `augment` adds random flips, crops
    and brightness for end-to-end training.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]

    def load(path):
        pixels = tf.numpy_function(lambda p: images.to_array(p.decode(), size), [path], tf.float32)
        pixels.set_shape((size, size, 3))
        return pixels

    data = tf.data.Dataset.from_tensor_slices(paths)
    if labels is not None:
        data = tf.data.Dataset.zip(data, tf.data.Dataset.from_tensor_slices(np.asarray(labels)))
    if shuffle:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if labels is None:
        data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.map(lambda p, y: (load(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    if flip:
        data = data.map(_apply_to_pixels(lambda x: tf.reverse(x, axis=[1])))
    if augment:
        rng = tf.random.Generator.from_seed(seed)

        def random_augment(x):
            x = tf.image.stateless_random_flip_left_right(x, rng.make_seeds(1)[:, 0])
            crop = tf.cast(tf.cast(size, tf.float32) * 0.85, tf.int32)
            x = tf.image.stateless_random_crop(x, (crop, crop, 3), rng.make_seeds(1)[:, 0])
            x = tf.image.resize(x, (size, size), method="bilinear")
            x = tf.image.stateless_random_brightness(x, 20.0, rng.make_seeds(1)[:, 0])
            return tf.clip_by_value(x, 0.0, 255.0)

        data = data.map(_apply_to_pixels(random_augment), num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _apply_to_pixels(function):
    def apply(*element):
        return (function(element[0]), *element[1:]) if len(element) > 1 else function(element[0])

    return apply
