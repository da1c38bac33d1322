"""Image bytes, apart from the ORM: which uploads are accepted (JPEG, PNG or WebP, one frame,
within a pixel cap, nothing appended) and the re-encoded copies pages show."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
DISPLAY_MAX_SIDE = 1280
THUMBNAIL_MAX_SIDE = 320


class ImageRejected(ValueError):
    """The bytes are not an acceptable photo. `code`: invalid_image, animated, too_many_pixels
    (with `width` and `height` when they are known) or trailing_data."""

    def __init__(self, code: str, width: int | None = None, height: int | None = None):
        super().__init__(code)
        self.code, self.width, self.height = code, width, height


@dataclass
class CheckedImage:
    content: bytes
    image_format: str
    width: int
    height: int
    sha256: str


def png_end(content: bytes) -> int:
    """Offset just after the IEND chunk (chunk: 4-byte length, 4-byte type, data, 4-byte CRC)."""
    offset = 8
    while offset + 8 <= len(content):
        length = int.from_bytes(content[offset:offset + 4], "big")
        kind = content[offset + 4:offset + 8]
        offset += 12 + length
        if kind == b"IEND":
            return offset
    return len(content)


def webp_end(content: bytes) -> int:
    """RIFF container: 'RIFF', little-endian size of what follows, padded to an even length."""
    size = int.from_bytes(content[4:8], "little")
    return 8 + size + (size & 1)


def jpeg_end(content: bytes) -> int:
    """Offset just after the EOI marker: walks the marker segments and skips entropy-coded data
    (where 0xFF is followed by 0x00 or a restart marker); progressive files have several scans."""
    offset, size = 2, len(content)
    while offset + 1 < size:
        if content[offset] != 0xFF:
            return size  # not a marker where one must be: Pillow's decode judges the stream
        marker = content[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0xD9:  # EOI
            return offset + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        offset += 2 + int.from_bytes(content[offset + 2:offset + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                offset = content.find(b"\xff", offset)
                if offset < 0 or offset + 1 >= size:
                    return size
                following = content[offset + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    offset += 1 if following == 0xFF else 2
                    continue
                break
    return size


IMAGE_END = {"JPEG": jpeg_end, "PNG": png_end, "WEBP": webp_end}


def has_trailing_data(content: bytes, image_format: str) -> bool:
    """Bytes after the image's own end marker (other than zero padding some encoders add): a
    polyglot, e.g. a PNG with an HTML page or a ZIP archive appended, which browsers or other
    tools could read as something else. The original is stored untouched, so it is refused."""
    end = IMAGE_END[image_format](content)
    return bool(content[end:].strip(b"\x00"))


def check_image(content: bytes, *, max_pixels: int) -> CheckedImage:
    """Decodes the content with Pillow: JPEG, PNG or WebP, one frame, at most `max_pixels`, with
    nothing after the image data. Raises ImageRejected."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            image_format = image.format
            width, height = image.size
            frames = getattr(image, "n_frames", 1)
            if image_format == "MPO" or (image_format in ACCEPTED_FORMATS and frames != 1):
                raise ImageRejected("animated")
            if image_format not in ACCEPTED_FORMATS:
                raise ImageRejected("invalid_image")
            if width * height > max_pixels:
                raise ImageRejected("too_many_pixels", width, height)
            image.verify()
        with Image.open(io.BytesIO(content)) as image:
            if image.format == "JPEG":
                # The whole entropy-coded stream is still read (truncation and corruption are
                # caught), but libjpeg skips most of the inverse DCT: a 12 MP photo in ~1/5 the time.
                image.draft(None, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError:
        # Pillow refuses to even open images over twice its own pixel limit.
        raise ImageRejected("too_many_pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageRejected("invalid_image") from None
    if has_trailing_data(content, image_format):
        raise ImageRejected("trailing_data")
    return CheckedImage(content, image_format, width, height, hashlib.sha256(content).hexdigest())


def reencode(content: bytes, max_side: int) -> bytes:
    """Upright (EXIF-transposed) RGB JPEG no larger than max_side, with no EXIF or other metadata."""
    with Image.open(io.BytesIO(content)) as image:
        if image.format == "JPEG":
            # Draft mode: libjpeg decodes at 1/2, 1/4 or 1/8 scale, still at least the target size
            # (it must happen before exif_transpose loads the image); LANCZOS takes it from there.
            # A 4000x3000 upload: display from a 2000x1500 decode, thumbnail from 500x375.
            scale = min(1.0, max_side / max(image.size))
            image.draft(None, (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85, optimize=True)
        return out.getvalue()
