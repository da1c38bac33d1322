#!/usr/bin/env python
"""Train and measure every backbone with real offline weights on butterflies50, alone and
combined, linear probe and fine-tuned; write the shipped artifacts, the manifest and the
figures docs/ml.md reports (docs/ml_results.json).

    .venv/bin/python scripts/train_shipped_models.py            # ~25 min on a 2-core CPU, warm cache: far less

Model selection uses the validation split of train/ only; test/ is measured for reporting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml import artifact, data, ensemble, metrics, openset  # noqa: E402
from ml.evaluate import evaluate  # noqa: E402
from ml.predict import Predictor  # noqa: E402
from ml.train import BackboneSpec, TrainConfig, train  # noqa: E402

SHIPPED = {  # artifact directory -> the experiment family it ships (best of probe / fine-tuned on val)
    "inat_imagenet_mobilenet_v2": "inat+imagenet MobileNetV2",
    "inat_mobilenet_v2": "iNat-insects MobileNetV2",
    "imagenet_mobilenet_v2": "ImageNet MobileNetV2",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "butterflies50"))
    parser.add_argument("--weights-dir", default=str(ROOT.parent / "shared" / "weights"))
    parser.add_argument("--cache-dir", help="feature cache (default $ML_CACHE_DIR or ~/.cache/butterflysite/features)")
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    parser.add_argument("--results", default=str(ROOT / "artifacts" / "benchmark.json"))
    parser.add_argument("--only", nargs="*", help="experiment families to run (default: all)")
    args = parser.parse_args()

    w = Path(args.weights_dir)
    inat = BackboneSpec("mobilenet_v2", str(w / "mobilenet_v2_1.0_224_inat_insects_no_top.weights.h5"))
    imagenet = BackboneSpec("mobilenet_v2", str(w / "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"))
    small = BackboneSpec("mobilenet_0.50_160", str(w / "mobilenet_0.50_160_imagenet_no_top.weights.h5"))
    families = {
        "ImageNet MobileNetV2": [imagenet],
        "iNat-insects MobileNetV2": [inat],
        "ImageNet MobileNet 0.50 (160 px)": [small],
        "inat+imagenet MobileNetV2": [inat, imagenet],
    }
    if args.only:
        families = {k: v for k, v in families.items() if k in args.only}

    test_folder = data.load_image_folder(Path(args.data) / "test")
    rows, results = [], {}
    for family, specs in families.items():
        for fine_tune in (False, True):
            config = TrainConfig(fine_tune=fine_tune, cache_dir=args.cache_dir, verbose=0)
            print(f"==> {family}, {'fine-tuned' if fine_tune else 'linear probe'}", file=sys.stderr, flush=True)
            result = train(args.data, specs, config, name=family)
            test_probabilities = result.probabilities_from_cache(test_folder.paths)
            row = _row(family, "fine-tuned top" if fine_tune else "linear probe", result.val_probabilities,
                       result.val_labels, test_probabilities, test_folder.labels, result.timings)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
            results[family, fine_tune] = (result, test_probabilities)

    # Probability ensembles over single-backbone models (sizes may differ): members picked on val.
    singles = {f"{family} ({'FT' if ft else 'LP'})": value for (family, ft), value in results.items()
               if len(families[family]) == 1}
    if len(singles) > 1:
        val_labels = next(iter(results.values()))[0].val_labels
        subset, val_top1 = ensemble.best_subset({k: v[0].val_probabilities for k, v in singles.items()}, val_labels,
                                                min_gain=0.002)
        everything = list(singles)
        for members in (everything, list(subset)):
            test = ensemble.average_probabilities([singles[m][1] for m in members])
            val = ensemble.average_probabilities([singles[m][0].val_probabilities for m in members])
            rows.append(_row("probability average: " + " + ".join(members), "ensemble", val, val_labels, test,
                             test_folder.labels, {"total_s": sum(singles[m][0].timings["total_s"] for m in members)}))

    shipped = _ship(results, families, test_folder, args) if not args.only else {}
    Path(args.results).write_text(json.dumps({"rows": rows, "shipped": shipped}, indent=2) + "\n")
    print(json.dumps({"rows": rows, "shipped": shipped}, indent=2))
    return 0


def _row(model, stage, val_probabilities, val_labels, test_probabilities, test_labels, timings) -> dict:
    def top(probabilities, labels, k):
        return round(metrics.top_k_accuracy(probabilities, labels, k), 4)

    return {
        "model": model, "stage": stage,
        "val_top1": top(val_probabilities, val_labels, 1),
        "test_top1": top(test_probabilities, test_labels, 1), "test_top5": top(test_probabilities, test_labels, 5),
        "train_s": round(timings.get("total_s", 0.0), 1),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }


def _ship(results, families, test_folder, args) -> dict:
    artifacts_dir = Path(args.artifacts)
    photos = openset.skimage_photos()
    shipped = {}
    for name, family in SHIPPED.items():
        if family not in families:
            continue
        # Probe or fine-tuned: whichever did better on validation.
        fine_tune = results[family, True][0].metadata.metrics["val_top1"] > results[family, False][0].metadata.metrics["val_top1"]
        result, _ = results[family, fine_tune]
        out = artifacts_dir / name
        if out.exists():
            shutil.rmtree(out)
        metadata = result.metadata
        metadata.name = name
        artifact.save(out, result.model, metadata)
        started = time.perf_counter()
        predictor = Predictor.load(out)
        report = evaluate(out, test_folder.root, predictor=predictor, report_dir=out / "evaluation")
        open_set = openset.rejection_report(predictor, [], photos)
        metadata.metrics.update({
            "test_top1": round(report["top1"], 4), "test_top5": round(report["top5"], 4), "n_test": report["n"],
            "test_wrongly_rejected": round(report["wrongly_rejected"], 4),
            "non_butterflies_rejected": open_set["non_butterflies_rejected"],
            "evaluated_on": "butterflies50/test",
        })
        artifact.write_metadata(out, metadata)
        shipped[name] = {
            "family": family, "stage": metadata.training["stage"], "val_top1": metadata.metrics["val_top1"],
            "test_top1": report["top1"], "test_top5": report["top5"], "unknown_threshold": metadata.unknown_threshold,
            "test_wrongly_rejected": report["wrongly_rejected"], "open_set": open_set,
            "size_mb": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20, 1),
            "evaluate_s": round(time.perf_counter() - started, 1),
        }
        print(json.dumps({name: shipped[name]}), file=sys.stderr, flush=True)
    default = max(shipped, key=lambda n: (shipped[n]["val_top1"], -shipped[n]["size_mb"]))
    (artifacts_dir / "manifest.json").write_text(json.dumps({"default": default, "artifacts": list(shipped)}, indent=2) + "\n")
    return shipped


if __name__ == "__main__":
    raise SystemExit(main())
