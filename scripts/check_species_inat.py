#!/usr/bin/env python
"""Check the catalogue's scientific names against an independent identifier: the iNaturalist-insects
MobileNetV2 (1,022 species, ../shared/weights) run with its own top on every butterflies50/train photo.

    .venv/bin/python scripts/check_species_inat.py            # 5,335 photos: 7 min on a busy 2-core CPU
    .venv/bin/python scripts/check_species_inat.py --per-class 30 --json docs/species_inat_check.json

Per class it prints the iNat species most often ranked first and how often the catalogue's own
scientific name (or a subspecies of it) is. Where that species is not among the 1,022 the check
says so: it can then only show which look-alikes the photos resemble. Train photos only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml import species  # noqa: E402

SHARED = Path(os.environ.get("BUTTERFLYSITE_SHARED_DIR", ROOT.parent / "shared"))


def inat_labels(weights_dir: Path) -> list[tuple[str, str]]:
    """(scientific name, common name) per class of the iNat model, in its output order."""
    labels = []
    for line in (weights_dir / "inat_insects_labels.txt").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(.+?) \((.*)\)", line.strip())
        labels.append((match.group(1), match.group(2)) if match else (line.strip(), ""))
    return labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=SHARED / "data" / "butterflies50" / "train")
    parser.add_argument("--weights-dir", type=Path, default=SHARED / "weights")
    parser.add_argument("--per-class", type=int, default=0, help="photos per class, evenly spaced (0: all)")
    parser.add_argument("--json", type=Path, help="also write the tallies here")
    args = parser.parse_args()

    import keras
    import numpy as np
    from PIL import Image

    labels = inat_labels(args.weights_dir)
    model = keras.applications.MobileNetV2(weights=None, classes=len(labels))
    model.load_weights(args.weights_dir / "mobilenet_v2_1.0_224_inat_insects.weights.h5")
    known = {name for name, _ in labels}

    results = {}
    for entry in sorted(species.all(), key=lambda s: s.key):
        files = sorted((args.train / entry.key).glob("*.jpg"))
        if args.per_class:
            files = files[:: max(1, len(files) // args.per_class)][: args.per_class]
        pixels = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224)), dtype=np.float32) for f in files])
        probabilities = model.predict(keras.applications.mobilenet_v2.preprocess_input(pixels), batch_size=32, verbose=0)
        top1 = collections.Counter(int(i) for i in probabilities.argmax(axis=1))
        ours = sum(n for i, n in top1.items() if labels[i][0] == entry.scientific_name
                   or labels[i][0].startswith(entry.scientific_name + " "))
        in_list = entry.scientific_name in known or any(k.startswith(entry.scientific_name + " ") for k in known)
        results[entry.key] = {
            "scientific_name": entry.scientific_name, "in_inat_list": in_list, "photos": len(files),
            "top1_is_ours": ours,
            "most_common": [[f"{labels[i][0]} ({labels[i][1]})", n] for i, n in top1.most_common(3)],
        }
        share = f"{ours}/{len(files)}" if in_list else "not in list"
        common = "; ".join(f"{name} {n}" for name, n in results[entry.key]["most_common"])
        print(f"{entry.key:20} {entry.scientific_name:28} ours first: {share:12} most often first: {common}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
