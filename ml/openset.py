"""Open-set rejection: saying "probably none of my species" instead of forcing a label.

The rule is a threshold on the best class probability, calibrated on validation butterflies so
that a chosen share of them (e.g. 95%) stay above it; `Predictor` flags photos under it as unknown.
"""

from __future__ import annotations

import numpy as np

# Real non-butterfly photos that ship inside scikit-image (no download): people, a cat, a cup,
# a rocket, coins, a camera man, a microscope slide, a galaxy field, ...
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
                  "immunohistochemistry", "moon", "page", "rocket", "text", "brick", "grass", "gravel")


# Every real photo (not a drawing, chart or synthetic test pattern) that ships inside the
# project's installed packages, none of a butterfly or moth: scikit-image's sample files (its
# SKIMAGE_PHOTOS plus its other microscopy, medical, street and texture photos), scikit-learn's
# two sample images and matplotlib's portrait of Grace Hopper. Nothing is downloaded.
SKIMAGE_FILES = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
                 "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
                 "microaneurysms.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png",
                 "retina.jpg", "rocket.jpg", "text.png")


def non_butterfly_photos() -> dict[str, "Path"]:  # noqa: F821
    """{"package/file": path} of the real non-butterfly photos installed packages ship (see
    SKIMAGE_FILES); a package that is not installed, or a file it lacks, is left out."""
    from importlib.util import find_spec
    from pathlib import Path

    def package_dir(name):
        spec = find_spec(name)
        return Path(spec.origin).parent if spec and spec.origin else None

    found = {}
    places = [("skimage", "data", SKIMAGE_FILES),
              ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
              ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",))]
    for package, folder, files in places:
        root = package_dir(package)
        for file in files:
            if root is not None and (root / folder / file).is_file():
                found[f"{package}/{file}"] = root / folder / file
    return found


def calibrate_threshold(best_probabilities: np.ndarray, keep_known: float = 0.95) -> float:
    """The probability under which only (1 - keep_known) of the given known-class photos fall."""
    if len(best_probabilities) == 0:
        return 0.0
    return float(np.quantile(np.asarray(best_probabilities, dtype=np.float64), 1.0 - keep_known))


def skimage_photos() -> dict[str, "Image.Image"]:  # noqa: F821
    """scikit-image's bundled sample photos as RGB PIL images, by name (needs scikit-image)."""
    from PIL import Image
    from skimage import data as samples

    photos = {}
    for name in SKIMAGE_PHOTOS:
        try:
            array = getattr(samples, name)()
        except Exception:  # a sample that would need a download: leave it out
            continue
        if array.dtype != np.uint8:
            array = (255 * (array.astype(np.float64) / max(float(array.max()), 1e-9))).astype(np.uint8)
        image = Image.fromarray(array)
        photos[name] = image.convert("RGB")
    return photos


def rejection_report(predictor, known_sources, unknown_sources: dict) -> dict:
    """How often `predictor` flags real non-butterflies as unknown, and real butterflies wrongly."""
    known = predictor.predict(list(known_sources), top_k=1) if known_sources else []
    unknown = predictor.predict(list(unknown_sources.values()), top_k=1) if unknown_sources else []
    return {
        "threshold": predictor.metadata.unknown_threshold,
        "non_butterflies_rejected": _rate([p.unknown for p in unknown]),
        "n_non_butterflies": len(unknown),
        "per_photo": {name: {"unknown": p.unknown, "top": p.top[0].label, "probability": round(p.top[0].probability, 4)}
                      for name, p in zip(unknown_sources, unknown)},
        "butterflies_wrongly_rejected": _rate([p.unknown for p in known]),
        "n_butterflies": len(known),
    }


def _rate(flags) -> float | None:
    return float(np.mean(flags)) if len(flags) else None
