"""What a session may be opened on: a path checked against the allowed roots, the file types and
the budgets before any voxel is read (by path: the server's files; by upload: only the scratch folder).

Every refusal is one line with its HTTP status; no check reads more than a header or a directory
listing bounded by ``Limits.max_folder_entries``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from samfast.io.budget import BudgetExceeded, ImageHeader, check_volume_budget, data_files
from samfast.serve.limits import Limits, Refused

PATH_MAX = 4095  # bytes, Linux's limit without the terminating NUL
NAME_MAX = 255
# Pseudo file systems: files whose reads never end, block, or describe the machine.
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"), Path("/run"))


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def shorten(text: str, width: int = 100) -> str:
    """A path for a one-line message: long ones keep their start and end."""
    return text if len(text) <= width else f"{text[: width // 2 - 2]}...{text[-(width // 2 - 2) :]}"


def resolve(text: str, roots: tuple[Path, ...]) -> Path:
    """The real path of ``text``, refused when too long, under a system folder or outside ``roots``."""
    try:  # no file name can hold NUL or an unpaired surrogate: such a path names nothing
        encoded = os.fsencode(text)
    except UnicodeEncodeError:
        encoded = b"\0"
    if b"\0" in encoded:
        raise Refused(404, "no such file or folder (the path holds a character no file name can)")
    if len(encoded) > PATH_MAX:
        raise Refused(400, f"path longer than {PATH_MAX} bytes")
    shown = shorten(text)
    real = Path(os.path.realpath(text))
    if _inside(real, SYSTEM_FOLDERS):
        raise Refused(403, f"{shown}: refused, a system folder ({', '.join(map(str, SYSTEM_FOLDERS))})")
    if roots and not _inside(real, roots):
        raise Refused(403, f"{shown}: outside the folders this server may open (--allow-root)")
    if any(len(os.fsencode(part)) > NAME_MAX for part in real.parts):  # no such file can exist
        raise Refused(404, f"{shown}: no such file or folder (a name in it is longer than {NAME_MAX} bytes)")
    return real


def _stat(path: Path, shown: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise Refused(404, f"{shown}: no such file or folder") from None
    except NotADirectoryError:
        raise Refused(404, f"{shown}: no such file or folder (a part of it is a file)") from None
    except PermissionError:
        raise Refused(403, f"{shown}: permission denied") from None
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else "cannot be read"
        raise Refused(400, f"{shown}: {reason}") from None


def _check_readable(path: Path, shown: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise Refused(403, f"{shown}: permission denied") from None
    except OSError as error:
        raise Refused(400, f"{shown}: {os.strerror(error.errno or errno.EIO)}") from None


def _folder_files(folder: Path, shown: str, limits: Limits, roots: tuple[Path, ...]) -> list[Path]:
    """Regular files under ``folder`` (recursive), at most ``max_folder_entries`` entries looked at."""
    files, pending, seen = [], [folder], 0
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    seen += 1
                    if seen > limits.max_folder_entries:
                        raise Refused(
                            403, f"{shown}: holds more than {limits.max_folder_entries} files and folders"
                        )
                    target = Path(entry.path)
                    if entry.is_symlink():
                        real = target.resolve()
                        if _inside(real, SYSTEM_FOLDERS) or (roots and not _inside(real, roots)):
                            raise Refused(403, f"{shown}: holds a link to a file outside the allowed folders")
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(target)
                    elif entry.is_file():
                        files.append(target)
        except PermissionError:
            raise Refused(403, f"{shown}: permission denied") from None
        except OSError as error:
            raise Refused(400, f"{shown}: {os.strerror(error.errno or errno.EIO)}") from None
    return files


def _number(ds, name: str, default: int) -> int:
    """A positive integer header value; ``default`` where it is absent, empty or not positive."""
    try:
        return max(int(ds.get(name, default) or default), 1)
    except (TypeError, ValueError):
        return default


def _series_headers(files: list[Path], shown: str) -> list[ImageHeader]:
    """The size of each series the folder holds, from the image files that series reading counts
    (samfast.io.dicom_series.image_headers): every image's own rows x columns x frames, so a small
    file elsewhere in the folder (a thumbnail, another series) neither sizes nor hides a stack."""
    from samfast.io.dicom_series import by_series, image_headers

    groups = by_series(image_headers(files))
    if not groups:
        raise Refused(400, f"{shown}: no DICOM images found")
    headers = []
    for entries in groups.values():
        samples = max(_number(ds, "SamplesPerPixel", 1) for _, ds in entries)
        bytes_each = max(_number(ds, "BitsAllocated", 16) // 8 for _, ds in entries)
        size = (
            max(_number(ds, "Columns", 1) for _, ds in entries),
            max(_number(ds, "Rows", 1) for _, ds in entries),
            sum(_number(ds, "NumberOfFrames", 1) for _, ds in entries),
        )
        headers.append(ImageHeader(size, samples, samples * max(bytes_each, 1)))
    return headers


def check_source(
    path: Path, shown: str, limits: Limits, roots: tuple[Path, ...], local_only: bool = False
) -> None:
    """Refuse a resolved file or folder unless it is a regular file or a bounded folder within the
    budgets; ``shown`` names it in messages (an upload's own file name, not the scratch path)."""
    info = _stat(path, shown)
    if stat.S_ISDIR(info.st_mode):
        # Sized before the series checks, so no stray file can turn this answer into another.
        for header in _series_headers(_folder_files(path, shown, limits, roots), shown):
            if header.voxels > limits.max_voxels:
                raise BudgetExceeded(
                    f"{shown}: {header.size[2]} slices of {header.size[0]}x{header.size[1]}, "
                    f"more than the limit of {limits.max_voxels} voxels"
                )
            limits.check_volume(shown, header, dicom=True)
        return
    if not stat.S_ISREG(info.st_mode):
        raise Refused(403, f"{shown}: not a regular file or folder")
    _check_readable(path, shown)
    for data in data_files(path):
        if local_only:
            raise Refused(400, f"{shown}: its header points at a data file elsewhere; upload a single file")
        if _inside(data, SYSTEM_FOLDERS) or (roots and not _inside(data, roots)):
            raise Refused(403, f"{shown}: its header points at a data file outside the allowed folders")
        if not stat.S_ISREG(_stat(data, data.name).st_mode):
            raise Refused(403, f"{shown}: its data file {data.name} is not a regular file")
        _check_readable(data, data.name)
    header = check_volume_budget(path, limits.max_voxels, limits.session_bytes, local_only)
    limits.check_volume(shown, header)
