from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _register_shipped_models(sender, using="default", **kwargs):
    # Signal handlers hold no logic: the service registers what artifacts/manifest.json lists.
    from classifier.services import model_versions_register_shipped

    model_versions_register_shipped(using=using)


def _queue_unidentified_photos(sender, using="default", **kwargs):
    # Photos classified before answers existed get theirs from the workers (no manual step).
    from classifier.services import photos_queue_unidentified

    if using == "default":
        photos_queue_unidentified()


class ClassifierConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "classifier"
    verbose_name = "Butterfly classifier"

    def ready(self):
        post_migrate.connect(_register_shipped_models, sender=self, dispatch_uid="classifier-register-shipped")
        post_migrate.connect(_queue_unidentified_photos, sender=self, dispatch_uid="classifier-queue-unidentified")
        from classifier import signals  # noqa: F401  (a deleted photo's files go too)
