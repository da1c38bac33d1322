"""python -m ml train | evaluate | predict | openset | identify | export | export-identifier  (see docs/ml.md, section CLI)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml", description="Train, evaluate and run butterfly classifiers.")
    verbs = parser.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="train a classifier on an ImageFolder (DATA_DIR/<class>/<image> or DATA_DIR/train/...)")
    train.add_argument("data_dir")
    train.add_argument("--backbone", action="append", required=True,
                       help="registry name; repeat to concatenate several backbones' features")
    train.add_argument("--weights", action="append",
                       help='"imagenet" (default, downloads), "none", or a .weights.h5 file; one per --backbone')
    train.add_argument("--out", required=True, help="artifact directory to write")
    train.add_argument("--name", help="model name in metadata (default: the --out folder name)")
    train.add_argument("--fine-tune", nargs="?", const="cached_top", choices=["cached_top", "end_to_end"],
                       help="after the linear probe, fine-tune the backbone's top: on cached activations "
                            "(cached_top, the default, CPU-friendly) or on augmented pixels (end_to_end)")
    train.add_argument("--fine-tune-epochs", type=int, default=8)
    train.add_argument("--fine-tune-from", metavar="LAYER",
                       help="fine-tune from this backbone layer up (default: the backbone's last block; "
                            "Conv1 trains all of MobileNetV2)")
    train.add_argument("--no-tta", action="store_true", help="no flip test-time augmentation in the artifact")
    train.add_argument("--val-fraction", type=float, default=0.15)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, default=60, help="most head epochs (early stopping decides)")
    train.add_argument("--keep-known", type=float, default=0.95,
                       help="share of validation butterflies kept above the open-set threshold")
    train.add_argument("--cache-dir", help="feature cache (default $ML_CACHE_DIR or ~/.cache/butterflysite/features)")

    evaluate = verbs.add_parser("evaluate", help="top-1/top-5/per-class metrics of an artifact on an ImageFolder")
    evaluate.add_argument("artifact_dir")
    evaluate.add_argument("data_dir")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    evaluate.add_argument("--report-dir", help="write report.json and confusion_matrix.svg here")

    predict = verbs.add_parser("predict", help="one JSON line per image: {image, top, unknown}")
    predict.add_argument("artifact_dir")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--top-k", type=int, default=5)

    openset_parser = verbs.add_parser("openset", help="rejection rates on scikit-image photos and on butterflies")
    openset_parser.add_argument("artifact_dir")
    openset_parser.add_argument("butterflies_dir", nargs="?", help="an ImageFolder of real butterflies")

    identify_parser = verbs.add_parser("identify", help="one JSON line per image: {image, kind, label, name, candidates}")
    identify_parser.add_argument("images", nargs="+")
    identify_parser.add_argument("--artifacts", nargs="+", metavar="DIR",
                                 help="model artifacts, the default first (default: artifacts/manifest.json's set)")
    identify_parser.add_argument("--identifier", metavar="DIR", help="identifier artifact (default: artifacts/identifier)")

    export = verbs.add_parser("export", help="write an artifact's checked LiteRT export (model.tflite)")
    export.add_argument("artifact_dir")
    export.add_argument("data_dir", nargs="?", help="check on the validation photos of this ImageFolder "
                                                    "(the artifact's own split); synthetic images without it")
    export.add_argument("--int8", action="store_true", help="also measure a full-integer int8 export (not served)")
    export.add_argument("--int8-out", help="write the int8 .tflite here (never into the artifact)")
    only = export.add_mutually_exclusive_group()
    only.add_argument("--split-only", action="store_true",
                      help="only the split export (trunks, tail, serving.json); model.tflite stays as it is")
    only.add_argument("--whole-only", action="store_true", help="only model.tflite")

    export_identifier = verbs.add_parser("export-identifier",
                                         help="write the identifier's checked LiteRT exports (model.tflite, split)")
    export_identifier.add_argument("identifier_dir", nargs="?", help="default: artifacts/identifier")
    export_identifier.add_argument("data_root", nargs="?", help="default: ../shared/data (butterflies50, other_lepidoptera)")
    only = export_identifier.add_mutually_exclusive_group()
    only.add_argument("--split-only", action="store_true", help="only the split export")
    only.add_argument("--whole-only", action="store_true", help="only model.tflite")

    args = parser.parse_args(argv)
    return {"train": _train, "evaluate": _evaluate, "predict": _predict, "openset": _openset,
            "export": _export, "export-identifier": _export_identifier, "identify": _identify}[args.verb](args)


def _export(args) -> int:
    from ml.export import ExportError, export_artifact

    try:
        figures = export_artifact(args.artifact_dir, args.data_dir, int8=args.int8, int8_out=args.int8_out,
                                  whole=not args.split_only, split=not args.whole_only)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"artifact": args.artifact_dir, "export": figures}))
    return 0


def _export_identifier(args) -> int:
    from ml.export import ExportError, export_identifier

    root = Path(__file__).resolve().parent.parent
    directory = args.identifier_dir or root / "artifacts" / "identifier"
    try:
        figures = export_identifier(directory, args.data_root or root.parent / "shared" / "data", root / "artifacts",
                                    whole=not args.split_only, split=not args.whole_only)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"artifact": str(directory), "export": figures}))
    return 0


def _train(args) -> int:
    from ml.train import BackboneSpec, TrainConfig, train

    weights = args.weights or ["imagenet"] * len(args.backbone)
    if len(weights) != len(args.backbone):
        print("error: give one --weights per --backbone (or none for imagenet)", file=sys.stderr)
        return 2
    specs = [BackboneSpec(name, None if w == "none" else w) for name, w in zip(args.backbone, weights)]
    config = TrainConfig(val_fraction=args.val_fraction, seed=args.seed, max_epochs=args.epochs,
                         fine_tune=bool(args.fine_tune), fine_tune_mode=args.fine_tune or "cached_top",
                         fine_tune_epochs=args.fine_tune_epochs, fine_tune_from=args.fine_tune_from,
                         tta_flip=not args.no_tta, keep_known=args.keep_known, cache_dir=args.cache_dir)
    result = train(args.data_dir, specs, config, name=args.name or Path(args.out).name, out_dir=args.out)
    print(json.dumps({"artifact": args.out, "metrics": result.metadata.metrics,
                      "unknown_threshold": result.metadata.unknown_threshold,
                      "timings_s": result.metadata.training["timings_s"]}))
    return 0


def _evaluate(args) -> int:
    from ml.evaluate import evaluate

    report = evaluate(args.artifact_dir, args.data_dir, report_dir=args.report_dir)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['model']}: top-1 {report['top1']:.2%}  top-5 {report['top5']:.2%}  on {report['n']} photos")
        if report["skipped_folders"]:
            print(f"skipped folders the model does not know: {', '.join(report['skipped_folders'])}")
        worst = sorted(report["per_class"].items(), key=lambda item: item[1]["recall"])[:5]
        print("lowest recall: " + ", ".join(f"{name} {m['recall']:.0%}" for name, m in worst))
    return 0


def _predict(args) -> int:
    from ml.predict import Predictor

    predictor = Predictor.load(args.artifact_dir)
    status = 0
    for image in args.images:
        try:
            [prediction] = predictor.predict([image], top_k=args.top_k)
        except (OSError, ValueError) as error:
            print(json.dumps({"image": image, "error": str(error)}))
            status = 1
            continue
        print(json.dumps({"image": image, "top": [{"label": item.label, "probability": round(item.probability, 6)}
                                                  for item in prediction.top],
                          "unknown": prediction.unknown}))
    return status


def _identify(args) -> int:
    from ml import images, species
    from ml.identify import Identifier, shipped_artifacts
    from ml.predict import Predictor

    root = Path(__file__).resolve().parent.parent / "artifacts"
    directories = args.artifacts or shipped_artifacts(root)  # the default model first
    predictors = [Predictor.load(directory) for directory in directories]
    identifier = Identifier.load(args.identifier or root / "identifier")
    sizes = sorted({p.metadata.input_size for p in predictors} | {identifier.input_size})
    status = 0
    for image in args.images:
        try:
            # One decode per input size, exactly as the worker decodes an upload.
            pixels = {size: images.to_array(image, size)[None] for size in sizes}
        except (OSError, ValueError) as error:
            print(json.dumps({"image": image, "error": str(error)}))
            status = 1
            continue
        tops = [[(label.label, round(label.probability, 6)) for label in
                 predictor.predict_pixels(pixels[predictor.metadata.input_size], top_k=5)[0].top]
                for predictor in predictors]
        [signals] = identifier.signals(pixels[identifier.input_size])
        answer = identifier.identify(tops, signals)
        print(json.dumps({"image": image, "kind": answer.kind, "label": answer.label,
                          "name": species.name(answer.label) if answer.label else None,
                          "candidates": [{"label": c.label, "probability": c.probability} for c in answer.candidates]}))
    return status


def _openset(args) -> int:
    from ml import data, openset
    from ml.predict import Predictor

    predictor = Predictor.load(args.artifact_dir)
    known = data.load_image_folder(args.butterflies_dir, predictor.classes).paths if args.butterflies_dir else []
    print(json.dumps(openset.rejection_report(predictor, known, openset.skimage_photos()), indent=2))
    return 0
