"""An ask's multipart body, parsed as it streams in: the image part lands in memory or in a
temporary file, the JSON part in memory.

python-multipart does the parsing (boundaries, part headers). What is hand-written here is where
the bytes go, because Starlette's MultiPartParser, used before, cost a 2048 x 2048 uncompressed
TIFF (12 MB, the loopback transport of core/transport.py) about 40 ms on top of the transfer
(`make bench`, bench_server.py): it kept at most a fixed 8 MiB in memory, copied that into a
temporary file on the event loop, wrote every later chunk through its own thread hop, grew its
in-memory file by small steps (a realloc and copy each), and the decoder then read the pixels
back from the disk file into fresh memory. Here:

* a part whose declared size fits `MEMORY_PART_MAX_BYTES` and the server's image-memory budget
  (`admission.ImageBudget`, charged here and given back on `close`) is read into one buffer
  sized once from Content-Length; an uncompressed RGB TIFF is then used without any copy
  (`images.decode_image_file` views that buffer);
* otherwise, as before, at most `SPOOL_MAX_BYTES` stay in memory and the rest goes to a
  temporary file, now in batches of `SPOOL_BATCH_BYTES` per thread hop (a body declared larger
  than that goes to the file from its first byte), so the bodies being read at once never sit in
  memory whole.
"""
from __future__ import annotations

import io
import tempfile
from typing import BinaryIO, List, Optional

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from ...core.api import IMAGE_PART, MAX_REQUEST_PART_BYTES, REQUEST_PART
from .errors import ApiError

MEMORY_PART_MAX_BYTES = 16 * 1024 * 1024  # a 2048 x 2048 uncompressed RGB TIFF (12 MiB), when the budget has room
SPOOL_MAX_BYTES = 8 * 1024 * 1024  # otherwise: what stays in memory before the part goes to a temporary file
SPOOL_BATCH_BYTES = 1024 * 1024  # bytes written to the temporary file per thread hop
_MAX_PART_HEADER_BYTES = 8 * 1024  # one header line of a part (Content-Disposition with a long file name)
_MAX_PART_HEADERS = 8


def _malformed(message: str) -> ApiError:
    return ApiError(422, "malformed_form", message)


class ImagePart:
    """The image part's bytes: in memory (`in_memory`) or in a temporary file, read back through
    `stream()`. `close()` (idempotent) gives back the memory budget and removes the file."""

    def __init__(self, filename: str, content_type: str, capacity: int = 0, reservation=None):
        self.filename = filename
        self.content_type = content_type
        self.size = 0
        self.reservation = reservation  # admission.Reservation of `capacity` bytes, or None
        self._limit = capacity if reservation is not None else SPOOL_MAX_BYTES
        self._memory: Optional[io.BytesIO] = io.BytesIO()
        if capacity > 0 and reservation is not None:
            # One allocation of the declared size instead of a realloc (and copy) per growth step.
            self._memory.seek(capacity - 1)
            self._memory.write(b"\0")
            self._memory.seek(0)
        self._file: Optional[BinaryIO] = None
        self._pending: List[memoryview] = []  # bytes on their way to the file, written in batches
        self._pending_bytes = 0
        self._closed = False

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    def append(self, data: memoryview) -> None:
        """Called by the parser (synchronously): the next bytes of the part."""
        self.size += len(data)
        if self._memory is not None and self.size <= self._limit:
            self._memory.write(data)
            return
        if self._memory is not None:  # past what may stay in memory: everything goes to the file
            self._pending.append(self._memory.getbuffer()[: self.size - len(data)])
            self._pending_bytes += self.size - len(data)
            self._memory = None
            self._give_back()
        self._pending.append(data)
        self._pending_bytes += len(data)

    def spill_to_file(self) -> None:
        """The part will be larger than memory may hold (known from Content-Length): skip memory."""
        if self._memory is not None and self.size == 0:
            self._memory = None
            self._give_back()

    @property
    def flush_due(self) -> bool:
        return self._pending_bytes >= SPOOL_BATCH_BYTES

    async def flush(self) -> None:
        """Writes the pending bytes to the temporary file in one thread hop."""
        if not self._pending:
            return
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        await run_in_threadpool(self._write, batch)

    def _write(self, batch: List[memoryview]) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="georeasoner-upload-")
        self._file.writelines(batch)
        for view in batch:
            view.release()

    def finish(self) -> None:
        """The part is complete: cut the in-memory buffer to its size."""
        if self._memory is not None:
            self._memory.truncate(self.size)
            self._memory.seek(0)

    def stream(self) -> BinaryIO:
        """The bytes as a binary file at its start (the in-memory buffer itself: no copy)."""
        stream = self._memory if self._memory is not None else self._file
        if stream is None:  # an empty part: nothing was ever written
            self._memory = stream = io.BytesIO()
        stream.seek(0)
        return stream

    async def read(self) -> bytes:
        if self._memory is not None:
            return self._memory.getvalue()
        if self._file is None:
            return b""
        self._file.seek(0)
        return await run_in_threadpool(self._file.read)

    def _give_back(self) -> None:
        if self.reservation is not None:
            self.reservation.release()
            self.reservation = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._give_back()
        # An in-memory buffer is dropped, not closed: a decoded image may still view it (it is
        # then charged to the budget as that image). The file is closed (and so removed) in a
        # thread: dropping megabytes of page cache is a system call the event loop should not wait for.
        self._memory = None
        for view in self._pending:
            view.release()
        self._pending = []
        if self._file is not None:
            file, self._file = self._file, None
            await run_in_threadpool(file.close)


