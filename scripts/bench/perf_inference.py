#!/usr/bin/env python3
"""Inference on this CPU, per model and for the worker's whole batch, each beside its reference,
in one run (docs/performance.md, "Inference" and "Decoding"):

    .venv/bin/python scripts/bench/perf_inference.py [--batch 16] [--repeats 9] [--json docs/perf/inference.json]

For every artifact artifacts/manifest.json lists now, at batch 1 and at --batch (the worker's
CLASSIFIER_BATCH_SIZE), on real butterflies50 test photos (JPEG bytes, as read from storage):

- worker path: what the worker runs for a batch, `ml.images.to_array` on each photo's bytes
  (decode, EXIF transpose, draft, resize), stacking, `Predictor.predict_pixels` (the model's own
  preprocessing layer, the traced forward pass, top-5);
- reference: bare `model.predict(x, batch_size=b)` on the same preprocessed batch x;
- also the traced forward alone (`Predictor.predict_arrays`) and the decode alone.
The paths are timed in turn within each repeat (order shuffled), medians reported; the ratio
worker / model.predict (images per second) is what the >= 80% target is about.

"All models": one decode per photo shared by every active model, then each model once: the
worker's whole batch, against the sum of the models' bare model.predict on the same batch.

Bounds: FLOPs per photo from TensorFlow's profiler on each model's frozen graph, against this
machine's measured float32 matmul rate (the compute bound of this framework here); activation
bytes per photo (outputs of the convolutions, which oneDNN fuses BN/ReLU6 into) against the
measured memory copy bandwidth; Python/dispatch overhead from an empty traced call.

Decoding: a real test photo upscaled to 4000x3000 (a phone photo's size) and 1600x1200 JPEG:
the worker's decode to 224 px with draft mode against a full decode, and the upload path's
check + display (1280 px) + thumbnail (320 px) re-encoding with draft against without.

Peak memory: this process's peak RSS (ru_maxrss) with every model loaded and run at --batch.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

ROOT = h.ROOT
sys.path.insert(0, str(ROOT))
PHOTOS = h.PHOTOS / "test"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def timed_rounds(paths: dict, repeats: int, seed: int = 0) -> dict:
    """Runs every path once per round in shuffled order (after one untimed warm call each);
    returns the median seconds per path and the spread (min, max)."""
    rng = random.Random(seed)
    for fn in paths.values():
        fn()
    times = {name: [] for name in paths}
    for _ in range(repeats):
        order = list(paths)
        rng.shuffle(order)
        for name in order:
            started = time.perf_counter()
            paths[name]()
            times[name].append(time.perf_counter() - started)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)} for name, t in times.items()}


def per_image(stats: dict, batch: int) -> dict:
    median = stats["median_s"]
    return {"ms_per_batch": round(median * 1000, 2), "ms_per_image": round(median * 1000 / batch, 2),
            "images_per_s": round(batch / median, 2),
            "spread_ms_per_batch": [round(stats["min_s"] * 1000, 2), round(stats["max_s"] * 1000, 2)]}


def graph_costs(predictor) -> dict:
    """FLOPs and activation bytes of one photo through the model (batch 1, frozen graph)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    size = predictor.metadata.input_size
    function = tf.function(lambda x: predictor.model(x, training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32)))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    flops = tf.compat.v1.profiler.profile(frozen.graph, options=options).total_float_ops
    conv_bytes = weight_bytes = 0
    for op in frozen.graph.get_operations():
        for out in op.outputs:
            if out.dtype == tf.float32 and out.shape.is_fully_defined():
                n = int(np.prod(out.shape)) * 4
                if op.type == "Const":
                    weight_bytes += n
                elif op.type in ("Conv2D", "DepthwiseConv2dNative", "MatMul"):
                    conv_bytes += n
    return {"gflop_per_image": round(flops / 1e9, 3), "conv_output_mb_per_image": round(conv_bytes / 1e6, 1),
            "weights_mb": round(weight_bytes / 1e6, 1)}


