"""3D in the service: a session's propagation streamed slice by slice, edits, and idle-time prefetch.

A propagation runs on its own thread and hands each kept slice to the response as an NDJSON record,
so a client draws slices while the walk runs; its masks become the session's in one undo step when
the walk completes. A new prompt, propagation, undo or close on the session cancels it at its next
model call (Session.stop_walk), as does a client that stops reading the stream.

Prefetch: after each prompt the slices around the user's slice are encoded, nearest first in both
directions, one encoder call at a time under the model lock, so a request waits for at most one
encoder call; a new prompt restarts it around the new slice.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator

import numpy as np

from samfast.clinical.prompts import VolumePrompts, build_prompts
from samfast.clinical.propagate import PropagationRule
from samfast.clinical.segment import edit_volume, segment_volume
from samfast.errors import InputError, SamfastError

log = logging.getLogger("samfast.serve")
_END = object()
#: Seconds a session must be quiet before prefetch starts: a burst of clicks is not slowed by it.
PREFETCH_IDLE_S = 0.1
#: Default slices encoded each side of the user's slice (serve --prefetch).
PREFETCH_EACH_SIDE = 2


class Cancelled(Exception):
    """The walk was cancelled (a newer request on the session, or the client left)."""


def packed(mask: np.ndarray) -> dict:
    """A mask as its shape and base64 of np.packbits (row-major, 1 bit a pixel)."""
    return {"shape": list(mask.shape), "packbits": base64.b64encode(np.packbits(mask)).decode()}


def packed_volume(mask: np.ndarray) -> dict:
    """A whole (z, y, x) mask, cropped to its bounding box: 1 bit a voxel, gzip, base64."""
    import gzip

    if not mask.any():
        return {"shape": list(mask.shape), "offset": [0, 0, 0], "box_shape": [0, 0, 0], "data": ""}
    spans = [np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))]
    offset = [int(s[0]) for s in spans]
    crop = mask[tuple(slice(s[0], s[-1] + 1) for s in spans)]
    data = base64.b64encode(gzip.compress(np.packbits(crop).tobytes(), 6)).decode()
    return {"shape": list(mask.shape), "offset": offset, "box_shape": list(crop.shape), "data": data}


def propagation_prompts(session, box: list[float] | None) -> VolumePrompts:
    """From a 3D box (voxel indices), or from the prompts already given on the session's slices."""
    if box is not None:
        return build_prompts(session.volume.image, list(box))
    if not session.prompts:
        raise InputError("nothing to propagate from: give a 3D box, or prompt a slice first")
    depth = session.volume.shape[0]
    return VolumePrompts(dict(session.prompts), (0, depth - 1))


def _pixel_spacing(session) -> tuple[float, float]:
    spacing = session.volume.image.GetSpacing()
    return float(spacing[1]), float(spacing[0])


def _record(z: int, mask: np.ndarray, score: float, box) -> dict:
    return {
        "slice": int(z),
        "pixels": int(mask.sum()),
        "predicted_iou": float(score),
        "box": None if box is None else [float(v) for v in box],
        "mask": packed(mask),
    }


def _walk_in_thread(session, run, on_done) -> AsyncIterator[str]:
    """Run ``run(on_step, on_slice)`` on a thread holding session.walking (taken by the caller),
    yielding NDJSON lines as slices come; ``on_done(result)`` gives the final record's fields."""
    records: queue.Queue = queue.Queue()
    started = time.perf_counter()

    def on_slice(z: int) -> None:
        if session.cancel.is_set():
            raise Cancelled

    def on_step(z, mask, score, box) -> None:
        records.put(_record(z, mask, score, box))

    def work() -> None:
        final = {"done": True}
        try:
            result = run(on_step, on_slice)
            final.update(status="complete", **on_done(result))
        except Cancelled:
            final.update(status="cancelled", detail="cancelled by a newer request or the client leaving")
        except SamfastError as error:
            final.update(status="error", detail=str(error).splitlines()[0])
        except Exception:
            log.exception("propagation failed")
            final.update(status="error", detail="internal error (see the server log)")
        finally:
            session.walking.release()
        final["elapsed_ms"] = round(1e3 * (time.perf_counter() - started), 1)
        records.put(final)
        records.put(_END)

    threading.Thread(target=work, name=f"samfast-walk-{session.id[:6]}", daemon=True).start()
    return _lines(records, session)