class MultipartForm:
    """Callbacks for python-multipart: at most one 'image' file part and one 'request' part."""

    def __init__(self, memory_capacity: int, reservation):
        self.image: Optional[ImagePart] = None
        self.request: Optional[bytearray] = None
        self._capacity = memory_capacity
        self._reservation = reservation  # for the image part's in-memory buffer; handed to it
        self._spill = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._content_type = b""
        self._target = None  # the part being read: ImagePart or the request bytearray
        self.ended = False

    def callbacks(self):
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value_data, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_end": self._end}

    def expect_large_body(self) -> None:
        self._spill = True

    def _part_begin(self) -> None:
        self._disposition = self._content_type = b""
        self._target = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        name = bytes(self._header_name).strip().lower()
        if name == b"content-disposition":
            self._disposition = bytes(self._header_value)
        elif name == b"content-type":
            self._content_type = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise _malformed("every part needs a name (Content-Disposition: form-data; name=\"...\"); send one "
                             "file part 'image' and one JSON part 'request'")
        name = options[b"name"].decode("utf-8", "replace")
        if name == REQUEST_PART:
            if self.request is not None:
                raise _malformed(self._duplicate(name))
            self.request = self._target = bytearray()
        elif name == IMAGE_PART:
            if self.image is not None:
                raise _malformed(self._duplicate(name))
            if b"filename" not in options:
                raise _malformed("the 'image' part must be a file part (Content-Disposition with a filename) holding "
                                 "the image bytes")
            reservation, self._reservation = self._reservation, None
            self.image = self._target = ImagePart(options[b"filename"].decode("utf-8", "replace"),
                                                  self._content_type.decode("latin-1").strip(),
                                                  self._capacity if reservation is not None else 0, reservation)
            if self._spill:
                self.image.spill_to_file()
        else:
            raise _malformed(f"unexpected part {name[:40]!r}; send only 'image' (the file) and 'request' (JSON)")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        target = self._target
        if target is self.request:
            if len(target) + end - start > MAX_REQUEST_PART_BYTES:
                raise _malformed(f"the 'request' part is larger than {MAX_REQUEST_PART_BYTES // 1024} KiB; it holds "
                                 f"only the question and options")
            target += data[start:end]
        elif target is not None:
            target.append(memoryview(data)[start:end])  # a view: the one copy is into the part's buffer

    def _part_end(self) -> None:
        if self._target is self.image and self.image is not None:
            self.image.finish()
        self._target = None

    def _end(self) -> None:
        self.ended = True

    @staticmethod
    def _duplicate(name: str) -> str:
        return (f"the body needs exactly one part named {name!r} (found 2 or more): 'image' is the image file, "
                f"'request' the JSON with the question")

    async def close(self) -> None:
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        if self.image is not None:
            await self.image.close()


def multipart_parser(boundary: bytes, form: MultipartForm) -> MultipartParser:
    return MultipartParser(boundary, form.callbacks(), max_header_count=_MAX_PART_HEADERS,
                           max_header_size=_MAX_PART_HEADER_BYTES)


__all__ = ["FormParserError", "ImagePart", "MultipartForm", "multipart_parser", "MEMORY_PART_MAX_BYTES",
           "SPOOL_MAX_BYTES", "SPOOL_BATCH_BYTES"]
