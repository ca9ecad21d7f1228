"""The server's scratch folder for uploads: one per process, marked with its owner, removed on
shutdown; at start-up, folders left by a samfast server that died (SIGKILL, power loss) are removed.

Only folders carrying samfast's marker, whose process is gone, are touched: never a stranger's file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "samfast-serve-"
MARKER = ".samfast-serve-owner"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): a reused pid differs."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def _alive(owner: dict) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return True  # not a marker we wrote: leave it alone
    if not Path("/proc/self/stat").exists():  # no procfs: fall back to "does the pid exist"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _start_time(pid) == owner.get("start")


def remove_stale(parent: Path) -> list[Path]:
    """Remove scratch folders under ``parent`` whose marked owner process is gone; return them."""
    removed = []
    for folder in parent.glob(PREFIX + "*"):
        marker = folder / MARKER
        try:
            owner = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(owner, dict) and not folder.is_symlink() and not _alive(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class Scratch:
    """``start()`` makes the marked root; ``new()`` a folder per upload; ``close()`` removes all."""

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        self.parent = Path(parent or tempfile.gettempdir())
        self.root: Path | None = None

    def start(self) -> list[Path]:
        removed = remove_stale(self.parent)
        pid = os.getpid()
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{pid}-", dir=self.parent))
        (self.root / MARKER).write_text(json.dumps({"pid": pid, "start": _start_time(pid)}))
        return removed

    def new(self) -> Path:
        if self.root is None:
            self.start()
        return Path(tempfile.mkdtemp(prefix="upload-", dir=self.root))

    def close(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
