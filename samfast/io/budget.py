"""Check an image file's cost before reading its voxels: the header's size against a voxel and byte
budget, gzip streams decompressed in bounded chunks, and header references to data files elsewhere.

A 480-byte header can declare billions of voxels and a 300 KB gzip can hold gigabytes, so whoever
reads files on another's behalf (the HTTP service) calls check_volume_budget before read_image.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import re
import zlib
from pathlib import Path

import SimpleITK as sitk

from samfast.errors import InputError

__all__ = ["BudgetExceeded", "ImageHeader", "check_volume_budget", "data_files", "read_header"]

_HEADER_TEXT = 64 * 1024  # MetaImage and NRRD headers are a few hundred bytes of text
_CHUNK = 1 << 20


class BudgetExceeded(InputError):
    """The file is readable but larger than the caller's budget (HTTP 413 in the service)."""


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    size: tuple[int, ...]  # x, y, z as ITK orders them
    components: int
    pixel_bytes: int  # bytes of one voxel (all components)

    @property
    def voxels(self) -> int:
        return math.prod(self.size)

    @property
    def data_bytes(self) -> int:
        return self.voxels * self.pixel_bytes


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Size and voxel type from the file's header alone (SimpleITK ReadImageInformation)."""
    from samfast.io.image_budget import codec_messages, picture_size

    picture_size(path)  # a malformed PNG/JPEG/TIFF/BMP header is refused before a codec prints on it
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with codec_messages():
            reader.ReadImageInformation()
    except RuntimeError as error:
        from samfast.io.images import _short_reason

        raise InputError(f"{Path(path).name}: not a readable image ({_short_reason(error)})") from None
    components = int(reader.GetNumberOfComponents())
    component_bytes = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    return ImageHeader(tuple(int(s) for s in reader.GetSize()), components, components * component_bytes)


def _header_fields(path: Path) -> dict[str, str]:
    """Key/value lines of a MetaImage (``Key = value``) or NRRD (``key: value``) text header."""
    with open(path, "rb") as handle:
        text = handle.read(_HEADER_TEXT).decode("latin-1")
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break  # NRRD: a blank line ends the header
        match = re.match(r"\s*([A-Za-z ]+?)\s*(?:=|:=|:)\s*(.*?)\s*$", line)
        if match:
            fields[match.group(1).lower().replace(" ", "")] = match.group(2)
        if match and match.group(1).lower() == "elementdatafile":
            break  # MetaImage: the last header line; binary data may follow
    return fields


def data_files(path: str | os.PathLike[str]) -> list[Path]:
    """Files other than ``path`` that its header says hold the voxels (MetaImage ElementDataFile,
    NRRD ``data file``); [] for formats that keep header and data together."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        value = _header_fields(path).get("elementdatafile", "LOCAL")
    elif name.endswith((".nrrd", ".nhdr")):
        fields = _header_fields(path)
        value = fields.get("datafile", "LOCAL")
    else:
        return []
    if value.upper() == "LOCAL":
        return []
    if value.upper().startswith("LIST") or "%" in value.split()[0]:
        raise InputError(f"{path.name}: data files given as a list or pattern are not supported here")
    return [(path.parent / value).resolve()]


def _gzip_length(path: Path, limit: int) -> int:
    """Decompressed bytes of a gzip file, reading at most ``limit + 1`` of them (a bomb stops there)."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while total <= limit:
                chunk = stream.read(min(_CHUNK, limit + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"{path.name}: corrupt gzip data ({' '.join(str(error).split())[:120]})") from None
    return total


def check_volume_budget(
    path: str | os.PathLike[str], max_voxels: int, max_bytes: int, local_only: bool = False
) -> ImageHeader:
    """Refuse ``path`` before its voxels are read when its header declares more than ``max_voxels``
    voxels or ``max_bytes`` of data, when it is gzip that inflates past what the header declares,
    or (``local_only``) when its header points at data in another file."""
    path = Path(path)
    external = data_files(path)
    if external and local_only:
        raise InputError(f"{path.name}: its header points at a data file elsewhere; upload a single file")
    header = read_header(path)
    if header.voxels > max_voxels:
        shape = "x".join(str(s) for s in header.size)
        raise BudgetExceeded(
            f"{path.name}: {shape} = {header.voxels} voxels, more than the limit of {max_voxels}"
        )
    if header.data_bytes > max_bytes:
        raise BudgetExceeded(
            f"{path.name}: {header.data_bytes / 2**20:.0f} MiB of voxel data, more than the "
            f"limit of {max_bytes / 2**20:.0f} MiB"
        )
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    if compressed:
        # The header itself (NIfTI: vox_offset <= a few KiB plus extensions) may precede the data.
        limit = header.data_bytes + _HEADER_TEXT
        if _gzip_length(path, limit) > limit:
            raise BudgetExceeded(
                f"{path.name}: gzip data inflates past the {header.data_bytes} bytes its header declares"
            )
    return header
