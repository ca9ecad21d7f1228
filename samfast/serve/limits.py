"""What one request may cost the server: voxels, memory per session, clicks, folder sizes, roots.

A refusal is a Refused error carrying its HTTP status; the app turns it into one JSON line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from samfast.errors import InputError
from samfast.io.budget import BudgetExceeded, ImageHeader

#: Clicks in one prompt: SAM is trained with up to a handful; more only costs the shared model time.
MAX_CLICKS = 64
#: JSON requests (everything but uploads) are small; parsing a larger one would be wasted work.
MAX_JSON_BYTES = 64 * 1024


class Refused(InputError):
    """A request the server will not serve; ``status`` is its HTTP code (403, 404, 413, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


MASK_COPIES = 4  # bool masks of the whole volume a session may hold at once (session_cost)


@dataclasses.dataclass(frozen=True)
class Limits:
    max_voxels: int = 512 * 512 * 1000  # a clinical CT: 1000 slices of 512 x 512
    session_bytes: int = 4 * 2**30  # image + model input (float32) + masks, per session
    max_folder_entries: int = 4096  # a DICOM series folder: files and sub-folders scanned at most
    max_slice_side: int = 4096  # the encoder resizes each slice; larger ones cost time under the lock
    allow_roots: tuple[Path, ...] = ()  # empty: any path the server's user can read

    def session_cost(self, header: ImageHeader, dicom: bool = False) -> int:
        """Bytes a session holds: the image, its float32 model input, four bool masks (the mask, the
        last 3D walk's record kept for edits, and a whole-volume undo and redo step), and for DICOM
        the datasets' own copy of the pixels (kept for RTSTRUCT/SEG export)."""
        return header.voxels * (header.pixel_bytes * (2 if dicom else 1) + 4 + MASK_COPIES)

    def check_volume(self, name: str, header: ImageHeader, dicom: bool = False) -> None:
        """Refuse (413) a volume whose session would exceed the memory budget or whose slices are huge."""
        shape = "x".join(str(s) for s in header.size)
        cost = self.session_cost(header, dicom)
        if cost > self.session_bytes:
            raise BudgetExceeded(
                f"{name}: a session on {shape} voxels needs {cost / 2**20:.0f} MiB, more than the "
                f"limit of {self.session_bytes / 2**20:.0f} MiB"
            )
        if max(header.size[:2], default=0) > self.max_slice_side:
            raise BudgetExceeded(f"{name}: slices of {shape}, more than {self.max_slice_side} voxels a side")
