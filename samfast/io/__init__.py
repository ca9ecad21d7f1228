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

__all__ = [
    "AXES",
    "SliceGeometry",
    "check_same_grid",
    "atomic_path",
    "atomic_write_bytes",
    "find_demo_data",
    "get_slice",
    "read_image",
    "read_slice",
    "write_mask",
]
