"""Size a picture (PNG, JPEG, TIFF, BMP) from its own header bytes, before any codec sees it.

A 389 KB PNG can hold deflated rows for 20000 x 20000 pixels, and libpng allocates them all; a
0 x 0 PNG makes libpng print warnings to the terminal from C before it fails. So the header is
parsed here, checked against a voxel budget (the service's default, 512 x 512 x 1000 values), and
only then handed to SimpleITK, with what the C codecs write to stderr captured, not shown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
import sys
import tempfile
import threading
import zlib
from pathlib import Path

from samfast.errors import InputError
from samfast.io.budget import BudgetExceeded

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "MAX_VOXELS_ENV",
    "PictureSize",
    "check_picture",
    "codec_messages",
    "max_voxels",
    "picture_size",
    "set_max_voxels",
]

#: The service's default --max-voxels: a clinical CT, 1000 slices of 512 x 512.
DEFAULT_MAX_VOXELS = 512 * 512 * 1000
MAX_VOXELS_ENV = "SAMFAST_MAX_VOXELS"
_configured: int | None = None  # set by `samfast serve --max-voxels`
_MAX_PAGES = 1 << 16  # TIFF directories followed at most (a cycle or a flood stops here)
_MAX_SEGMENTS = 1 << 16  # JPEG segments skipped at most before the frame header

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> (channels ITK gives: a palette is expanded to RGB, allowed bit depths)
_PNG_COLOUR = {
    0: (1, {1, 2, 4, 8, 16}),
    2: (3, {8, 16}),
    3: (3, {1, 2, 4, 8}),
    4: (2, {8, 16}),
    6: (4, {8, 16}),
}
# JPEG start-of-frame markers (C4, C8 and CC share the range but are not frames)
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclasses.dataclass(frozen=True)
class PictureSize:
    kind: str
    width: int
    height: int
    channels: int = 1
    pages: int = 1

    @property
    def values(self) -> int:
        """Values a decoder allocates: pixels x channels x pages."""
        return self.width * self.height * self.channels * self.pages

    def describe(self) -> str:
        shape = f"{self.width}x{self.height}" + (f"x{self.pages}" if self.pages > 1 else "")
        return shape + (f" with {self.channels} channels" if self.channels > 1 else "")


def set_max_voxels(limit: int | None) -> None:
    """The process's picture budget (``samfast serve`` passes its --max-voxels); None: the default."""
    global _configured
    _configured = limit


def max_voxels() -> int:
    """The picture budget: set_max_voxels, else $SAMFAST_MAX_VOXELS, else DEFAULT_MAX_VOXELS."""
    if _configured is not None:
        return _configured
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"{MAX_VOXELS_ENV}={text!r}: must be a positive whole number")
    return int(text)


def _bad(path: Path, reason: str) -> InputError:
    return InputError(f"{path}: not a readable image ({reason})")


def _png(path: Path, head: bytes) -> PictureSize:
    """IHDR: the first chunk, 13 bytes, its CRC checked, as libpng would before it warns."""
    if len(head) < 33 or head[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise _bad(path, "PNG without a complete IHDR header")
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        raise _bad(path, "PNG header fails its CRC check")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise _bad(path, f"PNG header declares {width}x{height} pixels")
    channels, depths = _PNG_COLOUR.get(colour, (0, set()))
    if depth not in depths or compression or filtering or interlace > 1:
        raise _bad(path, f"PNG header has an invalid colour type {colour} / bit depth {depth}")
    return PictureSize("PNG", width, height, channels)


def _jpeg(path: Path, stream) -> PictureSize:
    """The first start-of-frame segment (SOFn), skipping the segments before it by their lengths."""
    stream.seek(2)
    for _ in range(_MAX_SEGMENTS):
        marker = stream.read(2)
        while len(marker) == 2 and marker[0] == 0xFF and marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + stream.read(1)
        if len(marker) < 2 or marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):
            break  # end of image, start of scan, or not a marker: no frame header came first
        if 0xD0 <= marker[1] <= 0xD7 or marker[1] == 0x01:
            continue  # markers without a length
        length_bytes = stream.read(2)
        length = struct.unpack(">H", length_bytes)[0] if len(length_bytes) == 2 else 0
        if length < 2:
            break
        if marker[1] in _SOF:
            frame = stream.read(6)
            if len(frame) < 6:
                break
            _, height, width, channels = struct.unpack(">BHHB", frame)
            if not (width and height and channels):
                raise _bad(path, f"JPEG frame declares {width}x{height} pixels, {channels} channels")
            return PictureSize("JPEG", width, height, channels)
        stream.seek(length - 2, os.SEEK_CUR)
    raise _bad(path, "JPEG without a frame header")


