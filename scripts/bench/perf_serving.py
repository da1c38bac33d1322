#!/usr/bin/env python3
"""Serving runtimes side by side in one run (docs/performance.md, "Serving with LiteRT"):

    .venv/bin/python scripts/bench/perf_serving.py [--repeats 7] [--int8] [--int8-split] [--json docs/perf/serving.json]
    .venv/bin/python scripts/bench/perf_serving.py --memory [--json docs/perf/serving_memory.json]
    .venv/bin/python scripts/bench/perf_serving.py --measure-int8-trunks [--json docs/perf/serving_int8_trunks.json]

Runtimes, each in a process of its own holding the three artifacts artifacts/manifest.json lists
and the identifier (artifacts/identifier), as a classification worker would:

- keras: today's Keras path, `Predictor.load(dir, runtime="keras")` (the traced forward pass),
  `Identifier.load(dir, runtime="keras")`;
- litert_float32: each artifact's whole model.tflite under ai-edge-litert (XNNPACK), one
  interpreter per model (`runtime="litert"`);
- litert_split: the split exports (`runtime="split"`, what the worker serves): one interpreter
  per distinct frozen trunk (iNat insects, ImageNet: 2 for all four models), each run once per
  view of a batch, and a small tail per model (ml/serving.py);
- litert_int8 (with --int8): a full-integer int8 whole-model export calibrated on 100 train
  photos (`ml.export`), measured only, not served, without the identifier; converted into
  --int8-dir first when not there;
- litert_split_int8 (with --int8-split): the split exports with full-integer int8 trunks
  (ml.export.int8_trunks: calibrated on 100 train photos and their mirror images) and float32
  tails, measured only; converted into --int8-trunks-dir first when not there.
The LiteRT processes never import TensorFlow.

Each process decodes the same real butterflies50 test photos with `ml.images`, one round's batch
at a time and untimed (the decode is the same for every runtime). Round by round, in shuffled
order, one process at a time runs:
- each model alone (and the identifier alone) at batch 1 (four single-photo calls, their mean)
  and batch 16, each call on an array of its own (so no trunk is shared);
- the worker's pipeline: every model, then the identifier, on the SAME decoded array, at batch 1
  and 16 ("all_models" without the identifier, "all_models_with_identifier" with it).
Medians over the rounds are reported as per-photo latency, photos/s and the speed-up over keras.
Each runtime uses as many threads as the process may use (TensorFlow's default). Each process
reports its time to load the models (from process start) and its peak RSS (VmHWM) at the end.

--memory instead measures the peak RSS (VmHWM) of a fresh process per runtime (litert_float32,
litert_split) and batch size (1, 16) that loads the three models and the identifier and
classifies 48 real photos as the worker does (decode, every model, the identifier), and whether
it imported TensorFlow.

--measure-int8-trunks instead measures what int8 trunks do to the answers (ml.export
measure_int8_trunks): each model's validation top-1 (801 photos) and open-set share against its
float32 split export, and the identifier's signals and answers on its check photos.

Bounds: a MobileNetV2 forward pass at 224 px is ~0.3 G multiply-adds. Whole models run one pass
per backbone and per flip view: 4 (default) + 2 + 2 for the three models, +2 for the identifier =
10 per photo. The split runs 2 trunks x 2 views = 4 trunk passes (each ~86% of a pass: below
block_16_expand) and 10 tails (each ~14% of a pass: block_16, Conv_1, pooling, head), ~4.8
pass-equivalents, so it cannot be more than ~2x the whole-model LiteRT path on the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

ROOT = h.ROOT
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BATCHES = (1, 16)
SINGLE_CALLS = 4
MOBILENET_V2_GMACS = 0.3
RUNTIMES = ("keras", "litert_float32", "litert_split")
INT8 = "litert_int8"
INT8_SPLIT = "litert_split_int8"
LOADERS = {"keras": "keras", "litert_float32": "litert", "litert_split": "split", INT8_SPLIT: "split"}
MEMORY_RUNTIMES = ("litert_float32", "litert_split")
MEMORY_PHOTOS = 48
IDENTIFIER = "identifier"


def passes_per_photo(metadata) -> int:
    flips = 2 if metadata.training.get("config", {}).get("tta_flip") else 1
    return len(metadata.backbone.split("+")) * flips


def vm_hwm_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def tensorflow_imported() -> bool:
    return any(m.split(".")[0] in ("tensorflow", "keras", "tf_keras") for m in sys.modules)


def ensure_int8(name: str, int8_dir: Path) -> Path:
    from ml import export
    from ml.predict import Predictor

    path = int8_dir / name / "model.tflite"
    if not path.is_file():
        keras_predictor = Predictor.load(ROOT / "artifacts" / name, runtime="keras")
        _, _, train_paths = export.validation_photos(h.PHOTOS, keras_predictor.classes)
        size = keras_predictor.metadata.input_size
        content = export.convert(keras_predictor.model, size, representative=export.photo_batches(
            export.representative_photos(train_paths), size))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return path


def test_photos(classes, n: int) -> list[Path]:
    from ml import data

    folder = data.load_image_folder(h.PHOTOS / "test", classes)
    return [folder.paths[i] for i in random.Random(0).sample(range(len(folder)), n)]


def load_models(runtime: str, names: list[str], int8_dir: Path, int8_trunks_dir: Path | None = None) -> dict:
    """{name: forward(pixels)} for the models and (but for int8) IDENTIFIER."""
    from ml import serving
    from ml.identify import Identifier
    from ml.predict import LiteRTModel, Predictor

    if runtime == INT8_SPLIT:  # registered first: every split model then shares these int8 trunks
        for path in sorted(int8_trunks_dir.glob("*.tflite")):
            serving.TRUNKS.get(f"sha256:{path.stem}", path)
    models = {}
    for name in names:
        if runtime == INT8:
            models[name] = LiteRTModel(int8_dir / name / "model.tflite")
        else:
            models[name] = Predictor.load(ROOT / "artifacts" / name, runtime=LOADERS[runtime]).predict_arrays
    if runtime != INT8:
        models[IDENTIFIER] = Identifier.load(ROOT / "artifacts" / IDENTIFIER, runtime=LOADERS[runtime]).outputs
    return models


def child(runtime: str, names: list[str], int8_dir: Path, repeats: int, int8_trunks_dir: Path) -> None:
    """One runtime's process: load the models, then run a round per line read on stdin."""
    from ml import artifact, images

    models = load_models(runtime, names, int8_dir, int8_trunks_dir)
    load_s = time.perf_counter() - STARTED
    metadata = artifact.read_metadata(ROOT / "artifacts" / names[0])
    photos, size = test_photos(metadata.classes, 16 * repeats), metadata.input_size
    classifiers = [models[name] for name in names]
    for batch in BATCHES:  # allocate every interpreter's tensors for both batch sizes
        for forward in models.values():
            forward(images.to_batch(photos[:batch], size))
    print(json.dumps({"ready": True, "load_s": round(load_s, 2)}), flush=True)
    for line in sys.stdin:
        repeat = int(line)
        # Decoded per round, untimed: the process holds one batch of photos, as a worker does.
        chunk = images.to_batch(photos[repeat * 16:(repeat + 1) * 16], size)
        seconds: dict = {}
        for name, forward in models.items():  # each alone, on arrays of its own
            singles = [chunk[i:i + 1].copy() for i in range(SINGLE_CALLS)]
            started = time.perf_counter()
            for pixels in singles:
                forward(pixels)
            single = (time.perf_counter() - started) / SINGLE_CALLS
            pixels = chunk.copy()
            started = time.perf_counter()
            forward(pixels)
            seconds[name] = {"1": single, "16": time.perf_counter() - started}
        # The worker's pipeline: every model, then the identifier, on one decoded array.
        for batch in BATCHES:
            calls = [chunk[i:i + 1].copy() for i in range(SINGLE_CALLS)] if batch == 1 else [chunk.copy()]
            models_s = identifier_s = 0.0
            for pixels in calls:
                started = time.perf_counter()
                for forward in classifiers:
                    forward(pixels)
                middle = time.perf_counter()
                if IDENTIFIER in models:
                    models[IDENTIFIER](pixels)
                models_s += middle - started
                identifier_s += time.perf_counter() - middle
            seconds.setdefault("all_models", {})[str(batch)] = models_s / len(calls)
            if IDENTIFIER in models:
                seconds.setdefault("all_models_with_identifier", {})[str(batch)] = (models_s + identifier_s) / len(calls)
        print(json.dumps(seconds), flush=True)
    print(json.dumps({"peak_rss_mb": vm_hwm_mb(), "tensorflow_imported": tensorflow_imported()}), flush=True)


