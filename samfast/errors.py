"""User-facing error types for samfast.

A SamfastError carries one clear line; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "InputError", "SamfastError"]


class SamfastError(Exception):
    """Base class for errors shown to the user as a single line (CLI exit status 2)."""


class InputError(SamfastError):
    """Bad user input: a missing or corrupt file, a bad box, a shape mismatch, and the like."""


class CheckpointError(SamfastError):
    """A checkpoint that is missing, has the wrong hash or belongs to another model."""