def _tiff_directory(path: Path, stream, offset: int, order: str, big: bool) -> tuple[dict[int, int], int]:
    """One image file directory: {tag: first value} of the tags that size a page, next offset."""
    count_format, entry_format, entry_size = ("Q", "HHQ8s", 20) if big else ("H", "HHI4s", 12)
    stream.seek(offset)
    raw = stream.read(struct.calcsize(count_format))
    if len(raw) < struct.calcsize(count_format):
        raise _bad(path, "TIFF directory past the end of the file")
    count = struct.unpack(order + count_format, raw)[0]
    table = stream.read(count * entry_size + (8 if big else 4))
    if len(table) < count * entry_size + (8 if big else 4):
        raise _bad(path, "TIFF directory past the end of the file")
    value_formats = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    tags = {}
    for at in range(0, count * entry_size, entry_size):
        tag, kind, _, value = struct.unpack_from(order + entry_format, table, at)
        if tag in (256, 257, 277) and kind in value_formats:
            tags[tag] = struct.unpack_from(order + value_formats[kind], value)[0]
    next_offset = struct.unpack_from(order + ("Q" if big else "I"), table, count * entry_size)[0]
    return tags, next_offset


def _tiff(path: Path, stream, head: bytes) -> PictureSize:
    """Every page's width, height and samples (tags 256, 257, 277); ITK reads all pages as a stack
    of the largest, so the budget counts the largest page times the page count."""
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", head, 2)[0] == 43
    if len(head) < (16 if big else 8):
        raise _bad(path, "TIFF without a complete header")
    offset = struct.unpack_from(order + ("Q" if big else "I"), head, 8 if big else 4)[0]
    seen, largest = set(), PictureSize("TIFF", 0, 0)
    while offset and len(seen) < _MAX_PAGES:
        if offset in seen:
            raise _bad(path, "TIFF directories form a loop")
        seen.add(offset)
        tags, offset = _tiff_directory(path, stream, offset, order, big)
        page = PictureSize("TIFF", tags.get(256, 0), tags.get(257, 0), tags.get(277, 1) or 1)
        if not (page.width and page.height):
            raise _bad(path, f"TIFF page {len(seen)} declares {page.width}x{page.height} pixels")
        largest = max(largest, page, key=lambda p: p.values)
    if not seen:
        raise _bad(path, "TIFF without an image directory")
    return dataclasses.replace(largest, pages=len(seen))


def _bmp(path: Path, head: bytes) -> PictureSize:
    """BITMAPINFOHEADER (or the OS/2 core header): width, height (negative: top-down), bits."""
    if len(head) < 26:
        raise _bad(path, "BMP without a complete header")
    if struct.unpack_from("<I", head, 14)[0] == 12:
        width, height, _, bits = struct.unpack_from("<HHHH", head, 18)
    elif len(head) >= 30:
        width, height, _, bits = struct.unpack_from("<iiHH", head, 18)
    else:
        raise _bad(path, "BMP without a complete header")
    height = abs(height)
    if width <= 0 or height <= 0:
        raise _bad(path, f"BMP header declares {width}x{height} pixels")
    return PictureSize("BMP", width, height, 4 if bits == 32 else 3)


def picture_size(path: str | os.PathLike[str]) -> PictureSize | None:
    """The size a picture's header declares, by its magic bytes (not its name: ITK picks the codec
    by content); None for other formats. A malformed header is refused in one line."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(64)
            if head.startswith(_PNG_SIGNATURE):
                return _png(path, head)
            if head.startswith(b"\xff\xd8\xff"):
                return _jpeg(path, stream)
            if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
                return _tiff(path, stream, head)
            if head.startswith(b"BM") and len(head) >= 18:
                return _bmp(path, head)
    except OSError as error:
        raise _bad(path, os.strerror(error.errno) if error.errno else "cannot be read") from None
    return None


def check_picture(path: str | os.PathLike[str], limit: int | None = None) -> PictureSize | None:
    """picture_size, refused (BudgetExceeded) above ``limit`` values (default: max_voxels())."""
    size = picture_size(path)
    limit = max_voxels() if limit is None else limit
    if size is not None and size.values > limit:
        raise BudgetExceeded(
            f"{Path(path).name}: {size.kind} of {size.describe()} = {size.values} values, "
            f"more than the limit of {limit} voxels"
        )
    return size


@contextlib.contextmanager
def codec_messages():
    """Yield a list that receives, when the block ends, the lines C and C++ code (libpng, libjpeg,
    ITK) wrote to file descriptors 1 and 2 during it, instead of the terminal (ITK's JPEG reader
    prints its warnings to stdout, libpng to stderr).

    Only in the main thread: the descriptors belong to the whole process, and a server's worker
    thread must not swallow its event loop's log lines. Elsewhere the list stays empty.
    """
    lines: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = [os.dup(1), os.dup(2)]
        except (OSError, ValueError):  # no usable descriptors: nothing to keep off them
            yield lines
            return
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            text = sink.read(64 * 1024).decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