def memory_child(runtime: str, batch: int, names: list[str]) -> None:
    """Load the three models and the identifier, classify MEMORY_PHOTOS real photos in batches of
    `batch` as the worker does, report the peak RSS."""
    from ml import artifact, images

    models = load_models(runtime, names, Path())
    load_s = time.perf_counter() - STARTED
    metadata = artifact.read_metadata(ROOT / "artifacts" / names[0])
    photos = test_photos(metadata.classes, MEMORY_PHOTOS)
    for start in range(0, len(photos), batch):
        pixels = images.to_batch(photos[start:start + batch], metadata.input_size)
        for forward in models.values():
            forward(pixels)
    print(json.dumps({"runtime": runtime, "batch": batch, "photos": len(photos), "load_s": round(load_s, 2),
                      "peak_rss_mb": vm_hwm_mb(), "tensorflow_imported": tensorflow_imported()}), flush=True)


def read_json(process) -> dict:
    """The next JSON line a child prints (runtimes may print log lines of their own)."""
    while True:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark process exited (status {process.wait()})")
        if line.startswith("{"):
            return json.loads(line)


def memory(names: list[str], json_path: str | None) -> int:
    figures = {"load_average_before": h.load_average(), "photos": MEMORY_PHOTOS,
               "models": names + [IDENTIFIER], "peak_rss_mb": {}}
    for runtime in MEMORY_RUNTIMES:
        for batch in BATCHES:
            process = subprocess.Popen([sys.executable, __file__, "--memory-child", runtime, "--batch", str(batch)],
                                       cwd=ROOT, stdout=subprocess.PIPE, text=True)
            result = read_json(process)
            process.wait(timeout=120)
            figures["peak_rss_mb"].setdefault(runtime, {})[f"batch_{batch}"] = result
    figures["load_average_after"] = h.load_average()
    h.report(figures, json_path)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--int8", action="store_true", help="also measure whole-model int8 exports (not served)")
    parser.add_argument("--int8-dir", type=Path, default=Path("/tmp/butterflysite-int8"))
    parser.add_argument("--int8-split", action="store_true",
                        help="also measure the split exports with int8 trunks (float32 tails; not served)")
    parser.add_argument("--int8-trunks-dir", type=Path, default=Path("/tmp/butterflysite-int8-trunks"))
    parser.add_argument("--measure-int8-trunks", action="store_true",
                        help="instead: accuracy of int8 trunks against float32 (val top-1, open set, identifier)")
    parser.add_argument("--memory", action="store_true", help="peak RSS of a worker-like process per runtime and batch")
    parser.add_argument("--json", help="also write the figures here (docs/perf/serving.json)")
    parser.add_argument("--child", choices=(*RUNTIMES, INT8, INT8_SPLIT), help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", choices=MEMORY_RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = json.loads((ROOT / "artifacts" / "manifest.json").read_text())["artifacts"]
    if args.child:
        child(args.child, names, args.int8_dir, args.repeats, args.int8_trunks_dir)
        return 0
    if args.memory_child:
        memory_child(args.memory_child, args.batch, names)
        return 0
    if args.memory:
        return memory(names, args.json)

    from ml import artifact, export, serving

    if args.measure_int8_trunks:
        figures = {"load_average_before": h.load_average(),
                   **export.measure_int8_trunks(ROOT / "artifacts", h.PHOTOS.parent, args.int8_trunks_dir),
                   "load_average_after": h.load_average()}
        h.report(figures, args.json)
        return 0
    runtimes = RUNTIMES + ((INT8,) if args.int8 else ()) + ((INT8_SPLIT,) if args.int8_split else ())
    if args.int8:
        for name in names:
            ensure_int8(name, args.int8_dir)
    if args.int8_split:
        export.int8_trunks(ROOT / "artifacts", h.PHOTOS, args.int8_trunks_dir)
    figures = {"load_average_before": h.load_average(), "repeats": args.repeats, "cpus": len(os.sched_getaffinity(0))}
    processes = {}
    for runtime in runtimes:  # started one after another: each load is timed on its own
        processes[runtime] = subprocess.Popen(
            [sys.executable, __file__, "--child", runtime, "--repeats", str(args.repeats), "--int8-dir", str(args.int8_dir),
             "--int8-trunks-dir", str(args.int8_trunks_dir)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        figures.setdefault("processes", {})[runtime] = read_json(processes[runtime])
    seconds: dict = {}
    rng = random.Random(1)
    for repeat in range(args.repeats):
        order = list(runtimes)
        rng.shuffle(order)
        for runtime in order:
            processes[runtime].stdin.write(f"{repeat}\n")
            processes[runtime].stdin.flush()
            for name, by_batch in read_json(processes[runtime]).items():
                for batch in BATCHES:
                    seconds.setdefault((runtime, name, batch), []).append(by_batch[str(batch)])
    for runtime, process in processes.items():
        process.stdin.close()
        figures["processes"][runtime].update(read_json(process))
        process.wait(timeout=60)
    passes = {name: passes_per_photo(artifact.read_metadata(ROOT / "artifacts" / name)) for name in names}
    passes[IDENTIFIER] = 2  # iNat insects + ImageNet, one view
    trunks = {}
    for name in [*names, IDENTIFIER]:
        spec = serving.read_spec(ROOT / "artifacts" / name)
        trunks[name] = {trunk["fingerprint"] for trunk in spec["trunks"]}
        trunks[name, "views"] = len(spec["views"])
    figures["models"] = {}
    for name in [*names, IDENTIFIER]:
        model = {"passes_per_photo": passes[name],
                 "tflite_mb": round((ROOT / "artifacts" / name / "model.tflite").stat().st_size / 1e6, 1)}
        if args.int8 and name != IDENTIFIER:
            model["int8_tflite_mb"] = round((args.int8_dir / name / "model.tflite").stat().st_size / 1e6, 1)
        model.update(summarise(seconds, runtimes, name, passes[name]))
        figures["models"][name] = model
    distinct = set().union(*(trunks[name] for name in names))
    figures["all_models"] = {
        "passes_per_photo": sum(passes[name] for name in names),
        "split_trunk_passes_per_photo": len(distinct) * max(trunks[name, "views"] for name in names),
        **summarise(seconds, runtimes, "all_models", sum(passes[name] for name in names))}
    figures["all_models_with_identifier"] = {
        "passes_per_photo": sum(passes.values()),
        "split_trunk_passes_per_photo": len(distinct | trunks[IDENTIFIER]) * max(trunks[name, "views"] for name in names),
        **summarise(seconds, tuple(r for r in runtimes if r != INT8), "all_models_with_identifier", sum(passes.values()))}
    figures["load_average_after"] = h.load_average()
    h.report(figures, args.json)
    return 0


def summarise(seconds: dict, runtimes, name: str, passes: int) -> dict:
    """Medians per runtime and batch: per-photo ms, photos/s, G multiply-adds/s (whole-model
    passes, for comparing runtimes), speed-up over keras and over litert_float32."""
    out = {}
    for batch in BATCHES:
        medians = {runtime: statistics.median(seconds[runtime, name, batch])
                   for runtime in runtimes if (runtime, name, batch) in seconds}
        row = {}
        for runtime, median in medians.items():
            per_photo = median / batch
            row[runtime] = {"ms_per_call": round(median * 1000, 2), "ms_per_photo": round(per_photo * 1000, 2),
                            "photos_per_s": round(1 / per_photo, 2),
                            "gmacs_per_s": round(passes * MOBILENET_V2_GMACS / per_photo, 1),
                            "speedup_vs_keras": round(medians["keras"] / median, 2),
                            "speedup_vs_litert_float32": round(medians["litert_float32"] / median, 2)}
        out[f"batch_{batch}"] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
