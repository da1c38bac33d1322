"""A user's API tokens are revoked when their password changes, whichever way it changes (the
password change page, a reset link, the admin, `changepassword`)."""

from django.contrib.auth import get_user_model
from django.db.models.signals import pre_save
from django.dispatch import receiver

from accounts import services


@receiver(pre_save, sender=get_user_model(), dispatch_uid="accounts-revoke-tokens-on-password-change")
def _revoke_tokens_on_password_change(sender, instance, update_fields=None, **kwargs):
    # set_password() keeps the new raw password in _password until the save; a hash upgrade at
    # sign-in (same password) clears it before saving, so it revokes nothing.
    if instance.pk is not None and getattr(instance, "_password", None) is not None:
        services.api_tokens_revoke_all(user=instance)
