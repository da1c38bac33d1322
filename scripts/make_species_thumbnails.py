#!/usr/bin/env python
"""Make the species reference thumbnails (static/species/<slug>/1.jpg..3.jpg) and their README.

    .venv/bin/python scripts/make_species_thumbnails.py            # a few seconds; needs ../shared
    .venv/bin/python scripts/make_species_thumbnails.py --check    # exit 1 if any thumbnail is missing or stale

The photos come from butterflies50/train only (test/ stays unseen), three per species, chosen by
hand from an even sample of each class: typical, sharp, the species the name means (where a class
mixes look-alikes), no stock-photo watermark. The choice is the table below, so a rerun writes the
same files. Pillow only: no model, no Django.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml import species  # noqa: E402

SHARED = Path(os.environ.get("BUTTERFLYSITE_SHARED_DIR", ROOT.parent / "shared"))
DEFAULT_SOURCE = SHARED / "data" / "butterflies50" / "train"
DEFAULT_OUT = ROOT / "static" / "species"
SIZE = 200  # px, square like the source photos (224x224)
QUALITY = 80

# class key -> three files of butterflies50/train/<key>/, in the order the pages show them.
CHOSEN = {
    "adonis": ("001.jpg", "056.jpg", "104.jpg"),
    "american snoot": ("007.jpg", "054.jpg", "072.jpg"),
    "an 88": ("001.jpg", "036.jpg", "058.jpg"),
    "banded peacock": ("001.jpg", "014.jpg", "084.jpg"),
    "beckers white": ("001.jpg", "021.jpg", "101.jpg"),
    "black hairstreak": ("002.jpg", "036.jpg", "100.jpg"),
    "cabbage white": ("001.jpg", "063.jpg", "111.jpg"),
    "chestnut": ("001.jpg", "047.jpg", "084.jpg"),
    "clodius parnassian": ("001.jpg", "031.jpg", "093.jpg"),
    "clouded sulphur": ("001.jpg", "063.jpg", "101.jpg"),
    "copper tail": ("004.jpg", "018.jpg", "052.jpg"),
    "crecent": ("001.jpg", "029.jpg", "117.jpg"),
    "crimson patch": ("030.jpg", "035.jpg", "045.jpg"),
    "eastern coma": ("009.jpg", "073.jpg", "089.jpg"),
    "gold banded": ("006.jpg", "016.jpg", "064.jpg"),
    "great eggfly": ("037.jpg", "059.jpg", "083.jpg"),
    "grey hairstreak": ("017.jpg", "075.jpg", "097.jpg"),
    "indra swallow": ("013.jpg", "034.jpg", "092.jpg"),
    "julia": ("013.jpg", "040.jpg", "104.jpg"),
    "large marble": ("011.jpg", "018.jpg", "046.jpg"),
    "malachite": ("001.jpg", "041.jpg", "048.jpg"),
    "mangrove skipper": ("002.jpg", "026.jpg", "035.jpg"),
    "metalmark": ("036.jpg", "085.jpg", "105.jpg"),
    "monarch": ("009.jpg", "051.jpg", "089.jpg"),
    "morning cloak": ("002.jpg", "108.jpg", "155.jpg"),
    "orange oakleaf": ("025.jpg", "066.jpg", "089.jpg"),
    "orange tip": ("041.jpg", "086.jpg", "095.jpg"),
    "orchard swallow": ("001.jpg", "042.jpg", "100.jpg"),
    "painted lady": ("010.jpg", "062.jpg", "090.jpg"),
    "paper kite": ("001.jpg", "008.jpg", "119.jpg"),
    "peacock": ("001.jpg", "034.jpg", "075.jpg"),
    "pine white": ("001.jpg", "052.jpg", "105.jpg"),
    "pipevine swallow": ("001.jpg", "037.jpg", "083.jpg"),
    "purple hairstreak": ("037.jpg", "087.jpg", "100.jpg"),
    "question mark": ("023.jpg", "036.jpg", "058.jpg"),
    "red admiral": ("001.jpg", "056.jpg", "104.jpg"),
    "red spotted purple": ("022.jpg", "072.jpg", "104.jpg"),
    "scarce swallow": ("030.jpg", "034.jpg", "101.jpg"),
    "silver spot skipper": ("001.jpg", "020.jpg", "034.jpg"),
    "sixspot burnet": ("014.jpg", "048.jpg", "091.jpg"),
    "sootywing": ("001.jpg", "064.jpg", "107.jpg"),
    "southern dogface": ("009.jpg", "022.jpg", "066.jpg"),
    "straited queen": ("001.jpg", "060.jpg", "107.jpg"),
    "two barred flasher": ("009.jpg", "024.jpg", "093.jpg"),
    "ulyses": ("072.jpg", "092.jpg", "106.jpg"),
    "viceroy": ("001.jpg", "023.jpg", "105.jpg"),
    "wood satyr": ("012.jpg", "025.jpg", "084.jpg"),
    "yellow swallow tail": ("046.jpg", "086.jpg", "106.jpg"),
    "zebra long wing": ("001.jpg", "017.jpg", "077.jpg"),
}

README = """\
# Species reference photos

