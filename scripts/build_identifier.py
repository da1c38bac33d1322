"""Build artifacts/identifier from ../shared, and measure it against today's threshold rule.

    .venv/bin/python scripts/build_identifier.py            # extract (cached), fit, measure, write
    .venv/bin/python scripts/build_identifier.py --cache-dir /tmp/identifier-cache --out /tmp/identifier

Photo sets (every signal is extracted once per set and cached as one .npz in --cache-dir):
  val             the shipped models' own validation split of butterflies50/train (val_fraction
                  0.15, seed 0: 801 photos none of them trained on): calibration;
  train           the rest of butterflies50/train: the class centroids and the "known" logistic;
  other           ../shared/data/other_lepidoptera (26 species not among the 49), measured by
                  held-out species: each fold's figures come from a fit that never saw its species;
  nonbutterflies  real photos shipped inside installed packages (ml.openset.non_butterfly_photos),
                  measured only, never fitted on;
  test            butterflies50/test, reported once at the end, never fitted or tuned on.
Writes the artifact (model.keras, parameters.json, parameters.npz, metadata.json, report.json,
README.md), then its checked LiteRT exports (model.tflite and the split export that workers serve;
the same as `python -m ml export-identifier`), and the same report to docs/perf/identify.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml import data, identify, images, openset  # noqa: E402

LEPIDOPTERA_FILE = ROOT / "ml" / "lepidoptera" / "inat_insects_lepidoptera.txt"
N_FOLDS = 4  # other_lepidoptera species in four groups: fit on three (19-20 species), measure on the fourth
# Shares of real butterflies and moths allowed under each threshold (calibration targets).
LEPIDOPTERA_MISS = 0.002
KNOWN_MISS = 0.004
UNCERTAIN_MISS = 0.002
THIRD_CANDIDATE = 0.1  # a third look-alike is shown only with at least this probability
LOGISTIC_C = 0.05
LEPIDOPTERA_WEIGHTS = (0.0, 5.0, 10.0, 20.0, 40.0)


# -- photo sets and their signals --------------------------------------------------------------

def photo_sets(shared: Path) -> dict[str, tuple[list[Path], np.ndarray, list[str]]]:
    train = data.load_image_folder(shared / "data" / "butterflies50" / "train")
    train_idx, val_idx = data.stratified_split(train.labels, 0.15, 0)
    test = data.load_image_folder(shared / "data" / "butterflies50" / "test", train.classes)
    other = data.load_image_folder(shared / "data" / "other_lepidoptera")
    photos = openset.non_butterfly_photos()
    return {
        "val": ([train.paths[i] for i in val_idx], train.labels[val_idx], train.classes),
        "train": ([train.paths[i] for i in train_idx], train.labels[train_idx], train.classes),
        "other": (other.paths, other.labels, other.classes),
        "nonbutterflies": (list(photos.values()), np.zeros(len(photos), np.int64), list(photos)),
        "test": (test.paths, test.labels, test.classes),
    }


def extract(name, paths, labels, classes, cache_dir: Path, openset_model, predictors: dict) -> dict:
    """The open-set model's outputs and every shipped model's probabilities for one photo set,
    from the cache when it holds this exact list of photos and models."""
    path = cache_dir / f"{name}.npz"
    models = [] if name == "train" else list(predictors)
    if path.is_file():
        with np.load(path) as stored:
            cached = {key: stored[key] for key in stored.files}
        if list(cached["paths"]) == [str(p) for p in paths] and all(m in cached for m in models):
            return cached
    import tensorflow as tf

    forward = tf.function(lambda x: openset_model(x, training=False),
                          input_signature=[tf.TensorSpec((None, identify.INPUT_SIZE, identify.INPUT_SIZE, 3), tf.float32)])
    parts = {key: [] for key in ["inat", "imagenet", "feat", *models]}
    started = time.time()
    for start in range(0, len(paths), 32):
        pixels = np.stack([images.to_array(p, identify.INPUT_SIZE) for p in paths[start:start + 32]])
        for key, value in zip(["inat", "imagenet", "feat"], forward(pixels)):
            parts[key].append(np.asarray(value))
        for model in models:
            parts[model].append(predictors[model].predict_arrays(pixels))
        print(f"{name}: {start + len(pixels)}/{len(paths)} photos, {time.time() - started:.0f} s", file=sys.stderr)
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    arrays.update(paths=np.array([str(p) for p in paths]), labels=np.asarray(labels), classes=np.array(classes))
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def lepidoptera_indices() -> list[int]:
    rows = [line.split("\t") for line in LEPIDOPTERA_FILE.read_text().splitlines() if line and not line.startswith("#")]
    return [int(index) for index, _ in rows]


def check_lepidoptera_file(labels_path: Path) -> None:
    labels = labels_path.read_text().splitlines()
    for line in LEPIDOPTERA_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            index, label = line.split("\t")
            if labels[int(index)] != label:
                raise SystemExit(f"{LEPIDOPTERA_FILE}: class {index} is {labels[int(index)]!r}, not {label!r}")


# -- fitting -----------------------------------------------------------------------------------

def centroids(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    means = np.stack([unit[labels == k].mean(axis=0) for k in range(n_classes)])
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def known_logistic(known_features: np.ndarray, other_features: np.ndarray) -> dict:
    """P(one of the known species | iNat features): known train photos against other species."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([known_features, other_features])
    y = np.concatenate([np.ones(len(known_features)), np.zeros(len(other_features))])
    model = LogisticRegression(C=LOGISTIC_C, class_weight="balanced", max_iter=2000)
    model.fit(x, y)
    return {"weights": model.coef_[0].astype(np.float32), "bias": float(model.intercept_[0])}


