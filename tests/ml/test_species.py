"""The species catalogue (ml/species.py) against the shipped models, the data set and the static files."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from ml import species
from ml.identify import shipped_artifacts
from tests.conftest import ROOT

STATIC = ROOT / "static"
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
# "Genus species", or "Genus species subspecies" where the display name means a subspecies (Red-spotted Purple).
SCIENTIFIC_NAME = re.compile(r"[A-Z][a-z]+ [a-z][a-z-]+( [a-z][a-z-]+)?")


def shipped_classes() -> dict[str, list[str]]:
    # The model artifacts artifacts/manifest.json ships (artifacts/identifier has no classes of its own).
    directories = shipped_artifacts(ROOT / "artifacts")
    assert directories, "no shipped artifacts listed in artifacts/manifest.json"
    return {path.name: json.loads((path / "metadata.json").read_text())["classes"] for path in directories}


def test_every_class_of_every_shipped_model_is_in_the_catalogue_with_its_key_unchanged():
    catalogue_keys = set(species.keys())
    for artifact, classes in shipped_classes().items():
        missing = sorted(set(classes) - catalogue_keys)
        assert not missing, f"{artifact} speaks labels the catalogue lacks: {missing}"
    # Keys are the models' labels as they are, misspellings included.
    assert species.get("crecent").name == "Crescent"
    assert species.get("ulyses").name == "Ulysses"
    assert species.get("morning cloak").name == "Mourning Cloak"
    assert species.get("straited queen").name == "Striated Queen"


def test_catalogue_keys_are_the_data_set_class_folders(butterflies_dir):
    folders = sorted(path.name for path in (butterflies_dir / "train").iterdir() if path.is_dir())
    assert species.keys() == folders


def test_names_and_slugs_are_unique_and_slugs_url_safe():
    entries = species.all()
    assert len(entries) == 49
    names = [entry.name for entry in entries]
    slugs = [entry.slug for entry in entries]
    assert len(set(names)) == len(names), f"duplicate display names: {sorted(n for n in names if names.count(n) > 1)}"
    assert len(set(slugs)) == len(slugs), f"duplicate slugs: {sorted(s for s in slugs if slugs.count(s) > 1)}"
    for entry in entries:
        assert SLUG.fullmatch(entry.slug), f"{entry.key}: slug {entry.slug!r} is not URL-safe"
        assert entry.slug == species.slugify(entry.name)
        assert species.by_slug(entry.slug) is entry


def test_display_names_are_capitalised_consistently():
    for entry in species.all():
        # Title case by words; after a hyphen, lower case (as field guides write them: "Red-spotted Purple").
        for word in entry.name.split(" "):
            head, *tails = word.split("-")
            assert head[:1].isupper() and all(tail.islower() for tail in tails), f"{entry.key}: {entry.name!r}"
        assert entry.name == entry.name.strip() and "  " not in entry.name


def test_all_is_sorted_by_display_name():
    names = [entry.name for entry in species.all()]
    assert names == sorted(names, key=str.lower)


def test_scientific_names_look_like_genus_species():
    for entry in species.all():
        assert SCIENTIFIC_NAME.fullmatch(entry.scientific_name), f"{entry.key}: {entry.scientific_name!r}"
    scientific = [entry.scientific_name for entry in species.all()]
    assert len(set(scientific)) == len(scientific)
    assert species.get("monarch").scientific_name == "Danaus plexippus"


def test_field_notes_are_one_line_and_name_a_look_alike():
    for entry in species.all():
        assert entry.note and "\n" not in entry.note and len(entry.note) <= 240, entry.key
        # The look-alike is named with its scientific name (or genus) in parentheses.
        assert re.search(r"\([A-Z][a-z]+[^)]*\)", entry.note), f"{entry.key}: the note names no look-alike"


def test_three_reference_images_exist_as_small_jpegs():
    for entry in species.all():
        assert len(entry.reference_images) == 3, entry.key
        assert len(set(entry.reference_images)) == 3, entry.key
        for path in entry.reference_images:
            assert path.startswith(f"species/{entry.slug}/"), path
            file = STATIC / path
            assert file.is_file(), f"{entry.key}: {file} is missing (run scripts/make_species_thumbnails.py)"
            assert file.stat().st_size < 30_000, f"{file} is {file.stat().st_size} bytes: not a thumbnail"
            with Image.open(file) as image:
                assert image.format == "JPEG" and max(image.size) <= 224, (file, image.format, image.size)


def test_thumbnails_are_up_to_date_with_the_script_and_made_from_train(butterflies_dir):
    """--check rebuilds every thumbnail from butterflies50/train in memory and compares bytes."""
    result = subprocess.run([sys.executable, "scripts/make_species_thumbnails.py", "--check",
                             "--source", str(butterflies_dir / "train")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "147 thumbnails" in result.stdout and "0 stale, 0 stray" in result.stdout, result.stdout


def test_thumbnail_check_finds_a_changed_and_a_stray_thumbnail(butterflies_dir, tmp_path):
    out = tmp_path / "species"
    shutil.copytree(STATIC / "species", out)
    (out / "monarch" / "2.jpg").write_bytes(b"not the thumbnail")
    (out / "old-name").mkdir()
    (out / "old-name" / "1.jpg").write_bytes(b"left over")
    command = [sys.executable, "scripts/make_species_thumbnails.py", "--source", str(butterflies_dir / "train"),
               "--out", str(out)]
    check = subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"stale or missing: {out / 'monarch' / '2.jpg'}" in check.stdout
    assert f"not made by this script: {out / 'old-name' / '1.jpg'}" in check.stdout
    rebuild = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rebuild.returncode == 0 and "wrote 1 files, removed 1" in rebuild.stdout, rebuild.stdout + rebuild.stderr
    assert (out / "monarch" / "2.jpg").read_bytes() == (STATIC / "species" / "monarch" / "2.jpg").read_bytes()
    assert not (out / "old-name").exists()


def test_thumbnail_script_refuses_the_test_split(butterflies_dir, tmp_path):
    result = subprocess.run([sys.executable, "scripts/make_species_thumbnails.py", "--source",
                             str(butterflies_dir / "test"), "--out", str(tmp_path / "species")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "train only" in result.stderr
    assert not (tmp_path / "species").exists()


def test_get_of_an_unknown_key_fails_clearly():
    with pytest.raises(KeyError, match=r"'blue morpho' is not a species in the catalogue"):
        species.get("blue morpho")
    with pytest.raises(KeyError, match="no species has the slug 'nope'"):
        species.by_slug("nope")
    # A display name is not a key.
    with pytest.raises(KeyError):
        species.get("Mourning Cloak")


def test_name_of_a_label():
    assert species.name("morning cloak") == "Mourning Cloak"
    assert species.name("not a butterfly") == "Not a butterfly"
    assert species.name("blue morpho") == "Blue Morpho"  # a label no catalogue entry has: title-cased


def test_species_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        species.get("monarch").name = "King"


def test_catalogue_is_pure_python():
    code = "import sys, ml.species; print(sorted(m for m in ('django', 'numpy', 'tensorflow', 'PIL') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