Three small thumbnails per species ({size}x{size} px JPEG, quality {quality}), shown beside answers
and on the species pages. Made by `scripts/make_species_thumbnails.py` from `{source}`; the
paths the pages use come from `ml.species` (`Species.reference_images`). Do not edit by hand: change
the script's table and rerun it.

**Source and licence.** The photos are from the "Butterfly & Moths Image Classification 100 species"
collection (Kaggle, gpiosenka), described there as CC0 (public domain dedication), as redistributed
in the team's `butterflies50` data set (`../shared/data/butterflies50`; its README gives the
provenance). Only its `train/` split is used, never `test/`, so no test photo is shown on the site.
The collection's photos were gathered from the web; a few carry stock-photo watermarks, and the
script's choice avoids those.

| species | key | folder | source files (train/<key>/) |
|---|---|---|---|
{rows}
"""


def thumbnail_bytes(source: Path) -> bytes:
    """A {SIZE}px square JPEG of the photo, without metadata; the same bytes on every run."""
    with Image.open(source) as image:
        image = ImageOps.fit(image.convert("RGB"), (SIZE, SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY, optimize=True)
    return buffer.getvalue()


def planned(source_dir: Path, out_dir: Path) -> dict[Path, bytes | str]:
    """Every file to write (thumbnails and README) with its content."""
    if source_dir.resolve().name != "train":
        raise SystemExit(f"{source_dir}: reference photos come from butterflies50/train only (never test/)")
    missing_keys = sorted(set(species.keys()) - set(CHOSEN))
    extra_keys = sorted(set(CHOSEN) - set(species.keys()))
    if missing_keys or extra_keys:
        raise SystemExit(f"CHOSEN and the catalogue disagree: no photos for {missing_keys}; unknown keys {extra_keys}")
    files: dict[Path, bytes | str] = {}
    rows = []
    for entry in species.all():
        sources = [source_dir / entry.key / name for name in CHOSEN[entry.key]]
        for source, static_path in zip(sources, entry.reference_images):
            if not source.is_file():
                raise SystemExit(f"{source}: not found (is ../shared there?)")
            files[out_dir / Path(static_path).relative_to("species")] = thumbnail_bytes(source)
        rows.append(f"| {entry.name} | `{entry.key}` | `{entry.slug}/` | {', '.join(CHOSEN[entry.key])} |")
    files[out_dir / "README.md"] = README.format(size=SIZE, quality=QUALITY, source="butterflies50/train",
                                                 rows="\n".join(rows))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="butterflies50/train")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="static/species")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is missing or differs")
    args = parser.parse_args()

    files = planned(args.source, args.out)
    stale = []
    for path, content in files.items():
        current = path.read_bytes() if path.is_file() else None
        wanted = content.encode("utf-8") if isinstance(content, str) else content
        if current == wanted:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(wanted)
    expected = set(files)
    strays = sorted(p for p in args.out.rglob("*") if p.is_file() and p not in expected) if args.out.is_dir() else []
    thumbnails = [p for p in files if p.suffix == ".jpg"]
    total_kb = sum(len(files[p]) for p in thumbnails) / 1024
    if args.check:
        for path in stale:
            print(f"stale or missing: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        for path in strays:
            print(f"not made by this script: {path}")
        print(f"{len(thumbnails)} thumbnails, {total_kb:.0f} KB; {len(stale)} stale, {len(strays)} stray")
        return 1 if stale or strays else 0
    for path in strays:
        if path.suffix == ".jpg":  # e.g. the old folder of a species whose display name (so slug) changed
            path.unlink()
        else:
            print(f"left in place, not made by this script: {path}")
    for folder in sorted({p.parent for p in strays}, reverse=True):
        if folder != args.out and not any(folder.iterdir()):
            folder.rmdir()
    removed = sum(path.suffix == ".jpg" for path in strays)
    print(f"{len(thumbnails)} thumbnails, {total_kb:.0f} KB in all; wrote {len(stale)} files, removed {removed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
