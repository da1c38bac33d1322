"""The retraining loop at the scale of butterflies50, for the figures in docs/retraining.md.

A scratch install (its own SQLite database, media, feature cache and artifacts under --out):
1. a base model (the small MobileNet of ../shared/weights, all 49 species) that barely knows
   viceroy (2 training photos) and has 60 monarch photos fewer;
2. users upload 60 other viceroy photos; the base model classifies them; staff correct them
   (the admin's bulk-correction service) and give flagged labels their second look;
3. `manage.py retrain` trains, evaluates both versions on the 980 benchmark test photos plus the
   held-out slice of the labels, and promotes or not;
4. users upload the 60 monarch photos and staff mislabel them "viceroy" (corrupted labels);
   `manage.py retrain --include-flagged` trains on them anyway; the rule must refuse it.

    flock /tmp/butterflysite-bench.lock .venv/bin/python scripts/retraining_demo.py --out /tmp/retrain-demo
"""

import argparse
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# The corrupted labels: monarchs called viceroy, the look-alike mix-up a hurried bulk action makes.
RARE, CORRUPTED, WRONG_LABEL = "viceroy", "monarch", "viceroy"
N_UPLOADS = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/retrain-demo")
    parser.add_argument("--backbone", default="mobilenet_0.50_160")
    parser.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_0.50_160_imagenet_no_top.weights.h5"))
    args = parser.parse_args()
    out = Path(args.out)
    for part in ("var", "base", "models", "retrained", "summary.json"):  # the feature cache is kept
        path = out / part
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update({
        "BUTTERFLYSITE_VAR_DIR": str(out / "var"), "DJANGO_SETTINGS_MODULE": "butterflysite.settings",
        "RETRAIN_OUTPUT_DIR": str(out / "retrained"), "RETRAIN_CACHE_DIR": str(out / "cache"),
        "RETRAIN_BASE_DATA_DIR": str(out / "base" / "train"),
        "RETRAIN_BENCHMARK_DIR": str(SHARED / "data" / "butterflies50" / "test"),
        "RETRAIN_WEIGHTS_DIR": str(Path(args.weights).parent),
    })
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    from classifier import services
    from classifier.models import ModelVersion, Photo
    from ml.train import BackboneSpec, TrainConfig, train
    from retraining.models import RetrainRun

    figures = {"command": " ".join(sys.argv)}
    call_command("migrate", verbosity=0)
    train_root = SHARED / "data" / "butterflies50" / "train"
    base_dir = out / "base" / "train"
    spare = {}
    for species in sorted(p.name for p in train_root.iterdir() if p.is_dir()):
        photos = sorted((train_root / species).iterdir())
        if species == RARE:
            keep, spare[species] = photos[:2], photos[2:2 + N_UPLOADS]
        elif species == CORRUPTED:
            keep, spare[species] = photos[N_UPLOADS:], photos[:N_UPLOADS]
        else:
            keep = photos
        (base_dir / species).mkdir(parents=True)
        for photo in keep:
            (base_dir / species / photo.name).symlink_to(photo)

    tick = time.perf_counter()
    train(base_dir, [BackboneSpec(args.backbone, args.weights)],
          TrainConfig(cache_dir=str(out / "cache"), progress=False, verbose=0), name="butterflies_demo",
          out_dir=out / "models" / "butterflies_demo")
    figures["base_training_s"] = round(time.perf_counter() - tick, 1)
    ModelVersion.objects.update(is_active=False, is_default=False)
    base = services.model_version_register(artifact_dir=out / "models" / "butterflies_demo", active=True, default=True)

    users = get_user_model().objects
    staff = users.create_user("staff", password="demo-password-1", is_staff=True, is_superuser=True)
    uploader = users.create_user("uploader", password="demo-password-2")

    def upload_and_classify(paths):
        photos = []
        for start in range(0, len(paths), 10):
            photos += services.photos_create(owner=uploader, uploads=[
                SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/jpeg") for p in paths[start:start + 10]])
        for photo in photos:
            services.photo_classify(photo_id=photo.pk)
        return photos

    def retrain(*options):
        stdout = io.StringIO()
        tick = time.perf_counter()
        call_command("retrain", "--user", "staff", *options, stdout=stdout)
        run = RetrainRun.objects.order_by("-pk").first()
        return {
            "command": "manage.py retrain --user staff " + " ".join(options),
            "wall_s": round(time.perf_counter() - tick, 1),
            "decision": run.get_decision_display(), "reason": run.decision_reason,
            "n_labelled_train": len(run.training_photo_ids), "n_labelled_holdout": len(run.holdout_photo_ids),
            "active": {part: run.baseline_report[part]["top1"] for part in ("benchmark", "holdout", "combined")},
            "new": {part: run.candidate_report[part]["top1"] for part in ("benchmark", "holdout", "combined")},
            "active_top5": run.baseline_report["benchmark"]["top5"], "new_top5": run.candidate_report["benchmark"]["top5"],
            "recall": {species: {"active": run.baseline_report["benchmark"]["per_class"][species]["recall"],
                                 "new": run.candidate_report["benchmark"]["per_class"][species]["recall"]}
                       for species in (RARE, CORRUPTED, WRONG_LABEL)},
            "timings_s": run.summary.get("timings_s"),
        }

    rare = upload_and_classify(spare[RARE])
    figures["base_wrong_on_uploads"] = sum(p.predictions.get(model_version=base).label != RARE for p in rare)
    services.labels_correct_bulk(photos=rare, new_label=RARE, corrected_by=staff)
    flagged = list(Photo.objects.filter(label=RARE).exclude(label_flag=""))
    figures["flagged_after_correction"] = len(flagged)
    for photo in flagged:  # the second look: staff confirm the species
        services.label_confirm(photo=photo, confirmed_by=staff)
    figures["good_retrain"] = retrain()

    monarchs = upload_and_classify(spare[CORRUPTED])
    services.labels_correct_bulk(photos=monarchs, new_label=WRONG_LABEL, corrected_by=staff)
    figures["corrupted_flagged"] = Photo.objects.filter(pk__in=[p.pk for p in monarchs]).exclude(label_flag="").count()
    figures["corrupted_retrain"] = retrain("--include-flagged")
    figures["default_after"] = str(ModelVersion.objects.get(is_default=True))
    (out / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
