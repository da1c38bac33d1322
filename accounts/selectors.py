"""Reads about a user's account: their API tokens, the answers in their data export."""

import json
import shutil
import tempfile
import zipfile
from pathlib import PurePosixPath

from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.utils import timezone
from knox.models import AuthToken

from classifier import selectors as classifier_selectors


def api_tokens_for_user(user) -> QuerySet:
    """The user's tokens, newest first. Only a prefix (token_key) and the digest are stored."""
    return AuthToken.objects.filter(user=user).order_by("-created")


def api_token_representation(token, *, current=None) -> dict:
    return {
        "id": token.token_key,
        "created": token.created.isoformat(),
        "expiry": token.expiry.isoformat() if token.expiry else None,
        "current": current is not None and token.digest == current.digest,
    }


def account_export_file(user, *, photo_answers):
    """A zip of the user's originals (originals/<id>.<ext>) and answers.json: for each photo,
    `photo_answers(photo)` (the API's representation: predictions, label), its label history
    and the name of its original in the zip. Written to a temporary file, not memory."""
    photos = classifier_selectors.photo_list_for_user(user).prefetch_related("corrections")
    answers = []
    archive_file = tempfile.TemporaryFile()
    with zipfile.ZipFile(archive_file, "w", compression=zipfile.ZIP_STORED) as archive:  # JPEGs do not shrink
        for photo in photos:
            name = f"originals/{photo.pk}{PurePosixPath(photo.original.name).suffix.lower() or '.jpg'}"
            try:
                with default_storage.open(photo.original.name, "rb") as source, archive.open(name, "w") as target:
                    shutil.copyfileobj(source, target, 1024 * 1024)
            except (FileNotFoundError, OSError):
                name = None  # the file is gone from storage: the answers are still exported
            answers.append({
                **photo_answers(photo),
                "original_in_zip": name,
                "label_history": [
                    {"old_label": c.old_label or None, "new_label": c.new_label,
                     "confirmation": c.is_confirmation, "created": c.created_at.isoformat()}
                    for c in photo.corrections.all()
                ],
            })
        document = {"username": user.get_username(), "exported": timezone.now().isoformat(), "photos": answers}
        archive.writestr("answers.json", json.dumps(document, indent=2))
    archive_file.seek(0)
    return archive_file