_LOGISTICS: dict[tuple, dict] = {}


def fit(sets: dict, classes: list[str], other_species: np.ndarray | None, answer_source: str,
        lepidoptera_weight: float, models: list[str]) -> tuple[dict, dict]:
    """Parameters (json) and arrays (npz) fitted on train + the given other species (all when
    None), with thresholds calibrated on val (and on those other species for the lepidoptera score)."""
    train, val, other = sets["train"], sets["val"], sets["other"]
    in_fold = np.isin(other["labels"], other_species) if other_species is not None else np.ones(len(other["labels"]), bool)
    fold_other = {k: (v[in_fold] if k != "classes" else v) for k, v in other.items()}
    known_centroids = centroids(train["feat"], train["labels"], len(classes))
    present = np.unique(fold_other["labels"])
    other_centroids = centroids(fold_other["feat"], np.searchsorted(present, fold_other["labels"]), len(present))
    fold_key = tuple(np.unique(fold_other["labels"]).tolist())
    if fold_key not in _LOGISTICS:  # the same fit serves every weight and answer source
        _LOGISTICS[fold_key] = known_logistic(train["feat"], fold_other["feat"])
    logistic = _LOGISTICS[fold_key]
    arrays = {"centroids": known_centroids,
              "lepidoptera_centroids": np.concatenate([known_centroids, other_centroids]),
              "known_weights": logistic["weights"]}
    parameters = {
        "format_version": 1,
        "input_size": identify.INPUT_SIZE,
        "classes": list(classes),
        "inat_lepidoptera": lepidoptera_indices(),
        "lepidoptera_weight": lepidoptera_weight,
        "known_bias": logistic["bias"],
        "answer_source": answer_source,
    }
    val_signals = signals_of(parameters, arrays, val)
    butterflies = [identify.lepidoptera_score(parameters, s) for s in val_signals + signals_of(parameters, arrays, fold_other)]
    known = np.array([s["known"] for s in val_signals])
    parameters["thresholds"] = {
        "lepidoptera": round(float(np.quantile(butterflies, LEPIDOPTERA_MISS)), 6),
        "known": round(float(np.quantile(known, KNOWN_MISS)), 6),
    }
    # Name a species when the combination's best probability clears the threshold that maximises
    # (share of val butterflies named right) - (share of the fitted other species' photos named):
    # both errors weigh alike. Below it: two or three look-alikes when they hold most of the mass.
    source_models = models[:1] if answer_source == "default" else models
    combined = [identify.combine_tops(t) for t in model_tops(val, source_models, classes)]
    best = np.array([c[0][1] for c in combined])
    right = np.array([c[0][0] == classes[y] for c, y in zip(combined, val["labels"])])
    other_best = np.array([identify.combine_tops(t)[0][1] for t in model_tops(fold_other, source_models, classes)])
    grid = np.round(np.arange(0.05, 1.0, 0.01), 2)
    gains = [np.mean(right & (best >= t)) - np.mean(other_best >= t) for t in grid]
    species = float(grid[int(np.argmax(gains))])
    top3 = np.array([sum(p for _, p in c[:3]) for c in combined])
    parameters["thresholds"].update({
        "species": round(species, 6),
        "uncertain_mass": round(float(np.quantile(top3, UNCERTAIN_MISS)), 6),
        "third_candidate": THIRD_CANDIDATE,
    })
    return parameters, arrays


