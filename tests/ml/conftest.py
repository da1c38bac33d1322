"""Small synthetic ImageFolders: colour-coded classes that any real backbone separates."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Per class: a base colour; each photo adds noise and a random bright square, so no two are alike.
COLOURS = {"blue morpho": (30, 60, 200), "cabbage white": (230, 230, 225), "monarch": (230, 120, 20)}


def make_image_folder(root: Path, per_class: int = 10, size: int = 96, seed: int = 0, classes=COLOURS) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
            x, y = rng.integers(0, size // 2, 2)
            pixels[y : y + size // 4, x : x + size // 4] = 255 - np.array(colour)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name[:3]}_{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("synthetic") / "train")


@pytest.fixture(scope="session")
def synthetic_test_dir(tmp_path_factory) -> Path:
    """Held-out photos of the same classes, plus a folder no model knows."""
    root = make_image_folder(tmp_path_factory.mktemp("synthetic_test") / "test", per_class=5, seed=1)
    make_image_folder(root, per_class=2, seed=2, classes={"zebra longwing": (10, 10, 10)})
    return root


@pytest.fixture(scope="session")
def small_weights(weights_dir) -> str:
    return str(weights_dir / "mobilenet_0.50_160_imagenet_no_top.weights.h5")
