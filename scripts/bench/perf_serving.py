#!/usr/bin/env python3
"""Serving runtimes side by side in one run (docs/performance.md, "Serving with LiteRT"):

    .venv/bin/python scripts/bench/perf_serving.py [--repeats 7] [--json docs/perf/serving.json]

Three runtimes, each in a process of its own holding the three artifacts artifacts/manifest.json
lists, as a classification worker would:

- keras: today's Keras path, `Predictor.load(dir, runtime="keras")` (the traced forward pass);
- litert_float32: the artifact's committed model.tflite under ai-edge-litert (XNNPACK), what the
  worker serves now (`Predictor.load(dir)`); this process never imports TensorFlow;
- litert_int8: a full-integer int8 export calibrated on 100 train photos (`ml.export`), measured
  only, not served; converted into --int8-dir first when not there (`python -m ml export DIR DATA
  --int8 --int8-out DIR/<name>/model.tflite` writes the same file).

Each process decodes the same real butterflies50 test photos with `ml.images`, one round's batch
at a time and untimed (the decode is the same for every runtime). Round by round, in shuffled order, one process at a time
runs every model at batch 1 (four single-photo calls, their mean) and at batch 16 on that round's
photos, so the processes share the same machine conditions; medians over the rounds are reported
as per-photo latency, photos/s and the speed-up over keras. "all_models" is the sum over the three
artifacts: one photo classified by every active model. Each runtime uses as many threads as the
process may use (TensorFlow's default). Each process also reports its time to load the three
models (from process start) and its peak RSS (VmHWM) at the end.

Bounds: a MobileNetV2 forward pass at 224 px is ~0.3 G multiply-adds; a photo costs one pass per
backbone and per flip view (4 for the default model), so the multiply-add rate each runtime
achieves is reported beside the times.
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
RUNTIMES = ("keras", "litert_float32", "litert_int8")


def passes_per_photo(metadata) -> int:
    flips = 2 if metadata.training.get("config", {}).get("tta_flip") else 1
    return len(metadata.backbone.split("+")) * flips


def vm_hwm_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


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


def child(runtime: str, names: list[str], int8_dir: Path, repeats: int) -> None:
    """One runtime's process: load the models, then run a round per line read on stdin."""
    from ml import artifact, images
    from ml.predict import LiteRTModel, Predictor

    models, photos, sizes = {}, {}, {}
    for name in names:
        directory = ROOT / "artifacts" / name
        if runtime == "litert_int8":
            models[name] = LiteRTModel(int8_dir / name / "model.tflite")
        else:
            models[name] = Predictor.load(directory, runtime=runtime.split("_")[0]).predict_arrays
    load_s = time.perf_counter() - STARTED
    for name in names:
        metadata = artifact.read_metadata(ROOT / "artifacts" / name)
        photos[name], sizes[name] = test_photos(metadata.classes, 16 * repeats), metadata.input_size
        for batch in BATCHES:
            models[name](images.to_batch(photos[name][:batch], sizes[name]))
    print(json.dumps({"ready": True, "load_s": round(load_s, 2)}), flush=True)
    for line in sys.stdin:
        repeat = int(line)
        seconds = {}
        for name in names:
            # Decoded per round, untimed: the process holds one batch of photos, as a worker does.
            chunk = images.to_batch(photos[name][repeat * 16:(repeat + 1) * 16], sizes[name])
            started = time.perf_counter()
            for i in range(SINGLE_CALLS):
                models[name](chunk[i:i + 1])
            single = (time.perf_counter() - started) / SINGLE_CALLS
            started = time.perf_counter()
            models[name](chunk)
            seconds[name] = {"1": single, "16": time.perf_counter() - started}
        print(json.dumps(seconds), flush=True)
    print(json.dumps({"peak_rss_mb": vm_hwm_mb(), "tensorflow_imported": any(
        m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)}), flush=True)


def read_json(process) -> dict:
    """The next JSON line a child prints (runtimes may print log lines of their own)."""
    while True:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark process exited (status {process.wait()})")
        if line.startswith("{"):
            return json.loads(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--int8-dir", type=Path, default=Path("/tmp/butterflysite-int8"))
    parser.add_argument("--json", help="also write the figures here (docs/perf/serving.json)")
    parser.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = json.loads((ROOT / "artifacts" / "manifest.json").read_text())["artifacts"]
    if args.child:
        child(args.child, names, args.int8_dir, args.repeats)
        return 0

    from ml import artifact

    for name in names:
        ensure_int8(name, args.int8_dir)
    figures = {"load_average_before": h.load_average(), "repeats": args.repeats, "cpus": len(os.sched_getaffinity(0))}
    processes = {}
    for runtime in RUNTIMES:  # started one after another: each load is timed on its own
        processes[runtime] = subprocess.Popen(
            [sys.executable, __file__, "--child", runtime, "--repeats", str(args.repeats), "--int8-dir", str(args.int8_dir)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        figures.setdefault("processes", {})[runtime] = read_json(processes[runtime])
    seconds = {(runtime, name, batch): [] for runtime in RUNTIMES for name in names for batch in BATCHES}
    rng = random.Random(1)
    for repeat in range(args.repeats):
        order = list(RUNTIMES)
        rng.shuffle(order)
        for runtime in order:
            processes[runtime].stdin.write(f"{repeat}\n")
            processes[runtime].stdin.flush()
            for name, by_batch in read_json(processes[runtime]).items():
                for batch in BATCHES:
                    seconds[runtime, name, batch].append(by_batch[str(batch)])
    for runtime, process in processes.items():
        process.stdin.close()
        figures["processes"][runtime].update(read_json(process))
        process.wait(timeout=60)
    passes = {name: passes_per_photo(artifact.read_metadata(ROOT / "artifacts" / name)) for name in names}
    figures["models"] = {}
    for name in names:
        model = {"passes_per_photo": passes[name],
                 "tflite_mb": round((ROOT / "artifacts" / name / "model.tflite").stat().st_size / 1e6, 1),
                 "int8_tflite_mb": round((args.int8_dir / name / "model.tflite").stat().st_size / 1e6, 1)}
        model.update(summarise({(r, b): seconds[r, name, b] for r in RUNTIMES for b in BATCHES}, passes[name]))
        figures["models"][name] = model
    totals = {(r, b): [sum(seconds[r, name, b][i] for name in names) for i in range(args.repeats)]
              for r in RUNTIMES for b in BATCHES}
    figures["all_models"] = summarise(totals, sum(passes.values()))
    figures["load_average_after"] = h.load_average()
    h.report(figures, args.json)
    return 0


def summarise(seconds: dict, passes: int) -> dict:
    """Medians per runtime and batch: per-photo ms, photos/s, G multiply-adds/s, speed-up over keras."""
    out = {}
    for batch in BATCHES:
        keras_median = statistics.median(seconds["keras", batch])
        row = {}
        for runtime in RUNTIMES:
            median = statistics.median(seconds[runtime, batch])
            per_photo = median / batch
            row[runtime] = {"ms_per_call": round(median * 1000, 2), "ms_per_photo": round(per_photo * 1000, 2),
                            "photos_per_s": round(1 / per_photo, 2),
                            "gmacs_per_s": round(passes * MOBILENET_V2_GMACS / per_photo, 1),
                            "speedup_vs_keras": round(keras_median / median, 2)}
        out[f"batch_{batch}"] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