def machine_bounds(repeats: int) -> dict:
    import numpy as np
    import tensorflow as tf

    n = 2048
    a = tf.random.normal((n, n))
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(a).numpy()
        times.append(time.perf_counter() - started)
    gflops = 2 * n**3 / statistics.median(times) / 1e9
    src = np.ones(64 * 1024 * 1024, np.float32)  # 256 MB, far beyond the caches
    dst = np.empty_like(src)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - started)
    bandwidth = 2 * src.nbytes / statistics.median(times) / 1e9  # read + write
    empty = tf.function(lambda x: x)
    tiny = tf.zeros((1, 1))
    empty(tiny)
    times = []
    for _ in range(200):
        started = time.perf_counter()
        empty(tiny).numpy()
        times.append(time.perf_counter() - started)
    return {"matmul_gflops_float32": round(gflops, 1), "copy_bandwidth_gb_s": round(bandwidth, 1),
            "traced_call_overhead_ms": round(statistics.median(times) * 1000, 3)}


def sample_photos(count: int) -> list[bytes]:
    folders = sorted(p for p in PHOTOS.iterdir() if p.is_dir())
    files = [sorted(folders[i % len(folders)].glob("*.jpg"))[i // len(folders)] for i in range(count)]
    return [f.read_bytes() for f in files]


def decoding(repeats: int) -> dict:
    import django
    from PIL import Image, ImageOps

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "butterflysite.settings")
    django.setup()
    from classifier import images as upload_images
    from classifier import services
    from ml import images

    def reencode_without_draft(content: bytes, max_side: int) -> bytes:
        # classifier.images.reencode before draft mode (commit a73782b^), for reference.
        with Image.open(io.BytesIO(content)) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            image.save(out, "JPEG", quality=85, optimize=True)
            return out.getvalue()

    def full_decode_to_array(content: bytes, size: int):
        image = Image.open(io.BytesIO(content))
        image.load()  # decoded at full size: draft() afterwards changes nothing
        return images.to_array(image, size)

    class Upload(io.BytesIO):
        name = "photo.jpg"

        @property
        def size(self):
            return len(self.getvalue())

    source = Image.open(sorted((PHOTOS / "monarch").glob("*.jpg"))[0]).convert("RGB")
    figures = {}
    for width, height in ((4000, 3000), (1600, 1200)):
        out = io.BytesIO()
        source.resize((width, height), Image.Resampling.LANCZOS).save(out, "JPEG", quality=90)
        content = out.getvalue()
        stats = timed_rounds({
            "worker_to_array_draft": lambda: images.to_array(io.BytesIO(content), 224),
            "worker_to_array_full_decode": lambda: full_decode_to_array(content, 224),
            "upload_check": lambda: services.photo_check_upload(Upload(content)),
            "upload_reencode_draft": lambda: (upload_images.reencode(content, upload_images.DISPLAY_MAX_SIDE),
                                              upload_images.reencode(content, upload_images.THUMBNAIL_MAX_SIDE)),
            "upload_reencode_without_draft": lambda: (reencode_without_draft(content, upload_images.DISPLAY_MAX_SIDE),
                                                      reencode_without_draft(content, upload_images.THUMBNAIL_MAX_SIDE)),
        }, repeats)
        entry = {name: round(s["median_s"] * 1000, 1) for name, s in stats.items()}
        entry["jpeg_bytes"] = len(content)
        entry["worker_draft_speedup"] = round(entry["worker_to_array_full_decode"] / entry["worker_to_array_draft"], 1)
        entry["reencode_draft_speedup"] = round(entry["upload_reencode_without_draft"] / entry["upload_reencode_draft"], 1)
        figures[f"{width}x{height}"] = entry
        print(f"decode {width}x{height}: {json.dumps(entry)}", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=int(os.environ.get("CLASSIFIER_BATCH_SIZE", 16)))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from ml import images
    from ml.predict import Predictor

    manifest = json.loads((ROOT / "artifacts" / "manifest.json").read_text())
    figures: dict = {"cpu_count": os.cpu_count(), "load_avg_before": h.load_average(),
                     "tensorflow": tf.__version__, "batch": args.batch, "repeats": args.repeats,
                     "manifest": manifest, "rss_mb_tensorflow_imported": rss_mb(), "models": {}}
    figures["machine"] = machine_bounds(args.repeats)
    print(f"machine: {json.dumps(figures['machine'])}", flush=True)
    photos = sample_photos(max(args.batch, 1))

    predictors = {}
    for name in manifest["artifacts"]:
        started = time.perf_counter()
        predictors[name] = Predictor.load(ROOT / "artifacts" / name, runtime="keras")  # benchmarks the Keras paths
        figures["models"][name] = {"load_s": round(time.perf_counter() - started, 2), "rss_mb_after_load": rss_mb()}
    figures["rss_mb_all_models_loaded"] = rss_mb()

    for name, predictor in predictors.items():
        entry = figures["models"][name]
        entry.update(graph_costs(predictor))
        size = predictor.metadata.input_size
        for batch in sorted({1, args.batch}):
            blobs = photos[:batch]
            x = images.to_batch([io.BytesIO(b) for b in blobs], size)
            stats = timed_rounds({
                "worker_path": lambda: predictor.predict_pixels(
                    np.stack([images.to_array(io.BytesIO(b), size) for b in blobs])),
                "model_predict": lambda: predictor.model.predict(x, batch_size=batch, verbose=0),
                "traced_forward": lambda: predictor.predict_arrays(x),
                "decode_resize": lambda: np.stack([images.to_array(io.BytesIO(b), size) for b in blobs]),
            }, args.repeats)
            result = {path: per_image(s, batch) for path, s in stats.items()}
            result["worker_vs_model_predict"] = round(
                result["worker_path"]["images_per_s"] / result["model_predict"]["images_per_s"], 2)
            result["gflops_achieved_traced"] = round(entry["gflop_per_image"] * result["traced_forward"]["images_per_s"], 1)
            result["share_of_matmul_rate"] = round(result["gflops_achieved_traced"] / figures["machine"]["matmul_gflops_float32"], 2)
            result["decode_share_of_worker_path"] = round(
                result["decode_resize"]["ms_per_image"] / result["worker_path"]["ms_per_image"], 3)
            entry[f"batch_{batch}"] = result
            print(f"{name} batch {batch}: worker {result['worker_path']['ms_per_image']} ms/img "
                  f"({result['worker_path']['images_per_s']}/s), model.predict {result['model_predict']['ms_per_image']} ms/img, "
                  f"forward {result['traced_forward']['ms_per_image']} ms/img, decode {result['decode_resize']['ms_per_image']} ms/img, "
                  f"ratio {result['worker_vs_model_predict']}", flush=True)

    # The worker's whole batch: one decode per photo and input size, every model once.
    sizes = {name: p.metadata.input_size for name, p in predictors.items()}
    figures["all_models"] = {}
    for batch in sorted({1, args.batch}):
        blobs = photos[:batch]
        xs = {s: images.to_batch([io.BytesIO(b) for b in blobs], s) for s in set(sizes.values())}

        def worker_batch():
            decoded = {s: np.stack([images.to_array(io.BytesIO(b), s) for b in blobs]) for s in set(sizes.values())}
            return [p.predict_pixels(decoded[sizes[n]]) for n, p in predictors.items()]

        def models_predict():
            return [p.model.predict(xs[sizes[n]], batch_size=batch, verbose=0) for n, p in predictors.items()]

        stats = timed_rounds({"worker_batch": worker_batch, "model_predict_sum": models_predict}, args.repeats)
        result = {path: per_image(s, batch) for path, s in stats.items()}
        result["worker_vs_model_predict"] = round(
            result["worker_batch"]["images_per_s"] / result["model_predict_sum"]["images_per_s"], 2)
        figures["all_models"][f"batch_{batch}"] = result
        print(f"all models batch {batch}: worker {result['worker_batch']['ms_per_image']} ms/photo "
              f"({result['worker_batch']['images_per_s']} photos/s), sum of model.predict "
              f"{result['model_predict_sum']['ms_per_image']} ms/photo, ratio {result['worker_vs_model_predict']}", flush=True)
    figures["peak_rss_mb_all_models"] = peak_rss_mb()

    figures["decoding"] = decoding(args.repeats)
    figures["load_avg_after"] = h.load_average()
    h.report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
