"""A deleted photo's stored files (original, display copy, thumbnail) are deleted once the deletion
commits, however the photo was deleted: classifier.services.photo_delete, the admin, or the
cascade from deleting its owner. Deleting a missing file is harmless, so this may run twice."""

import logging

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from classifier.models import Photo

logger = logging.getLogger(__name__)


def photo_files_delete(names) -> None:
    for name in names:
        if name:
            try:
                default_storage.delete(name)
            except Exception:  # storage unreachable: the orphan sweep finds it later
                logger.warning("could not delete media file %s", name)


@receiver(post_delete, sender=Photo, dispatch_uid="classifier-photo-files-delete")
def _delete_files_of_deleted_photo(sender, instance, using="default", **kwargs):
    names = [instance.original.name, instance.display.name, instance.thumbnail.name]
    transaction.on_commit(lambda: photo_files_delete(names), using=using)
