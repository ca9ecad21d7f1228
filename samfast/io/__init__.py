"""Image input/output for samfast: reading images, taking slices, writing masks atomically.

Everything a user can get wrong is reported as samfast.errors.InputError with one line.

Names load on first use: samfast.io.atomic and samfast.io.planes are on the runtime path, and they
must not pull in SimpleITK (absent from a bare GPU machine) through images / volumes.
"""

from __future__ import annotations

import importlib

_HOME = {
    "atomic_path": "atomic",
    "atomic_write_bytes": "atomic",
    "AXES": "images",
    "SliceGeometry": "images",
    "check_same_grid": "images",
    "find_demo_data": "demo",
    "get_slice": "images",
    "read_image": "images",
    "read_slice": "images",
    "write_mask": "images",
    "VOLUME_SUFFIXES": "volumes",
    "read_volume": "volumes",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"samfast.io.{_HOME[name]}"), name)
    raise AttributeError(f"module 'samfast.io' has no attribute {name!r}")
