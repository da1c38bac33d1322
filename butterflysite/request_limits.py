"""One bound on the size of every request that carries files (the upload form and the API).

- RequestSizeLimitMiddleware refuses a multipart request whose Content-Length is over
  UPLOAD_MAX_REQUEST_BYTES before anything reads its body: 413 with a readable message (the
  upload page with the error under the field, or JSON for the API).
- BoundedUploadHandler (the only FILE_UPLOAD_HANDLERS entry) enforces the same bound while the
  body streams in, for a body whose length was not known beforehand (Django's WSGI request
  already stops reading at Content-Length; a parser fed another stream does not): it raises
  UploadRequestTooLarge (a RequestDataTooBig: handler400 answers it). It also keeps at most
  UPLOAD_MAX_BYTES + 1 bytes of any one file: the rest is read and dropped, and the upload
  service refuses the file as too large. Files are held in memory up to
  FILE_UPLOAD_MAX_MEMORY_SIZE, then in an anonymous temporary file (unlinked when created), so a
  worker that is killed mid-upload leaves nothing on disk.
"""

from __future__ import annotations

import tempfile

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

from butterflysite.middleware import is_api

MB = 1024 * 1024


class UploadRequestTooLarge(RequestDataTooBig):
    """The files of one request add up to more than UPLOAD_MAX_REQUEST_BYTES."""


def readable_size(size: int) -> str:
    """For messages: 1 GB, 201 MB, 48 KB (binary units, as the settings are written)."""
    if size >= 1024 * MB:
        return f"{size / (1024 * MB):.3g} GB"
    return f"{size / MB:.0f} MB" if size >= MB else f"{size // 1024} KB"


def too_large_message() -> str:
    return (
        f"The upload is larger than {readable_size(settings.UPLOAD_MAX_REQUEST_BYTES)} in all; send fewer photos "
        f"at once (at most {settings.UPLOAD_MAX_FILES}, each up to {readable_size(settings.UPLOAD_MAX_BYTES)})."
    )


def _is_upload_page(request) -> bool:
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return False
    return match.view_name == "classifier:upload"


def too_large_response(request):
    """413: JSON for the API, the upload page with the message for a signed-in user's form post,
    plain text elsewhere."""
    message = too_large_message()
    if is_api(request):
        response = JsonResponse({"detail": message}, status=413)
    elif _is_upload_page(request) and getattr(request, "user", None) is not None and request.user.is_authenticated:
        from classifier.views import upload_form_error

        response = upload_form_error(request, message, status=413)
    else:
        response = HttpResponse(message, content_type="text/plain; charset=utf-8", status=413)
    return response


def _carries_files(request) -> bool:
    return request.META.get("CONTENT_TYPE", "").lower().startswith("multipart/")


def _content_length(request) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


class RequestSizeLimitMiddleware:
    """Refuses a multipart request whose Content-Length is over the bound before anything reads
    its body. After the authentication and message middleware (the upload page needs
    request.user); its answer comes before the CSRF check, which would read the body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _carries_files(request):
            length = _content_length(request)
            if length is not None and length > settings.UPLOAD_MAX_REQUEST_BYTES:
                return too_large_response(request)
        return self.get_response(request)


class BoundedUploadHandler(FileUploadHandler):
    """Stores each file of a multipart body, within UPLOAD_MAX_BYTES + 1 bytes per file and
    UPLOAD_MAX_REQUEST_BYTES for the files of the request together."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.request_bytes = 0
        return None

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.file_bytes = 0
        # Memory first, then an anonymous file in FILE_UPLOAD_TEMP_DIR (None: the system's).
        self.file = tempfile.SpooledTemporaryFile(
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, dir=settings.FILE_UPLOAD_TEMP_DIR
        )

    def receive_data_chunk(self, raw_data, start):
        self.request_bytes += len(raw_data)
        if self.request_bytes > settings.UPLOAD_MAX_REQUEST_BYTES:
            self.file.close()
            raise UploadRequestTooLarge(too_large_message())
        keep = settings.UPLOAD_MAX_BYTES + 1 - self.file_bytes
        if keep > 0:
            # One byte over the limit is enough for the upload service to refuse the file.
            self.file.write(raw_data[:keep])
            self.file_bytes += min(len(raw_data), keep)
        return None

    def file_complete(self, file_size):
        self.file.seek(0)
        return UploadedFile(
            file=self.file,
            name=self.file_name,
            content_type=self.content_type,
            size=self.file_bytes,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )

    def upload_interrupted(self):
        if getattr(self, "file", None) is not None:
            self.file.close()
