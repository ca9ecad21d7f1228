"""Atomic file writes: write to a temporary file in the target folder, then rename.

A reader never sees a half-written output, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from samfast.errors import InputError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "check_output_file",
    "check_writable_folder",
    "full_suffix",
    "publish_permissions",
]

_COMPRESSED = {".gz", ".bz2", ".xz", ".zst"}


def full_suffix(path: str | os.PathLike[str]) -> str:
    """The suffix that selects a file format: '.nii.gz' for 'a.nii.gz', '.png' for 'b.png'."""
    suffixes = Path(path).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSED:
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_permissions(folder: Path) -> None:
    """Give a folder made by mkdtemp (0700) and its files the modes a plain mkdir/open would."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for item in Path(folder).iterdir():
        if item.is_file():
            os.chmod(item, 0o666 & ~mask)


def _one_line(error: OSError) -> str:
    return " ".join(str(error.strerror or error).split())


def check_writable_folder(folder: str | os.PathLike[str]) -> None:
    """Create and remove a file there: permission bits alone do not tell root or read-only mounts."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"{folder}: output folder {what}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(f"{folder}: output folder is not writable ({_one_line(error)})") from None


def check_output_file(path: str | os.PathLike[str]) -> None:
    """Refuse an output path that is a folder or an existing read-only file (a rename would replace
    it without asking: its missing write permission is the owner's "keep this")."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target}: is a folder; give a file name")
    if target.is_file() and not target.stat().st_mode & 0o222:
        raise InputError(f"{target}: is read-only; not replaced (remove it or choose another name)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); rename it to ``path`` on success.

    If the body raises, the temporary file is removed and the error propagates. A missing or
    unwritable output folder, a read-only existing file, or a failed rename, raises InputError
    with a one-line message.
    """
    target = Path(path)
    folder = target.parent
    check_output_file(target)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.tmp-", suffix=full_suffix(target))
    except OSError as error:
        if not folder.is_dir():
            raise InputError(f"{target}: output folder {folder} does not exist") from None
        raise InputError(f"{target}: cannot write here ({_one_line(error)})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates files with mode 0600; give the result the usual permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.replace(tmp, target)
        except OSError as error:
            raise InputError(f"{target}: cannot write here ({_one_line(error)})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsynced before the rename); return the path."""
    target = Path(path)
    with atomic_path(target) as tmp:
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:  # a full disk: one line, and atomic_path removes the temporary file
            raise InputError(f"{target}: cannot write ({_one_line(error)})") from None
    return target
