#!/usr/bin/env python3
"""Training on this CPU: the default model from scratch, and a retrain with the feature cache
cold against warm, in one run (docs/performance.md, "Training").

    .venv/bin/python scripts/bench/perf_training.py [--json docs/perf/training.json] [--skip-default]

Reads artifacts/manifest.json now, takes the default artifact's recipe from its metadata.json
(backbones and weights files, fine-tuned or not) and runs the ml CLI, each run a fresh process:

1. default, cold: `python -m ml train ../shared/data/butterflies50 <backbones> [--fine-tune]`
   with an empty feature cache: the time to train the default model here;
2. default, warm: the same command again on the cache run 1 filled (a full retrain);
3. head, cold: the same backbones, linear probe only (no --fine-tune), on another empty cache;
4. head, warm: run 3 again on its cache: the head retrain the cache exists for (>= 10x faster).

Reports each command's wall time, the phases `ml.train` times itself (features, head,
fine-tune), validation top-1 (so cold and warm are shown to train the same model) and the
child's peak RSS. Artifacts and caches go to a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

ROOT = h.ROOT
DATA = h.PHOTOS
WEIGHTS = ROOT.parent / "shared" / "weights"


def default_recipe() -> tuple[str, list[str], bool]:
    manifest = json.loads((ROOT / "artifacts" / "manifest.json").read_text())
    name = manifest["default"]
    metadata = json.loads((ROOT / "artifacts" / name / "metadata.json").read_text())
    args = []
    for spec in metadata["training"]["backbones"]:  # "mobilenet_v2[file.weights.h5]"
        match = re.fullmatch(r"([^\[]+)\[(.*)\]", spec)
        backbone, weights = (match.group(1), match.group(2)) if match else (spec, "imagenet")
        if weights not in ("imagenet", "none"):
            weights = str(WEIGHTS / Path(weights).name)
        args += ["--backbone", backbone, "--weights", weights]
    if not metadata["training"]["config"].get("tta_flip", True):
        args.append("--no-tta")
    return name, args, bool(metadata["training"]["config"].get("fine_tune"))


def run(label: str, args: list[str], out: Path, cache: Path) -> dict:
    command = [sys.executable, "-m", "ml", "train", str(DATA), *args, "--out", str(out), "--cache-dir", str(cache)]
    print(f"== {label}: {' '.join(command[1:])}", flush=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} failed:\n{stdout[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    figures = {
        "wall_s": round(wall, 1),
        "timings_s": result["timings_s"],
        "val_top1": result["metrics"].get("val_top1"),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }
    print(f"   {json.dumps(figures)}", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--skip-default", action="store_true", help="only the head retrain (runs 3 and 4)")
    args = parser.parse_args()
    name, recipe, fine_tuned = default_recipe()
    work = Path(tempfile.mkdtemp(prefix="perf-training-"))
    figures: dict = {"default_artifact": name, "recipe": recipe + (["--fine-tune"] if fine_tuned else []),
                     "cpu_count": os.cpu_count(), "data": str(DATA), "runs": {}}
    try:
        if not args.skip_default:
            full = recipe + (["--fine-tune"] if fine_tuned else [])
            figures["runs"]["default_cold"] = run("default model, cold cache", full, work / "default_cold", work / "cache_default")
            figures["runs"]["default_warm"] = run("default model, warm cache", full, work / "default_warm", work / "cache_default")
        figures["runs"]["head_cold"] = run("head only, cold cache", recipe, work / "head_cold", work / "cache_head")
        figures["runs"]["head_warm"] = run("head only, warm cache", recipe, work / "head_warm", work / "cache_head")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runs = figures["runs"]
    figures["head_retrain_speedup"] = round(runs["head_cold"]["wall_s"] / runs["head_warm"]["wall_s"], 1)
    figures["head_retrain_speedup_train_only"] = round(
        runs["head_cold"]["timings_s"]["total_s"] / runs["head_warm"]["timings_s"]["total_s"], 1)
    if "default_cold" in runs:
        figures["default_retrain_speedup"] = round(runs["default_cold"]["wall_s"] / runs["default_warm"]["wall_s"], 1)
    h.report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
