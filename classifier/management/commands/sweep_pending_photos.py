from django.core.management.base import BaseCommand

from classifier import services


class Command(BaseCommand):
    help = (
        "Send the classify task again for photos pending longer than --older-than seconds "
        "(default settings.CLASSIFIER_SWEEP_PENDING_SECONDS): their task was lost, e.g. the broker "
        "was down at upload. Celery beat runs the same sweep every CLASSIFIER_SWEEP_INTERVAL_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, default=None, help="seconds a photo has been pending")
        parser.add_argument("--limit", type=int, default=500, help="at most this many photos per run")

    def handle(self, *args, older_than, limit, **options):
        sent = services.photos_sweep_pending(older_than_seconds=older_than, limit=limit)
        self.stdout.write(f"sent {len(sent)} pending photo(s) for classification again" + (f": {sent}" if sent else ""))
