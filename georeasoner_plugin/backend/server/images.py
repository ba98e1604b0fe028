"""The uploaded image: recognised by its first bytes, its header read, then decoded."""
from __future__ import annotations

import io
import warnings
from typing import NamedTuple, Optional

import numpy as np

from ..image_transport import is_webp, open_shared_capture
from .errors import ApiError

_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)


def sniff_image_type(data: bytes) -> Optional[str]:
    if is_webp(data):  # lossless WebP: what a remote client sends when /v1/info lists it
        return "WEBP"
    for signature, kind in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return kind
    return None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """PNG / JPEG / TIFF / WebP bytes -> (H, W, 3) uint8, or ApiError 413 / 415 / 400: the header
    first (probe_image), then the pixels (decode_image_file), as for an upload."""
    stream = io.BytesIO(data)
    return decode_image_file(stream, probe_image(stream, max_pixels), max_pixels)


def image_source(image_part, image_path: Optional[str], shared_dir: Optional[str]):
    """The uploaded image part, or the shared capture file `image_path` names (opened; the caller
    closes it): core/transport.py's "path" transport. ApiError 422 / 400 for a wrong combination or path."""
    from ..imagery import ImageryError

    if image_part is not None:
        if image_path is not None:
            raise ApiError(422, "malformed_form", "send either the image part or 'image_path' (a shared capture), "
                                                  "not both")
        return image_part
    if image_path is None:
        raise ApiError(422, "malformed_form", "the body needs exactly one part named 'image' (found 0): 'image' is "
                                              "the image file, 'request' the JSON with the question")
    if not shared_dir:
        raise ApiError(422, "no_shared_capture_dir", "this server has no shared capture folder, so 'image_path' "
                                                     "cannot be used; send the image part (or start the server "
                                                     "with --shared-capture-dir)")
    try:
        return open_shared_capture(image_path, shared_dir)
    except ImageryError as exc:
        raise ApiError(400, "bad_image_path", str(exc)) from None
    except OSError as exc:
        raise ApiError(400, "bad_image_path", f"{image_path} cannot be read ({exc.strerror or exc}); send the image "
                                              f"part instead") from None


class ImageHeader(NamedTuple):
    kind: str  # PNG, JPEG or TIFF
    width: int
    height: int
    eight_bit: bool  # decoded through Pillow's RGB conversion (else stretched like a raster: more memory)
    raw_offset: Optional[int] = None  # where the pixels start when they are stored as they are decoded


def raw_rgb_offset(image) -> Optional[int]:
    """Where an opened (not loaded) image keeps its pixels as plain 8-bit RGB rows, top to bottom,
    in one unbroken run of width * height * 3 bytes; None when they need decoding.

    That is the uncompressed TIFF of core/transport.py's loopback transport (Qt writes it as a few
    strips, one after the other): its pixels can then be used as they lie in the upload, with no
    decoder pass, no RGBX intermediate and no copy. Pillow has parsed the header and says where each
    strip lies and how it is coded ("raw", rawmode "RGB", top to bottom); only that layout qualifies.
    """
    if image.format != "TIFF" or image.mode != "RGB" or not image.tile:
        return None
    width, height = image.size
    row = width * 3
    start = expected = None
    top = 0
    for tile in image.tile:
        codec, extents, offset, args = tuple(tile)[:4]
        rawmode = args[0] if isinstance(args, tuple) else args
        stride = args[1] if isinstance(args, tuple) and len(args) > 1 else 0
        ystep = args[2] if isinstance(args, tuple) and len(args) > 2 else 1
        if codec != "raw" or rawmode != "RGB" or stride not in (0, row) or ystep != 1:
            return None
        left, upper, right, lower = extents
        if left != 0 or right != width or upper != top or lower <= upper or (expected is not None and offset != expected):
            return None
        start = offset if start is None else start
        expected = offset + (lower - upper) * row
        top = lower
    return start if top == height else None


def probe_image(stream, max_pixels: int) -> ImageHeader:
    """The upload's format, size and mode from its header, no pixel decoded; ApiError 400 / 413 / 415."""
    from PIL import Image

    from ..imagery import EIGHT_BIT_MODES

    stream.seek(0)
    head = stream.read(16)
    if not head:
        raise ApiError(400, "corrupt_image", "the image part is empty (0 bytes); attach the image file")
    kind = sniff_image_type(head)
    if kind is None:
        raise ApiError(415, "unsupported_image_type",
                       "the image is not PNG, JPEG, TIFF or WebP (judging by its first bytes); send it in one of those formats")
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the decoder the signature names: the bytes never reach any other image plugin.
            with Image.open(stream, formats=[kind]) as header:
                width, height, mode = header.size[0], header.size[1], header.mode
                raw_offset = raw_rgb_offset(header)
    except Image.DecompressionBombError:
        raise ApiError(413, "image_too_large", f"the image claims more pixels than this server decodes (limit "
                                               f"{max_pixels}); send a smaller image") from None
    except Exception:  # noqa: BLE001 - any decoder failure on untrusted bytes means the same thing
        raise ApiError(400, "corrupt_image", f"the {kind} image could not be read (truncated or corrupt?); "
                                             f"export it again and resend") from None
    if width <= 0 or height <= 0:
        raise ApiError(400, "corrupt_image", f"the {kind} image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ApiError(413, "image_too_large", f"the image is {width} x {height} = {width * height} pixels; this "
                                               f"server accepts at most {max_pixels}. Send a smaller or downsampled image")
    return ImageHeader(kind, width, height, mode in EIGHT_BIT_MODES, raw_offset)


def decode_image_file(stream, header: ImageHeader, max_pixels: int) -> np.ndarray:
    """The probed upload -> (H, W, 3) uint8, or ApiError 400.

    Pixels stored as they are decoded (`header.raw_offset`) are not decoded: an in-memory upload
    (a BytesIO) is viewed where it lies, without a copy (the array keeps the buffer alive); a file
    is read straight into the array."""
    from ..imagery import ImageryError, read_image_file

    if header.raw_offset is not None:
        return _raw_rgb(stream, header)
    try:
        return read_image_file(stream, max_pixels=max_pixels, formats=[header.kind])
    except ImageryError as exc:
        raise ApiError(400, "corrupt_image", f"the {header.kind} image could not be decoded: {exc}") from None
    except Exception:  # noqa: BLE001
        raise ApiError(400, "corrupt_image", f"the {header.kind} image could not be decoded (truncated or corrupt?); "
                                             f"export it again and resend") from None


def _raw_rgb(stream, header: ImageHeader) -> np.ndarray:
    shape = (header.height, header.width, 3)
    count = header.height * header.width * 3
    getbuffer = getattr(stream, "getbuffer", None)
    if getbuffer is not None:  # io.BytesIO: a writable view of its buffer, no copy
        buffer = getbuffer()
        if len(buffer) - header.raw_offset >= count:
            return np.frombuffer(buffer, dtype=np.uint8, count=count, offset=header.raw_offset).reshape(shape)
        read = len(buffer) - header.raw_offset
    else:
        image = np.empty(shape, dtype=np.uint8)
        target = memoryview(image).cast("B")
        stream.seek(header.raw_offset)
        read = 0
        while read < count:
            n = stream.readinto(target[read:])
            if not n:
                break
            read += n
        if read == count:
            return image
    raise ApiError(400, "corrupt_image", f"the {header.kind} image is truncated ({max(0, read)} of {count} pixel "
                                         f"bytes); export it again and resend")
