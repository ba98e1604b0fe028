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
    """PNG / JPEG / TIFF bytes -> (H, W, 3) uint8, or ApiError 413 / 415 / 400."""
    from PIL import Image

    from ..imagery import ImageryError, read_image_bytes

    if not data:
        raise ApiError(400, "corrupt_image", "the image part is empty (0 bytes); attach the image file")
    kind = sniff_image_type(data)
    if kind is None:
        raise ApiError(415, "unsupported_image_type",
                       "the image is not PNG, JPEG, TIFF or WebP (judging by its first bytes); send it in one of those formats")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the decoder the signature names: the bytes never reach any other image plugin.
            with Image.open(io.BytesIO(data), formats=[kind]) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        raise ApiError(413, "image_too_large", f"the image claims more pixels than this server decodes (limit "
                                               f"{max_pixels}); send a smaller image") from None
    except Exception:  # noqa: BLE001 - any decoder failure on untrusted bytes means the same thing
        raise ApiError(400, "corrupt_image", f"the {kind} image could not be read (truncated or corrupt?); "
                                             f"export it again and resend") from None
    if width * height > max_pixels:
        raise ApiError(413, "image_too_large", f"the image is {width} x {height} = {width * height} pixels; this "
                                               f"server accepts at most {max_pixels}. Send a smaller or downsampled image")
    try:
        return read_image_bytes(data, max_pixels=max_pixels)
    except ImageryError as exc:
        raise ApiError(400, "corrupt_image", f"the {kind} image could not be decoded: {exc}") from None
    except Exception:  # noqa: BLE001
        raise ApiError(400, "corrupt_image", f"the {kind} image could not be decoded (truncated or corrupt?); "
                                             f"export it again and resend") from None


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
    return ImageHeader(kind, width, height, mode in EIGHT_BIT_MODES)


def decode_image_file(stream, header: ImageHeader, max_pixels: int) -> np.ndarray:
    """The probed upload -> (H, W, 3) uint8, or ApiError 400."""
    from ..imagery import ImageryError, read_image_file

    try:
        return read_image_file(stream, max_pixels=max_pixels, formats=[header.kind])
    except ImageryError as exc:
        raise ApiError(400, "corrupt_image", f"the {header.kind} image could not be decoded: {exc}") from None
    except Exception:  # noqa: BLE001
        raise ApiError(400, "corrupt_image", f"the {header.kind} image could not be decoded (truncated or corrupt?); "
                                             f"export it again and resend") from None
