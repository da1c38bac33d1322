"""python manage.py retrain: train a new version of the default model from the base data plus the
staff labels, compare it with the default on the same held-out photos, promote it if not worse."""

import json

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from retraining import services
from retraining.models import RetrainRun


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--include-flagged", action="store_true",
                            help="also train on labels flagged for a second look (left out by default)")
        parser.add_argument("--no-promote", action="store_true", help="evaluate only; never promote")
        parser.add_argument("--holdout-fraction", type=float, default=None,
                            help=f"share of each species' labelled photos held out (default {settings.RETRAIN_HOLDOUT_FRACTION})")
        parser.add_argument("--max-epochs", type=int, help="override the default model's head epochs")
        parser.add_argument("--user", help="username recorded as the requester")
        parser.add_argument("--reclassify", action="store_true",
                            help="after a promotion, classify every photo with the new version")
        parser.add_argument("--queue", action="store_true", help="queue it for a Celery worker instead of running here")

    def handle(self, *args, **options):
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r}")
        train_config = {"max_epochs": options["max_epochs"]} if options["max_epochs"] else {}
        kwargs = dict(requested_by=user, include_flagged=options["include_flagged"], promote=not options["no_promote"],
                      holdout_fraction=options["holdout_fraction"], train_config=train_config)
        try:
            if options["queue"]:
                run = services.retrain_run_request(**kwargs)
                self.stdout.write(f"queued {run}; follow it in the admin (Retraining > Retrain runs)")
                return
            run = services.retrain_run_create(**kwargs)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(f"{run}: training (progress is visible in the admin)…")
        run = services.retrain_run_execute(run_id=run.pk)
        if run.status == RetrainRun.Status.FAILED:
            raise CommandError(f"{run} failed: {run.error}")
        if run.status == RetrainRun.Status.CANCELLED:  # staff pressed Cancel on its page meanwhile
            raise CommandError(f"{run} was cancelled{f' by {run.cancelled_by}' if run.cancelled_by else ''}; "
                               "nothing was registered.")
        self.stdout.write(json.dumps(_summary(run), indent=2))
        if options["reclassify"] and run.decision == RetrainRun.Decision.PROMOTED:
            count = services.photos_reclassify(model_version_id=run.candidate_id)
            self.stdout.write(f"re-classified {count} photos with {run.candidate}")


def _summary(run):
    def figures(report):
        return {part: {"n": report[part]["n"], "top1": report[part]["top1"], "top5": report[part]["top5"]}
                for part in ("benchmark", "holdout", "combined") if part in report}

    return {
        "run": run.pk, "baseline": str(run.baseline), "candidate": str(run.candidate),
        "decision": run.get_decision_display(), "reason": run.decision_reason,
        "candidate_report": figures(run.candidate_report), "baseline_report": figures(run.baseline_report),
        "n_labelled_train": len(run.training_photo_ids), "n_labelled_holdout": len(run.holdout_photo_ids),
        "timings_s": run.summary.get("timings_s", {}),
    }
