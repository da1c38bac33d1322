from django.core.management.base import BaseCommand

from classifier import inference, services


class Command(BaseCommand):
    help = (
        "Queue the classify task for every finished photo that has no identification yet (photos "
        "classified before answers existed); the workers compute each answer from the stored "
        "predictions. migrate runs this after registering the shipped models."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=None, help="at most this many photos")

    def handle(self, *args, limit, **options):
        if not inference.identifier_installed():
            self.stdout.write("no identifier installed (settings.ML_IDENTIFIER_DIR): nothing queued")
            return
        queued = services.photos_queue_unidentified(limit=limit)
        self.stdout.write(f"queued {len(queued)} photo(s) for identification")
