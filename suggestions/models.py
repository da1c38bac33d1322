"""What a photo's owner says it shows when the answer looks wrong ("Not right?").

Append-only: a suggestion is created, never edited; it changes no label. Staff read it in the admin and
the review queue and decide (a LabelCorrection, as for any staff label).
"""

from django.conf import settings
from django.db import models

ANOTHER_SPECIES = "another species"  # a butterfly or moth the catalogue does not list


class UserSuggestion(models.Model):
    photo = models.ForeignKey("classifier.Photo", on_delete=models.CASCADE, related_name="suggestions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="suggestions")
    # A catalogue key (ml.species), "not a butterfly" or "another species".
    label = models.CharField(max_length=200, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.user} on photo {self.photo_id}: {self.label}"