def choose_lepidoptera_weight(sets, classes, models, answer_source) -> tuple[float, dict]:
    """The weight of the centroid similarity in the lepidoptera score, from a small grid: the one
    that rejects most non-butterflies at the calibrated threshold. So few real non-butterfly
    photos exist that the figure reported for them is leave-one-out (each photo answered by the
    weight chosen on the others)."""
    rejected = {}
    for weight in LEPIDOPTERA_WEIGHTS:
        parameters, arrays = fit(sets, classes, None, answer_source, weight, models)
        scores = np.array([identify.lepidoptera_score(parameters, s) for s in signals_of(parameters, arrays, sets["nonbutterflies"])])
        rejected[weight] = scores < parameters["thresholds"]["lepidoptera"]
    def best(mask):
        return max(LEPIDOPTERA_WEIGHTS, key=lambda w: (int(rejected[w][mask].sum()), -w))
    n = len(sets["nonbutterflies"]["labels"])
    loo = [bool(rejected[best(np.arange(n) != i)][i]) for i in range(n)]
    chosen = best(np.ones(n, bool))
    return chosen, {"grid": list(LEPIDOPTERA_WEIGHTS), "chosen": chosen,
                    "rejected_per_weight": {str(w): _share(r) for w, r in rejected.items()},
                    "leave_one_out_rejected": _share(loo)}


def signals_of(parameters: dict, arrays: dict, photo_set: dict) -> list[dict]:
    outputs = {"inat_probabilities": photo_set["inat"], "imagenet_probabilities": photo_set["imagenet"],
               "inat_features": photo_set["feat"]}
    return identify.signals_from_outputs(parameters, arrays, outputs)


# -- measuring ---------------------------------------------------------------------------------

def model_tops(photo_set: dict, models: list[str], classes: list[str]) -> list[list[list[tuple[str, float]]]]:
    """Per photo, one top-5 list per model (default first), rounded as the web app stores them."""
    per_model = []
    for model in models:
        probabilities = photo_set[model]
        order = np.argsort(-probabilities, axis=1)[:, :5]
        per_model.append([[(classes[j], round(float(row[j]), 6)) for j in top] for row, top in zip(probabilities, order)])
    return [list(tops) for tops in zip(*per_model)]


def answers(parameters, arrays, photo_set, models, classes) -> list[identify.Identification]:
    tops = model_tops(photo_set, models, classes)
    return [identify.decide(parameters, t, s) for t, s in zip(tops, signals_of(parameters, arrays, photo_set))]


def threshold_rule(photo_set: dict, default: str, threshold: float, classes: list[str]) -> list[identify.Identification]:
    """Today's rule as kinds: the default model's best class when its probability clears the
    artifact's calibrated threshold, else "unknown" (the product showed the label with a warning)."""
    result = []
    for row in photo_set[default]:
        best = int(np.argmax(row))
        named = round(float(row[best]), 6) >= threshold
        result.append(identify.Identification("species" if named else "unknown_species", classes[best] if named else None, (), {}))
    return result


def known_figures(results, labels, classes) -> dict:
    kinds = [r.kind for r in results]
    right = [r.kind == "species" and r.label == classes[y] for r, y in zip(results, labels)]
    wrong = [r.kind == "species" and r.label != classes[y] for r, y in zip(results, labels)]
    return {
        "n": len(results),
        "named_right": _share(right),
        "named_wrong": _share(wrong),
        "uncertain": _share([k == "uncertain" for k in kinds]),
        "uncertain_holds_right": _share([r.kind == "uncertain" and classes[y] in [c.label for c in r.candidates]
                                         for r, y in zip(results, labels)]),
        "rejected": _share([k in ("unknown_species", "not_butterfly") for k in kinds]),
        "not_butterfly": _share([k == "not_butterfly" for k in kinds]),
    }


def unknown_figures(results) -> dict:
    kinds = [r.kind for r in results]
    return {
        "n": len(results),
        "not_named": _share([k != "species" for k in kinds]),
        "unknown_species": _share([k == "unknown_species" for k in kinds]),
        "not_butterfly": _share([k == "not_butterfly" for k in kinds]),
        "uncertain": _share([k == "uncertain" for k in kinds]),
        "named": _share([k == "species" for k in kinds]),
    }


