"""The species catalogue: display name, scientific name, field note and reference photos per class key.

Class keys are the folder names of butterflies50 (the labels the models speak and photos store) and
stay unchanged, misspellings included ("crecent", "ulyses"); everything a person reads comes from
here. The data lives in species_catalogue.json beside this module; docs/species.md says where it
comes from. Pure Python, no Django, no numpy, so every layer can import it cheaply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CATALOGUE_PATH = Path(__file__).with_name("species_catalogue.json")
NOT_A_BUTTERFLY = "not a butterfly"  # the staff / suggestion label for a photo of no butterfly at all
REFERENCE_IMAGES_PER_SPECIES = 3


@dataclass(frozen=True)
class Species:
    key: str  # the class label the models and stored photos use
    name: str  # display name, e.g. "Mourning Cloak" for key "morning cloak"
    scientific_name: str  # "Genus species" (a subspecies where the name means one)
    note: str  # one line: how to tell it from its look-alikes
    slug: str  # URL-safe, from the display name
    reference_images: tuple[str, ...]  # paths under the static root, e.g. "species/monarch/1.jpg"


def slugify(text: str) -> str:
    """Lower-case ASCII words joined by hyphens: "Becker's White" -> "beckers-white"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("'", "")).strip("-")


def reference_image_paths(slug: str) -> tuple[str, ...]:
    return tuple(f"species/{slug}/{i}.jpg" for i in range(1, REFERENCE_IMAGES_PER_SPECIES + 1))


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, Species]:
    entries = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))
    catalogue = {}
    for key, entry in entries.items():
        slug = slugify(entry["name"])
        catalogue[key] = Species(key=key, name=entry["name"], scientific_name=entry["scientific_name"],
                                 note=entry["note"], slug=slug, reference_images=reference_image_paths(slug))
    return catalogue


@lru_cache(maxsize=1)
def _by_slug() -> dict[str, Species]:
    return {species.slug: species for species in _catalogue().values()}


def all() -> list[Species]:  # shadows the builtin on purpose: callers write species.all()
    """Every species in the catalogue, sorted by display name."""
    return sorted(_catalogue().values(), key=lambda species: species.name.lower())


def keys() -> list[str]:
    """Every class key in the catalogue, sorted."""
    return sorted(_catalogue())


def get(key: str) -> Species:
    try:
        return _catalogue()[key]
    except KeyError:
        raise KeyError(f"{key!r} is not a species in the catalogue ({CATALOGUE_PATH.name}); "
                       f"known keys are the butterflies50 class names, e.g. 'monarch', 'crecent'") from None


def by_slug(slug: str) -> Species:
    try:
        return _by_slug()[slug]
    except KeyError:
        raise KeyError(f"no species has the slug {slug!r}") from None


def name(key: str) -> str:
    """The display name for a label: a species' name, "Not a butterfly", or an unknown key title-cased."""
    if key == NOT_A_BUTTERFLY:
        return "Not a butterfly"
    species = _catalogue().get(key)
    return species.name if species else key.title()
