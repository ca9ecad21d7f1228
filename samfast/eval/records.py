"""The files of an evaluation run, written as it goes so an interrupted run resumes where it stopped.

``results.jsonl`` holds only deterministic content (same data, seed and backend -> the same bytes):
one "step" row per model call, then one "slice" row closing each slice, one "case" row closing each
case (its 3D metrics) and one "skipped" row per unusable case. Timings, which never repeat, go to
``timings.jsonl``. Rows of a slice whose closing row is missing are dropped on resume and redone.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from samfast.errors import InputError
from samfast.io import atomic_write_bytes

RESULTS = "results.jsonl"
TIMINGS = "timings.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
REPORT = "summary.md"


def pack_mask(mask: np.ndarray) -> str:
    """A 2D mask as compact text: packed bits, deflated, base64 (tumour masks shrink ~50×)."""
    return base64.b64encode(zlib.compress(np.packbits(np.asarray(mask, bool)).tobytes(), 9)).decode()


def unpack_mask(text: str, shape: tuple[int, int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(text)), np.uint8))
    return bits[: shape[0] * shape[1]].reshape(shape).astype(bool)


class SliceKey(NamedTuple):
    """What a slice row is found by: a resumed run's finished slices, a slice's neighbour."""

    case: str
    plane: str
    slice: int
    backend: str
    protocol: str


def slice_key(row: dict) -> SliceKey:
    return SliceKey(row["case"], row["plane"], row["slice"], row["backend"], row["protocol"])


def as_mask(value, shape: tuple[int, int]) -> np.ndarray:
    """A row's mask: the array itself in the run that made it, packed text in rows read back."""
    return unpack_mask(value, shape) if isinstance(value, str) else np.asarray(value, bool)


def _packed(value):
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return pack_mask(value)  # masks stay arrays until written
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(row: dict) -> str:
    return json.dumps(row, default=_packed)


def append_rows(sink, rows: list[dict]) -> None:
    """Rows written, flushed and fsynced together, so a crash or Ctrl-C loses at most this batch."""
    sink.write("".join(to_json(row) + "\n" for row in rows))
    sink.flush()
    os.fsync(sink.fileno())


def read_rows(path: Path) -> list[dict]:
    """Complete JSON lines; a line cut short by an interruption is ignored."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _complete_only(rows: list[dict]) -> list[dict]:
    closed = {slice_key(r) for r in rows if r["row"] == "slice"}
    return [r for r in rows if r["row"] != "step" or slice_key(r) in closed]


def make_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (and its parents) or refuse it in one line: an existing file, a read-only
    or full file system. A folder made here is removed again if it turns out unwritable."""
    from samfast.io.atomic import check_writable_folder

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; give a folder for --out")
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise InputError(f"{out_dir}: cannot create the results folder ({reason})") from None
    try:
        check_writable_folder(out_dir)
    except InputError:
        for folder in made:  # innermost first; only folders this call made, only if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def start_run(out_dir: Path, config: dict, fresh: bool) -> list[dict]:
    """Create or reopen ``out_dir``; return the finished rows. Refuses results of another config."""
    make_out_dir(out_dir)
    config_path = out_dir / CONFIG
    if fresh:
        for name in (RESULTS, TIMINGS, CONFIG, SUMMARY, REPORT):
            (out_dir / name).unlink(missing_ok=True)
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        if previous != config:
            changed = sorted(k for k in set(config) | set(previous) if previous.get(k) != config.get(k))
            raise InputError(
                f"{out_dir} holds results of another run ({', '.join(changed)} differ): "
                "pass --fresh or another --out"
            )
    else:
        atomic_write_bytes(config_path, (json.dumps(config, indent=2) + "\n").encode())
    rows = read_rows(out_dir / RESULTS)
    kept = _complete_only(rows)
    results = out_dir / RESULTS
    text = "".join(json.dumps(r) + "\n" for r in kept).encode()
    if results.is_file() and results.read_bytes() != text:
        # Rewrite without torn lines and unfinished slices, so appended rows continue cleanly.
        atomic_write_bytes(results, text)
    return kept
