"""Serving private media: only through views that have already checked who may see the photo."""

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, Http404, HttpResponseRedirect

KINDS = {"original": "original", "display": "display", "thumbnail": "thumbnail"}


def photo_file_response(photo, kind: str):
    field = KINDS.get(kind)
    if field is None:
        raise Http404("No such image.")
    name = getattr(photo, field).name or photo.original.name
    if not isinstance(default_storage, FileSystemStorage):
        # Private bucket: a short-lived signed URL (AWS_QUERYSTRING_AUTH). The browser may reuse
        # the redirect only while the URL it points to is still valid.
        response = HttpResponseRedirect(default_storage.url(name))
        lifetime = getattr(settings, "AWS_QUERYSTRING_EXPIRE", 300)
        response["Cache-Control"] = f"private, max-age={max(0, lifetime // 2)}"
        return response
    else:
        try:
            handle = default_storage.open(name, "rb")
        except (FileNotFoundError, OSError):
            raise Http404("No such image.") from None
        content_type = "image/jpeg"
        if field == "original":
            content_type = {"PNG": "image/png", "WEBP": "image/webp"}.get(photo.image_format, "image/jpeg")
        response = FileResponse(handle, content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response