async def _lines(records: queue.Queue, session) -> AsyncIterator[str]:
    """The walk's records as NDJSON lines. An async generator on purpose: when the client leaves,
    the server cancels the response's task, which raises here at once, and the walk is told to stop
    (a sync generator would wait in a worker thread for the next record before it could notice)."""
    import anyio

    item = None
    try:
        while True:
            try:
                item = records.get_nowait()
            except queue.Empty:
                await anyio.sleep(0.01)
                continue
            if item is _END:
                return
            yield json.dumps(item) + "\n"
    finally:  # the client stopped reading: a running walk stops too
        if item is not _END:
            session.cancel.set()


def start_walk(session) -> None:
    """Cancel what runs on the session and take its walk lock (released by the walk's thread)."""
    session.stop_walk()
    session.walking.acquire()


def stream_propagation(session, prompts: VolumePrompts, rule: PropagationRule) -> AsyncIterator[str]:
    """NDJSON: one record per slice as the walk keeps it, then a final record (status, slices,
    voxels, stops, rule). The session's mask changes once, in one undo step, when the walk completes."""
    start_walk(session)

    def run(on_step, on_slice):
        return segment_volume(
            session.model, prompts, _pixel_spacing(session), "3d", rule, on_slice, on_step, prefetch=False
        )

    def done(result) -> dict:
        touched = sorted(result.scores)
        session.change({z: result.mask[z] for z in touched})
        session.segmentation = result
        if result.anchors:
            session.last_slice = result.anchors[0]
        summary = {k: v for k, v in result.summary().items() if k != "slices"}  # each slice was streamed
        return {"slices": touched, "voxels": int(session.mask.sum()), **summary}

    return _walk_in_thread(session, run, done)


def run_edit(session, z: int, prompt) -> dict:
    """Correct slice ``z`` and re-walk from it (one undo step); needs a propagation first."""
    previous = session.segmentation
    if previous is None:
        raise InputError("an edit re-walks a propagation: propagate first (an undo forgets the walk)")
    start_walk(session)
    try:
        result, rerun = edit_volume(session.model, previous, z, prompt, _pixel_spacing(session))
    finally:
        session.walking.release()
    changed = [
        k for k in range(session.volume.shape[0]) if not np.array_equal(result.mask[k], previous.mask[k])
    ]
    session.change({k: result.mask[k] for k in sorted({*rerun, *changed})})
    session.segmentation, session.last_slice = result, z
    session.prompts[z] = prompt
    return {
        "slice": z,
        "rerun": rerun,
        "stops": result.stops,
        "voxels": int(session.mask.sum()),
        "masks": [{"slice": k, "mask": packed(session.mask[k])} for k in sorted({*rerun, *changed})],
    }


class Prefetcher:
    """Encode, while sessions are idle, the slices around each session's last slice (module doc)."""

    def __init__(self, store, slices_each_side: int) -> None:
        self.store, self.each_side = store, max(0, int(slices_each_side))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_request = time.monotonic()
        self.encoded = 0
        self._thread = None
        if self.each_side:
            self._thread = threading.Thread(target=self._run, name="samfast-prefetch", daemon=True)
            self._thread.start()

    def touch(self) -> None:
        """A request arrived: prefetch pauses, and restarts around the newest slice once idle."""
        self._last_request = time.monotonic()
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _order(self, session) -> list[int]:
        depth, z = session.volume.shape[0], session.last_slice
        near = [z + sign * k for k in range(1, self.each_side + 1) for sign in (1, -1)]
        return [n for n in near if 0 <= n < depth]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set() and time.monotonic() - self._last_request < PREFETCH_IDLE_S:
                time.sleep(PREFETCH_IDLE_S / 3)
            for session in self.store.sessions():
                if self._wake.is_set() or self._stop.is_set():
                    break  # a new request: start again around its slice
                if session.last_slice is None or session.walking.locked():
                    continue
                for z in self._order(session):
                    if self._wake.is_set() or self._stop.is_set():
                        break
                    try:  # one slice a lock hold: a request waits for at most one encoder call
                        self.encoded += session.model.prefetch([z], stop=self._wake.is_set)
                    except Exception:  # a closed session's volume, an encoder failure: not the user's
                        log.debug("prefetch of slice %d failed", z, exc_info=True)
                        break
