"""Image input/output for samfast: reading images, taking slices, writing masks atomically.

Everything a user can get wrong is reported as samfast.errors.InputError with one line.
"""

from samfast.io.atomic import atomic_path, atomic_write_bytes
from samfast.io.images import (
    AXES,
    SliceGeometry,
    check_same_grid,
    find_demo_data,
    get_slice,
    read_image,
    read_slice,
    write_mask,
)
from samfast.io.volumes import VOLUME_SUFFIXES, read_volume

__all__ = [
    "AXES",
    "VOLUME_SUFFIXES",
    "SliceGeometry",
    "check_same_grid",
    "atomic_path",
    "atomic_write_bytes",
    "find_demo_data",
    "get_slice",
    "read_image",
    "read_slice",
    "read_volume",
    "write_mask",
]
