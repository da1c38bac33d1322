from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _register_shipped_models(sender, using="default", **kwargs):
    # Signal handlers hold no logic: the service registers what artifacts/manifest.json lists.
    from classifier.services import model_versions_register_shipped

    model_versions_register_shipped(using=using)


class ClassifierConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "classifier"
    verbose_name = "Butterfly classifier"

    def ready(self):
        post_migrate.connect(_register_shipped_models, sender=self, dispatch_uid="classifier-register-shipped")
        from classifier import signals  # noqa: F401  (a deleted photo's files go too)
