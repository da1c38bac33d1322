from django.core.management.base import BaseCommand

from classifier import services


class Command(BaseCommand):
    help = (
        "Delete stored photo files (originals/, display/, thumbnails/) that no photo refers to and that are "
        "older than --older-than seconds (default settings.MEDIA_ORPHAN_GRACE_SECONDS): left by an upload "
        "killed between writing its files and committing. Celery beat runs the same sweep every "
        "MEDIA_ORPHAN_SWEEP_INTERVAL_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, default=None, help="seconds since the file was written")
        parser.add_argument("--limit", type=int, default=1000, help="at most this many files per run")

    def handle(self, *args, older_than, limit, **options):
        deleted = services.media_sweep_orphans(older_than_seconds=older_than, limit=limit)
        self.stdout.write(f"deleted {len(deleted)} orphan file(s)" + (f": {deleted[:20]}" if deleted else ""))
