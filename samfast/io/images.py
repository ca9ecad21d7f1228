"""Read medical images and 2D pictures, take 2D slices, write masks with the source geometry.

Every failure a user can cause is raised as InputError with a one-line message.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import operator
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samfast.errors import InputError
from samfast.io.atomic import atomic_path, full_suffix
from samfast.io.demo import find_demo_data
from samfast.io.image_budget import check_picture, codec_messages
from samfast.io.planes import ORDER, plane_view

__all__ = [
    "AXES",
    "SliceGeometry",
    "check_written",
    "find_demo_data",
    "get_slice",
    "read_image",
    "read_slice",
    "write_mask",
]

PathLike = str | os.PathLike[str]
#: Slicing axes; the value is the numpy axis of GetArrayFromImage's (z, y, x) array.
AXES = {plane: order[0] for plane, order in ORDER.items()}
_TWO_D_ONLY = {".png", ".jpg", ".jpeg", ".bmp"}


def _short_reason(error: Exception) -> str:
    """The useful part of a SimpleITK/ITK/OS error, on one short line."""
    text = str(error)
    if "Unable to determine ImageIO" in text:
        return "format not recognised"
    for marker in ("sitk::ERROR:", "ITK ERROR:"):
        text = text.split(marker, 1)[-1]
    text = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", " ".join(text.split()))
    return text if len(text) <= 160 else text[:157] + "..."


def _unreadable(path: Path, reason: object) -> InputError:
    return InputError(f"{path}: not a readable image ({reason})")


# NIfTI-1 / NIfTI-2 by sizeof_hdr: (dim format, dim at, bitpix at, vox_offset format, at)
_NIFTI = {348: ("8h", 40, 72, "f", 108), 540: ("8q", 16, 14, "q", 168)}


def _nifti_expected_bytes(header: bytes) -> int:
    """Bytes a NIfTI file must hold (header and voxels); 0 if ``header`` is not NIfTI."""
    for end in "<>":
        size = struct.unpack_from(end + "i", header)[0] if len(header) >= 348 else 0
        if size in _NIFTI:
            dims_format, dims_at, bitpix_at, offset_format, offset_at = _NIFTI[size]
            dims = struct.unpack_from(end + dims_format, header, dims_at)
            bitpix = struct.unpack_from(end + "h", header, bitpix_at)[0]
            offset = int(struct.unpack_from(end + offset_format, header, offset_at)[0])
            if 1 <= dims[0] <= 7:
                return max(offset, size) + math.prod(dims[1 : dims[0] + 1]) * bitpix // 8
    return 0


def _nonfinite_floats(header: bytes, data: bytes) -> bool:
    """True when a float32/float64 NIfTI holds NaN or ±inf voxels."""
    for end in "<>":
        size = struct.unpack_from(end + "i", header)[0] if len(header) >= 348 else 0
        if size in _NIFTI:
            datatype = struct.unpack_from(end + "h", header, 70 if size == 348 else 12)[0]
            kind = {16: "f4", 64: "f8"}.get(datatype)
            if kind is None:
                return False
            offset_format, offset_at = _NIFTI[size][3:]
            offset = max(int(struct.unpack_from(end + offset_format, header, offset_at)[0]), size)
            voxels = np.frombuffer(
                data, end + kind, offset=offset, count=(len(data) - offset) // int(kind[1])
            )
            return not bool(np.isfinite(voxels).all())
    return False


def _check_nifti_complete(path: Path) -> None:
    """ITK's NIfTI reader zero-fills truncated files and turns NaN voxels into 0 without a word;
    refuse both here."""
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if compressed else open(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise _unreadable(path, f"corrupt data: {_short_reason(error)}") from None
    expected = _nifti_expected_bytes(data[:548])
    if len(data) < expected:
        raise _unreadable(path, f"truncated: {len(data)} of {expected} bytes")
    if expected and _nonfinite_floats(data[:548], data[:expected]):
        raise InputError(f"{path}: image contains NaN or infinite voxels")


def read_image(path: PathLike, max_voxels: int | None = None) -> sitk.Image:
    """Read any SimpleITK-readable file (NIfTI, NRRD, MHA, PNG, JPEG, TIFF, ...).

    A picture (PNG, JPEG, TIFF, BMP) is sized from its header first and refused (BudgetExceeded)
    above ``max_voxels`` values (default: samfast.io.image_budget.max_voxels()), before decoding.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder (DICOM series are not supported yet)")
    if check_picture(path, max_voxels) is not None:
        return _read_picture(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise _unreadable(path, _short_reason(error)) from None
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    return image


# libjpeg fills what is missing or corrupt with grey and only warns: such a picture is refused
_CORRUPT_DATA = ("Premature end of JPEG file", "Corrupt JPEG data")


def _read_picture(path: Path) -> sitk.Image:
    """Decode a picture whose header was checked, with the codecs' stderr lines kept off the
    terminal: the first becomes the reason when the read fails."""
    failure = None
    with codec_messages() as messages:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            failure = error
    reasons = [re.sub(r"^lib\w+ (error|warning):\s*", "", line) for line in messages]
    if failure is not None:
        raise _unreadable(path, reasons[0] if reasons else _short_reason(failure))
    corrupt = [line for line in reasons if line.startswith(_CORRUPT_DATA)]
    if corrupt:
        raise _unreadable(path, f"corrupt data: {corrupt[0]}")
    return image


def _check_axis(axis: str) -> int:
    if axis not in AXES:
        raise InputError(f"unknown slice axis {axis!r}; use one of {', '.join(AXES)}")
    return AXES[axis]


def _resolve_index(size: tuple[int, ...], index: int | None, axis: str) -> int:
    """Validate ``index`` for an image of ``size`` (2D: None or 0; 3D: 0 <= index < depth)."""
    numpy_axis = _check_axis(axis)
    if index is not None:
        try:
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)
        except TypeError:
            raise InputError(f"slice index must be an integer, not {index!r}") from None
    if len(size) == 2:
        if index not in (None, 0):
            raise InputError(f"slice {index} requested, but this is a 2D image (only slice 0)")
        return 0
    if len(size) != 3:
        raise InputError(f"{len(size)}D images are not supported (only 2D and 3D)")
    depth = size[2 - numpy_axis]
    if index is None:
        if depth == 1:
            return 0
        raise InputError(f"3D image: choose an {axis} slice with --slice (0 to {depth - 1})")
    if not 0 <= index < depth:
        raise InputError(f"{axis} slice {index} is out of range (0 to {depth - 1})")
    return index


