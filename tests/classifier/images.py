"""Real image bytes for tests, made with Pillow."""

import io

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image


def image_bytes(fmt="JPEG", size=(64, 48), color=(200, 120, 40), mode="RGB", **save_kwargs) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt, **save_kwargs)
    return out.getvalue()


def upload(name="photo.jpg", fmt="JPEG", content=None, content_type="image/jpeg", **kwargs) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content if content is not None else image_bytes(fmt, **kwargs), content_type=content_type)
