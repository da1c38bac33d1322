"""python manage.py export_labels DIR: corrected and confirmed photos as an ImageFolder tree
(DIR/<label>/<photo id>.<ext>) plus DIR/manifest.csv (photo id, label, kind, who, when)."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from retraining import services


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("destination", help="a folder that does not exist yet, or is empty")
        parser.add_argument("--include-not-butterfly", action="store_true", help='export "not a butterfly" too')
        parser.add_argument("--include-flagged", action="store_true", help="export labels flagged for a second look too")

    def handle(self, *args, **options):
        try:
            result = services.labels_export(destination=options["destination"],
                                            include_not_butterfly=options["include_not_butterfly"],
                                            include_flagged=options["include_flagged"])
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(f"{result.n_photos} photos exported to {result.directory} (manifest: {result.manifest})")
