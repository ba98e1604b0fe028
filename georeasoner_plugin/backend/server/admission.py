"""Admission before work: what an ask may cost is known and charged before it costs it.

* A place in the queue is reserved before the body is read (`Service.reserve_place`).
* The image header (size, mode) is read before any pixel is decoded, and the decoded size is
  charged against a memory budget (`ImageBudget`); the charge shrinks to the (H, W, 3) array once
  decoded and is given back when the request ends.
* At most `max_decodes` images are decoded at once.

Hand-written (no library offers a byte-counting budget shared by threads and coroutines); the
arithmetic is kept here so it can be tested alone.
"""
from __future__ import annotations

import threading
from typing import Optional

# Peak bytes per pixel while decoding (measured with imagery.read_image_file: 4.6 for a 1-bit PNG,
# 7 for RGB; 16-bit and float images are stretched through float64 copies, ~22).
DECODE_BYTES_PER_PIXEL_8BIT = 8
DECODE_BYTES_PER_PIXEL_OTHER = 24
HELD_BYTES_PER_PIXEL = 3  # the decoded (H, W, 3) uint8 image a queued request holds


def decode_cost(width: int, height: int, eight_bit: bool, raw: bool = False) -> int:
    """Peak bytes of decoding; `raw`: pixels stored as they are decoded (images.raw_rgb_offset), read
    or viewed straight into the (H, W, 3) array, which is then all it costs."""
    if raw:
        return int(width) * int(height) * HELD_BYTES_PER_PIXEL
    per_pixel = DECODE_BYTES_PER_PIXEL_8BIT if eight_bit else DECODE_BYTES_PER_PIXEL_OTHER
    return int(width) * int(height) * per_pixel


class Reservation:
    """Bytes charged against an ImageBudget; `shrink` once decoded, `release` (idempotent) when done."""

    def __init__(self, budget: "ImageBudget", nbytes: int):
        self._budget = budget
        self.nbytes = nbytes

    def shrink(self, nbytes: int) -> None:
        self._budget._give_back(max(0, self.nbytes - nbytes))
        self.nbytes = min(self.nbytes, nbytes)

    def release(self) -> None:
        self._budget._give_back(self.nbytes)
        self.nbytes = 0


class ImageBudget:
    """The decoded pixels the service may hold at once: decoding, waiting in the queue and running."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self._used = 0
        self.peak = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def try_reserve(self, nbytes: int) -> Optional[Reservation]:
        """A reservation of `nbytes`, or None when it does not fit now."""
        with self._lock:
            if self._used + nbytes > self.budget_bytes:
                return None
            self._used += nbytes
            self.peak = max(self.peak, self._used)
        return Reservation(self, nbytes)

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._used = max(0, self._used - nbytes)