def top1(photo_set, models, classes) -> float:
    combined = [identify.combine_tops(t)[0][0] for t in model_tops(photo_set, models, classes)]
    return _share([c == classes[y] for c, y in zip(combined, photo_set["labels"])])


def _share(flags) -> float:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def species_folds(n_species: int, n_folds: int) -> list[np.ndarray]:
    order = np.random.default_rng(0).permutation(n_species)
    return [np.sort(order[i::n_folds]) for i in range(n_folds)]


def measure(sets, classes, models, answer_source) -> tuple[dict, dict, dict]:
    """Every figure of the method for one answer source; other species by held-out species."""
    source_models = models[:1] if answer_source == "default" else models
    report = {"answer_source": answer_source, "models": source_models}
    weight, report["lepidoptera_weight"] = choose_lepidoptera_weight(sets, classes, models, answer_source)
    parameters, arrays = fit(sets, classes, None, answer_source, weight, models)
    report["val"] = known_figures(answers(parameters, arrays, sets["val"], models, classes), sets["val"]["labels"], classes)
    report["nonbutterflies"] = unknown_figures(answers(parameters, arrays, sets["nonbutterflies"], models, classes))
    other = sets["other"]
    folds = []
    held_out = [None] * len(other["labels"])
    for species in species_folds(len(other["classes"]), N_FOLDS):
        fitted_on = np.setdiff1d(np.arange(len(other["classes"])), species)
        fold_parameters, fold_arrays = fit(sets, classes, fitted_on, answer_source, weight, models)
        mask = np.isin(other["labels"], species)
        subset = {k: (v[mask] if k not in ("classes",) else v) for k, v in other.items()}
        results = answers(fold_parameters, fold_arrays, subset, models, classes)
        for i, r in zip(np.flatnonzero(mask), results):
            held_out[i] = r
        folds.append({"held_out_species": [str(other["classes"][s]) for s in species],
                      "thresholds": fold_parameters["thresholds"], **unknown_figures(results)})
    report["other_lepidoptera_held_out"] = unknown_figures(held_out)
    report["other_lepidoptera_held_out"]["folds"] = folds
    report["other_lepidoptera_per_species"] = {
        str(name): unknown_figures([held_out[i] for i in np.flatnonzero(other["labels"] == k)])["not_named"]
        for k, name in enumerate(other["classes"])}
    report["thresholds"] = parameters["thresholds"]
    return report, parameters, arrays


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "butterflysite" / "identifier")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "identifier")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "perf" / "identify.json")
    args = parser.parse_args(argv)

    from ml.predict import Predictor

    weights = args.shared / "weights"
    check_lepidoptera_file(weights / "inat_insects_labels.txt")
    manifest_models = [Path(p).name for p in identify.shipped_artifacts(args.artifacts)]
    predictors = {name: Predictor.load(args.artifacts / name) for name in manifest_models}
    default = predictors[manifest_models[0]]
    classes = default.classes
    openset_model = identify.build_openset_model(weights)
    sets = {}
    for name, (paths, labels, set_classes) in photo_sets(args.shared).items():
        sets[name] = extract(name, paths, labels, set_classes, args.cache_dir, openset_model, predictors)

    baseline_threshold = default.metadata.unknown_threshold
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "models": manifest_models, "default": manifest_models[0],
              "n": {name: int(len(s["labels"])) for name, s in sets.items()},
              "top1_val": {"default": top1(sets["val"], manifest_models[:1], classes),
                           "average": top1(sets["val"], manifest_models, classes)},
              "sources": {}}
    baseline = {name: threshold_rule(sets[name], manifest_models[0], baseline_threshold, classes)
                for name in ("val", "other", "nonbutterflies", "test")}
    report["today_threshold_rule"] = {
        "threshold": baseline_threshold, "model": manifest_models[0],
        "val": known_figures(baseline["val"], sets["val"]["labels"], classes),
        "other_lepidoptera": unknown_figures(baseline["other"]),
        "nonbutterflies": unknown_figures(baseline["nonbutterflies"]),
    }
    fitted = {}
    for source in ("default", "average"):
        report["sources"][source], parameters, arrays = measure(sets, classes, manifest_models, source)
        fitted[source] = (parameters, arrays)
    # The source with the better balance of val butterflies named right and held-out other
    # species not named (the same weighing as the species threshold's).
    chosen = max(("default", "average"), key=lambda s: (report["sources"][s]["val"]["named_right"]
                                                        - report["sources"][s]["other_lepidoptera_held_out"]["named"], s == "average"))
    report["chosen_source"] = chosen
    parameters, arrays = fitted[chosen]

    # Test, once: the chosen method (fitted on all 26 other species) and today's rule.
    test_results = answers(parameters, arrays, sets["test"], manifest_models, classes)
    report["test"] = {"method": known_figures(test_results, sets["test"]["labels"], classes),
                      "today_threshold_rule": known_figures(baseline["test"], sets["test"]["labels"], classes),
                      "top1": {"default": top1(sets["test"], manifest_models[:1], classes),
                               "average": top1(sets["test"], manifest_models, classes)}}
    write_artifact(args.out, openset_model, parameters, arrays, report, weights)
    # Workers serve the exports (no TensorFlow), checked against the model.keras just written;
    # write_artifact's fresh metadata.json gets their figures here.
    from ml import export

    export.export_identifier(args.out, args.shared / "data", args.artifacts)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"chosen_source": chosen, "val": report["sources"][chosen]["val"],
                      "other_held_out": report["sources"][chosen]["other_lepidoptera_held_out"]["not_named"],
                      "written": str(args.out)}, indent=2))
    return 0


