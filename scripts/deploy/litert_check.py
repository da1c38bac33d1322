#!/usr/bin/env python3
"""Export shipped Keras artifacts to LiteRT (.tflite) and prove they classify the same photos the
same way, so production could serve them without TensorFlow (a far smaller slug and dyno).

    # 1. with the project venv (TensorFlow + Keras): export, and score the Keras models
    .venv/bin/python scripts/deploy/litert_check.py keras --out /tmp/litert
    # 2. with a venv holding only ai-edge-litert, numpy, pillow: score the .tflite models, compare
    /tmp/litert-venv/bin/python scripts/deploy/litert_check.py litert --out /tmp/litert

Both steps decode and resize photos with ml/images.py (numpy + Pillow only), on every photo of
../shared/data/butterflies50/test. Step 2 prints top-1 accuracy of each runtime, how often the
two agree on the top label, and the largest probability difference; it exits 1 if accuracy
differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEFAULT_TEST = ROOT.parent / "shared" / "data" / "butterflies50" / "test"
BATCH = 32


def photos(test_dir: Path, classes: list[str]):
    items = []
    for index, name in enumerate(classes):
        folder = test_dir / name
        if folder.is_dir():
            items += [(path, index) for path in sorted(folder.iterdir()) if path.is_file()]
    return items


def load_images(items, size):
    import numpy as np

    from ml import images

    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        yield np.stack([images.to_array(path, size) for path, _ in chunk])


def artifacts() -> list[str]:
    manifest = json.loads((ROOT / "artifacts" / "manifest.json").read_text())
    return manifest["artifacts"]


def run_keras(out: Path, test_dir: Path) -> None:
    import numpy as np

    from ml.predict import Predictor

    for name in artifacts():
        predictor = Predictor.load(ROOT / "artifacts" / name, runtime="keras")  # exports from the Keras model
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        predictor.model.export(str(target / "model.tflite"), format="litert", verbose=False)
        (target / "metadata.json").write_text((ROOT / "artifacts" / name / "metadata.json").read_text())
        items = photos(test_dir, predictor.classes)
        started = time.perf_counter()
        probabilities = np.concatenate([predictor.predict_arrays(b) for b in load_images(items, predictor.metadata.input_size)])
        seconds = time.perf_counter() - started
        np.savez(target / "keras.npz", probabilities=probabilities, labels=np.array([label for _, label in items]))
        print(f"{name}: exported {target / 'model.tflite'} ({(target / 'model.tflite').stat().st_size / 1e6:.1f} MB), "
              f"scored {len(items)} photos with Keras in {seconds:.1f}s")


class LiteRTModel:
    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=int(os.environ.get("LITERT_THREADS", "0")) or None)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, batch):
        import numpy as np

        self.interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.input["index"], batch.astype(np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


def run_litert(out: Path, test_dir: Path) -> int:
    import numpy as np

    from ml import metrics

    failed = False
    for name in artifacts():
        target = out / name
        metadata = json.loads((target / "metadata.json").read_text())
        reference = np.load(target / "keras.npz")
        model = LiteRTModel(target / "model.tflite")
        items = photos(test_dir, metadata["classes"])
        started = time.perf_counter()
        probabilities = np.concatenate([model(b) for b in load_images(items, metadata["input_size"])])
        seconds = time.perf_counter() - started
        labels = reference["labels"]
        keras_top = reference["probabilities"].argmax(1)
        litert_top = probabilities.argmax(1)
        figures = {
            "artifact": name,
            "photos": len(items),
            "keras_top1": round(metrics.top_k_accuracy(reference["probabilities"], labels, 1), 4),
            "litert_top1": round(metrics.top_k_accuracy(probabilities, labels, 1), 4),
            "top1_agreement": round(float((keras_top == litert_top).mean()), 4),
            "max_abs_probability_diff": float(np.abs(probabilities - reference["probabilities"]).max()),
            "litert_seconds": round(seconds, 1),
            "tflite_mb": round((target / "model.tflite").stat().st_size / 1e6, 1),
        }
        print(json.dumps(figures))
        failed |= figures["keras_top1"] != figures["litert_top1"]
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["keras", "litert"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--test-dir", type=Path, default=DEFAULT_TEST)
    args = parser.parse_args()
    if args.step == "keras":
        run_keras(args.out, args.test_dir)
        return 0
    return run_litert(args.out, args.test_dir)


if __name__ == "__main__":
    sys.exit(main())
