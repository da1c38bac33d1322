"""{% upload_limits as limits %}: what the upload form states and static/js/upload.js checks before sending
(the server checks the same settings again: forms.MultipleImageField, services.photos_create)."""

from django import template
from django.conf import settings

register = template.Library()

FORMATS = {"JPEG": ("image/jpeg", ".jpg,.jpeg"), "PNG": ("image/png", ".png"), "WebP": ("image/webp", ".webp")}


@register.simple_tag
def upload_limits():
    return {
        "max_files": settings.UPLOAD_MAX_FILES,
        "max_bytes": settings.UPLOAD_MAX_BYTES,
        "max_mb": f"{settings.UPLOAD_MAX_BYTES / (1024 * 1024):g}",
        "formats": ", ".join(list(FORMATS)[:-1]) + " or " + list(FORMATS)[-1],
        "mime_types": ",".join(mime for mime, _ in FORMATS.values()),
        "extensions": ",".join(ext for _, ext in FORMATS.values()),
    }
