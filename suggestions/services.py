"""Writes: a suggestion is only ever created."""

from django.core.exceptions import ValidationError

from suggestions import selectors
from suggestions.models import UserSuggestion


def suggestion_create(*, photo, user, label) -> UserSuggestion:
    """Store `user`'s suggestion for their own `photo`. A label outside suggestion_choices() raises
    ValidationError with a message a person can act on; nothing is written then."""
    if photo.owner_id != user.pk:
        raise ValidationError("Only the photo's owner can suggest what it shows.")
    label = label.strip() if isinstance(label, str) else label
    if not isinstance(label, str) or label not in selectors.suggestion_labels():
        raise ValidationError(
            "Choose a species from the catalogue (e.g. 'monarch'), 'not a butterfly' or 'another species'"
            f"; {label!r} is none of them."
        )
    return UserSuggestion.objects.create(photo=photo, user=user, label=label)
