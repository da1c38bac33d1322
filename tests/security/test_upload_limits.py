"""The one bound on requests that carry files (butterflysite/request_limits.py): refused from
Content-Length before the body is read (form and API, 413 with a readable message), enforced
while streaming by the upload handler, at most UPLOAD_MAX_BYTES + 1 bytes kept of any file, and
no named temporary file on disk while a large file streams in."""

from __future__ import annotations

import io
import re

import pytest
from django.core.files.uploadhandler import load_handler
from django.http.multipartparser import MultiPartParser
from django.test import Client
from django.urls import reverse

from butterflysite.request_limits import UploadRequestTooLarge
from classifier.models import Photo
from tests.classifier.factories import UserFactory
from tests.classifier.images import image_bytes

pytestmark = pytest.mark.django_db

BOUNDARY = "BoUnDaRy"


@pytest.fixture
def small_limits(settings):
    """Limits small enough to cross with test-sized bodies."""
    settings.UPLOAD_MAX_BYTES = 200 * 1024
    settings.UPLOAD_MAX_REQUEST_BYTES = 500 * 1024
    settings.RATELIMIT_ENABLE = False
    return settings


class UnreadableBody(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def readable(self):
        return True

    def read(self, size=-1):
        raise AssertionError("the body of an oversized request was read")

    readline = readinto = read


def _files_in(root):
    return [p for p in root.rglob("*") if p.is_file()]


def _multipart(files: list[tuple[str, bytes]], fields: dict | None = None) -> bytes:
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for index, (field, content) in enumerate(files):
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="p{index}.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode() + content + b"\r\n"
        )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _signed_in(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get(reverse("classifier:upload")).content.decode()
    return client, re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def test_form_post_over_the_bound_is_413_on_the_upload_page_without_reading_the_body(small_limits, media_root):
    client, token = _signed_in(UserFactory())
    response = client.generic(
        "POST", reverse("classifier:upload"), b"",
        CONTENT_TYPE=f"multipart/form-data; boundary={BOUNDARY}",
        CONTENT_LENGTH=str(1024 ** 3), **{"wsgi.input": UnreadableBody()},
    )
    html = response.content.decode()
    assert response.status_code == 413
    assert "The upload is larger than 500 KB in all; send fewer photos at once (at most 20, each up to 200 KB)." in html
    assert 'id="upload-form"' in html
    assert Photo.objects.count() == 0 and _files_in(media_root) == []
    # The page keeps working: the same session uploads a photo right after.
    body = _multipart([("images", image_bytes())], {"csrfmiddlewaretoken": token})
    ok = client.generic("POST", reverse("classifier:upload"), body, content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert ok.status_code == 302 and Photo.objects.count() == 1


def test_api_post_over_the_bound_is_413_json_without_reading_the_body(small_limits, api_client):
    api_client.force_authenticate(UserFactory())
    response = api_client.generic(
        "POST", reverse("classifier_api:photo_list"), b"", content_type=f"multipart/form-data; boundary={BOUNDARY}",
        CONTENT_LENGTH=str(1024 ** 3), **{"wsgi.input": UnreadableBody()},
    )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("The upload is larger than 500 KB in all; send fewer photos")


def test_the_bound_counts_the_whole_request_not_one_file(small_limits, media_root):
    # Three files each under UPLOAD_MAX_BYTES, together over UPLOAD_MAX_REQUEST_BYTES.
    client, token = _signed_in(UserFactory())
    body = _multipart([("images", b"\xff" * 190 * 1024)] * 3, {"csrfmiddlewaretoken": token})
    response = client.generic("POST", reverse("classifier:upload"), body,
                              content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == 413 and Photo.objects.count() == 0 and _files_in(media_root) == []


def test_default_bound_is_every_file_at_its_limit_plus_a_margin(settings):
    from importlib import reload

    import butterflysite.settings as module

    values = reload(module)
    assert values.UPLOAD_MAX_REQUEST_BYTES == values.UPLOAD_MAX_BYTES * values.UPLOAD_MAX_FILES + 1024 * 1024
    assert values.FILE_UPLOAD_HANDLERS == ["butterflysite.request_limits.BoundedUploadHandler"]


def _parse(body: bytes, content_length: int, settings):
    handlers = [load_handler(path) for path in settings.FILE_UPLOAD_HANDLERS]
    meta = {"CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}", "CONTENT_LENGTH": str(content_length)}
    return MultiPartParser(meta, io.BytesIO(body), handlers).parse()


class CountingStream(io.RawIOBase):
    """`total` bytes of one file's multipart body, made on demand; counts what was read."""

    def __init__(self, total: int):
        head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n").encode()
        self.head, self.total, self.position = head, total, 0

    def readable(self):
        return True

    def read(self, size=-1):
        size = 64 * 1024 if size is None or size < 0 else size
        if self.position >= self.total:
            return b""
        chunk = (self.head if self.position == 0 else b"") + b"\xab" * size
        chunk = chunk[: min(size, self.total - self.position)]
        self.position += len(chunk)
        return chunk


def test_while_streaming_the_handler_stops_at_the_bound(small_limits):
    # A body longer than its headers said (or of unknown length): the parser reads the stream to
    # its end unless a handler stops it; ours stops just past UPLOAD_MAX_REQUEST_BYTES.
    stream = CountingStream(total=50 * 1024 * 1024)
    handlers = [load_handler(path) for path in small_limits.FILE_UPLOAD_HANDLERS]
    meta = {"CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}", "CONTENT_LENGTH": "1000"}
    with pytest.raises(UploadRequestTooLarge):
        MultiPartParser(meta, stream, handlers).parse()
    assert stream.position < small_limits.UPLOAD_MAX_REQUEST_BYTES + 1024 * 1024


def test_handler_keeps_at_most_the_file_limit_plus_one_byte(small_limits):
    limit = small_limits.UPLOAD_MAX_BYTES
    content = bytes(range(256)) * (300 * 1024 // 256)
    body = _multipart([("image", content)])
    _, files = _parse(body, len(body), small_limits)
    kept = files["image"]
    assert kept.size == limit + 1 and kept.read() == content[: limit + 1]


def test_api_refuses_the_capped_file_as_too_large(small_limits, api_client):
    api_client.force_authenticate(UserFactory())
    body = _multipart([("image", image_bytes(size=(64, 48)) + b"\0" * 300 * 1024)])
    response = api_client.generic("POST", reverse("classifier_api:photo_list"), body,
                                  content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == 413 and "is larger than" in response.json()["detail"]
    assert Photo.objects.count() == 0


def test_a_file_past_the_memory_size_streams_to_an_anonymous_temporary_file(settings, tmp_path):
    # On disk, but with no name in FILE_UPLOAD_TEMP_DIR: a killed worker leaves nothing behind.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    temp_dir = tmp_path / "uploads"
    temp_dir.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(temp_dir)
    content = b"\x5a" * (1024 * 1024)
    body = _multipart([("image", content)])
    _, files = _parse(body, len(body), settings)
    kept = files["image"]
    assert kept.file._rolled, "a file over FILE_UPLOAD_MAX_MEMORY_SIZE should be on disk, not in memory"
    assert list(temp_dir.iterdir()) == []
    assert kept.read() == content
