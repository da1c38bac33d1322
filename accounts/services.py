"""Writes about accounts: API tokens (django-rest-knox: hashed, expiring) and account deletion."""

from django.db import transaction
from knox.models import AuthToken


class WrongPassword(Exception):
    pass


def api_token_create(*, user) -> tuple[AuthToken, str]:
    """A new token: (its row, the token itself, shown once; only its digest is stored).
    Past REST_KNOX["TOKEN_LIMIT_PER_USER"] the oldest tokens are revoked to make room."""
    from knox.settings import knox_settings

    limit = knox_settings.TOKEN_LIMIT_PER_USER
    with transaction.atomic():
        if limit:
            keep = list(AuthToken.objects.filter(user=user).order_by("-created").values_list("digest", flat=True)[: limit - 1])
            AuthToken.objects.filter(user=user).exclude(digest__in=keep).delete()
        return AuthToken.objects.create(user=user)


def api_token_revoke(*, user, token_id: str) -> bool:
    """Revokes the user's token whose id (token_key) is `token_id`; False when there is none."""
    deleted, _ = AuthToken.objects.filter(user=user, token_key=token_id).delete()
    return deleted > 0


def api_tokens_revoke_all(*, user) -> int:
    deleted, _ = AuthToken.objects.filter(user=user).delete()
    return deleted


def account_delete(*, user, password: str) -> None:
    """Deletes the account, its photos, predictions and tokens; every stored file of its photos
    (original, display copy, thumbnail) is deleted once the deletion commits (classifier.signals).
    Raises WrongPassword, changing nothing, unless `password` is the account's."""
    if not user.check_password(password):
        raise WrongPassword("That is not your password; nothing was deleted.")
    with transaction.atomic():
        user.delete()