def _plane_dims(ndim: int, axis: str) -> tuple[int, int]:
    """Image dimensions (x=0, y=1, z=2) along the slice's rows and columns."""
    if ndim == 2:
        return 1, 0
    # the plane view's row and column axes, as image dimensions (numpy axis k is dimension 2 - k)
    rows, cols = ORDER[axis][1:]
    return 2 - rows, 2 - cols


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """Geometry of the source image and of the 2D slice taken from it.

    ``plane_spacing`` is the slice's pixel spacing in mm in array order: (row, column).
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    index: int
    axis: str
    plane_spacing: tuple[float, float]

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def slice_shape(self) -> tuple[int, int]:
        """(rows, columns) of the slice array."""
        rows, cols = _plane_dims(self.dimension, self.axis)
        return self.size[rows], self.size[cols]

    @classmethod
    def from_image(cls, image: sitk.Image, index: int | None = None, axis: str = "axial") -> SliceGeometry:
        """Geometry of ``image`` for the given slice (validated like get_slice)."""
        spacing = tuple(float(s) for s in image.GetSpacing())
        source = cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=spacing,
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
            index=0,
            axis="axial",
            plane_spacing=(spacing[1], spacing[0]),
        )
        return source.with_slice(index, axis)

    def with_slice(self, index: int | None, axis: str = "axial") -> SliceGeometry:
        """The same source geometry for another slice (validated like get_slice)."""
        index = _resolve_index(self.size, index, axis)
        rows, cols = _plane_dims(self.dimension, axis)
        plane = (self.spacing[rows], self.spacing[cols])
        return dataclasses.replace(self, index=index, axis=axis, plane_spacing=plane)


def get_slice(image: sitk.Image, index: int | None = None, axis: str = "axial") -> np.ndarray:
    """A 2D float32 slice (rows = y, columns = x for axial); RGB pictures give H x W x 3."""
    index = _resolve_index(image.GetSize(), index, axis)
    array = sitk.GetArrayViewFromImage(image)
    if image.GetDimension() == 3:
        array = plane_view(array, axis)[index]
    components = image.GetNumberOfComponentsPerPixel()
    if components in (3, 4) and array.ndim == 3:
        array = array[..., :3]  # RGB, or RGBA without the alpha channel
    elif components == 2 and array.ndim == 3:
        array = array[..., 0]  # grey + alpha
    elif components != 1:
        raise InputError(f"images with {components} channels per pixel are not supported")
    return np.array(array, dtype=np.float32, copy=True)


def read_slice(
    path: PathLike, index: int | None = None, axis: str = "axial"
) -> tuple[np.ndarray, SliceGeometry]:
    """Read ``path`` and return (slice array, geometry) — see read_image and get_slice."""
    image = read_image(path)
    return get_slice(image, index, axis), SliceGeometry.from_image(image, index, axis)


def _mask_to_uint8(mask2d: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask2d)
    if mask.dtype.kind not in "biuf":
        raise InputError(f"mask must be boolean or numeric, not {mask.dtype}")
    if mask.dtype.kind != "b" and mask.size:
        # NaN fails the equality test, infinities the range test.
        whole = np.array_equal(mask, np.round(mask))
        if not whole or mask.min() < 0 or mask.max() > 255:
            raise InputError("mask values must be whole numbers from 0 to 255")
    return mask.astype(np.uint8)


def write_mask(
    mask2d: np.ndarray,
    reference: sitk.Image | SliceGeometry,
    path: PathLike,
    index: int | None = None,
    axis: str | None = None,
    description: str | None = None,
) -> Path:
    """Write a uint8 mask with the reference's geometry, atomically; return the path.

    3D reference: a full volume, zero except slice ``index`` along ``axis`` (default axial).
    2D reference: a 2D image. A SliceGeometry reference supplies its own index and axis.
    ``description`` (provenance, e.g. model and weights) is stored in the file's header.
    """
    path = Path(path)
    if isinstance(reference, SliceGeometry):
        index = reference.index if index is None else index
        geometry = reference.with_slice(index, axis or reference.axis)
    else:
        geometry = SliceGeometry.from_image(reference, index, axis or "axial")
    mask = _mask_to_uint8(mask2d)
    if mask.shape != geometry.slice_shape:
        raise InputError(
            f"mask shape {mask.shape} does not match the image slice shape {geometry.slice_shape}"
        )
    suffix = full_suffix(path).lower()
    if suffix in {".jpg", ".jpeg"}:
        raise InputError(f"{path}: JPEG is lossy and would corrupt a mask; use .png")
    if geometry.dimension == 3 and suffix in _TWO_D_ONLY:
        raise InputError(f"{path}: {suffix} cannot hold a 3D volume; use .nii.gz, .nrrd or .mha")
    if geometry.dimension == 3:
        volume = np.zeros(geometry.size[::-1], dtype=np.uint8)
        selector: list[slice | int] = [slice(None)] * 3
        selector[AXES[geometry.axis]] = geometry.index
        volume[tuple(selector)] = mask
        out = sitk.GetImageFromArray(volume)
    else:
        out = sitk.GetImageFromArray(mask)
    out.SetSpacing(geometry.spacing)
    out.SetOrigin(geometry.origin)
    out.SetDirection(geometry.direction)
    if description:
        # ITK writes this into NIfTI "descrip" (80 chars) and NRRD/MHA notes.
        out.SetMetaData("ITK_FileNotes", description[:79])
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(out, str(tmp), useCompression=True)
        except RuntimeError as error:
            raise InputError(f"{path}: cannot write mask ({_short_reason(error)})") from None
        check_written(tmp, path)
    return path


def check_written(tmp: Path, target: PathLike) -> None:
    """Refuse a file ITK wrote short: on a full disk its writers print "wrote only N of M bytes"
    to stderr and return as if all went well."""
    try:
        if full_suffix(tmp).lower() in (".nii", ".nii.gz"):
            _check_nifti_complete(Path(tmp))
        else:
            sitk.ReadImage(str(tmp))
    except (InputError, RuntimeError):
        raise InputError(f"{target}: cannot write the file completely (is the disk full?)") from None


def check_same_grid(image: sitk.Image, other: sitk.Image, name: str = "label") -> None:
    """Refuse ``other`` unless it has the image's size, spacing, origin and direction."""
    for what in ("Size", "Spacing", "Origin", "Direction"):
        ours, theirs = getattr(image, f"Get{what}")(), getattr(other, f"Get{what}")()
        if not np.allclose(ours, theirs, atol=1e-4):
            raise InputError(
                f"{name} {what.lower()} {tuple(round(v, 4) for v in theirs)} differs from "
                f"the image's {tuple(round(v, 4) for v in ours)}"
            )