def same_weights(path: Path, model) -> bool:
    """Whether the model saved at `path` holds exactly `model`'s weights."""
    import keras

    if not path.is_file():
        return False
    try:
        saved = keras.saving.load_model(path, compile=False)
    except Exception:  # an unreadable file: write it anew
        return False
    ours, theirs = model.get_weights(), saved.get_weights()
    return len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def write_artifact(out: Path, openset_model, parameters, arrays, report, weights: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not same_weights(out / identify.MODEL_FILE, openset_model):  # a re-save would differ byte-wise only
        openset_model.save(out / identify.MODEL_FILE)
    (out / identify.PARAMETERS_FILE).write_text(json.dumps(parameters, indent=1) + "\n")
    np.savez(out / identify.ARRAYS_FILE, **arrays)
    metadata = {
        "name": "identifier",
        "created": report["created"],
        "input_size": identify.INPUT_SIZE,
        "outputs": list(identify.OUTPUTS),
        "weights": ["mobilenet_v2_1.0_224_inat_insects.weights.h5", "mobilenet_v2_1.0_224_imagenet.weights.h5"],
        "weights_sha256": {name: data.file_sha256(weights / name) for name in
                           ("mobilenet_v2_1.0_224_inat_insects.weights.h5", "mobilenet_v2_1.0_224_imagenet.weights.h5")},
        "fitted_with_models": report["models"],
        "answer_source": parameters["answer_source"],
        "thresholds": parameters["thresholds"],
        "built_by": "scripts/build_identifier.py",
    }
    (out / identify.METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "README.md").write_text(README.format(thresholds=json.dumps(parameters["thresholds"]),
                                                 source=parameters["answer_source"],
                                                 weight=parameters["lepidoptera_weight"]))


README = """# identifier: the open-set model and fitted parameters behind every identification

Built by `scripts/build_identifier.py` from `../shared` (weights, butterflies50/train,
other_lepidoptera); loaded by `ml.identify.Identifier.load` from this directory alone.

- `model.keras`: pixels (224x224 RGB, 0..255) in; out: the iNaturalist-insects MobileNetV2's own
  top (1,022 species), the ImageNet MobileNetV2's own top (1,000 classes) and the iNat network's
  pooled features (1,280). Both networks frozen, as converted in ../shared/weights (Apache-2.0,
  google-coral/test_data).
- `parameters.json`: the 49 class keys; the indices of the iNat top's Lepidoptera
  (ml/lepidoptera); the lepidoptera-score weight ({weight}); the answer source ({source}: which
  of the models' top-5 lists it reads); the "known species" logistic's bias; the thresholds
  {thresholds}.
- `parameters.npz`: `centroids` (49 x 1280, unit iNat features of the train photos per species),
  `lepidoptera_centroids` (those plus one per other_lepidoptera species), `known_weights` (the
  logistic's 1,280 weights).
- `metadata.json`: when and from what it was built.
- `report.json`: every figure measured when it was built (also docs/perf/identify.json; see
  docs/ml.md, "Identification").

The decision (`ml.identify.decide`): `not_butterfly` when the lepidoptera score is under its
threshold; `unknown_species` when the "known" logistic is under its threshold; `species` when the
averaged top-5 lists' best probability clears `species`; `uncertain` (2-3 look-alikes) when the
top 3 hold at least `uncertain_mass`; else `unknown_species`.
"""


if __name__ == "__main__":
    raise SystemExit(main())
