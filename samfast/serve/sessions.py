"""Sessions of the segmentation service: one open volume each, its embedding cache, its mask and undo.

Memory is bounded: at most ``max_sessions`` sessions (the least recently used is closed to make
room), ``max_undo`` undo steps each, and one content-keyed EmbeddingCache on the predictor holding
``cache_slices`` embeddings per session (shared: the same slice opened twice is encoded once). All
sessions share one predictor; its lock serialises model calls, so sessions never see each other's
embedding.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import gc
import secrets
import shutil
import threading
from pathlib import Path

import numpy as np

from samfast.clinical.prompts import SlicePrompt
from samfast.clinical.slice_model import SliceModel
from samfast.clinical.volume import Volume
from samfast.errors import InputError
from samfast.runtime.embedding_cache import EmbeddingCache


class SessionNotFound(KeyError):
    """No session with this id (never opened, closed, or evicted to make room)."""


@dataclasses.dataclass
class Session:
    id: str
    volume: Volume
    model: SliceModel
    mask: np.ndarray  # (z, y, x) bool: the current segmentation
    scratch: Path | None = None  # upload folder, removed with the session
    #: undo steps, each {slice: its mask before the change}: a prompt changes one slice, a
    #: propagation or an edit many, and each is one step
    history: collections.deque = dataclasses.field(default_factory=collections.deque)
    redo_steps: list = dataclasses.field(default_factory=list)  # undone steps, the newest last
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    prompts: dict = dataclasses.field(default_factory=dict)  # slice -> its last SlicePrompt
    segmentation: object | None = None  # the last propagation's VolumeSegmentation (for edits)
    last_slice: int | None = None  # where the user works: prefetch encodes around it
    #: a running propagation or edit holds ``walking``; setting ``cancel`` stops it at its next model call
    walking: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)

    def stop_walk(self) -> None:
        """Cancel a running propagation or edit and wait for it to let go (at most one model call)."""
        self.cancel.set()
        with self.walking:
            self.cancel.clear()

    def change(self, masks: dict) -> None:
        """Apply {slice: new mask} as one undo step."""
        with self.lock:
            self.history.append({z: self.mask[z].copy() for z in masks})
            self.redo_steps.clear()  # a new change ends what could be redone
            for z, mask in masks.items():
                self.mask[z] = mask

    def description(self) -> str:
        """What a person calls the series: its SeriesDescription, else the file or folder name."""
        series = self.volume.series
        text = str(getattr(series.datasets[0], "SeriesDescription", "") or "") if series is not None else ""
        return text.strip() or self.volume.path.name

    def describe(self) -> dict:
        image = self.volume.image
        return {
            "session": self.id,
            "size": list(image.GetSize()),
            "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()),
            "direction": list(image.GetDirection()),
            "dicom": self.volume.series is not None,
            "description": self.description(),
            "cached_slices": self.model.cached_slices(),
        }


class SessionStore:
    def __init__(self, predictor, max_sessions: int = 4, cache_slices: int = 16, max_undo: int = 64) -> None:
        if max_sessions < 1:
            raise InputError("max_sessions must be at least 1")
        self.max_sessions, self.cache_slices, self.max_undo = max_sessions, cache_slices, max_undo
        # The service's own predictor over the given one's backend, with an embedding cache sized
        # for its sessions; a predictor that brings its own cache is used as it is.
        self.predictor = predictor
        if predictor.cache is None:
            one = int(np.prod(predictor.spec.embedding_shape)) * 4  # float32
            self.predictor = predictor.with_cache(EmbeddingCache(max_bytes=cache_slices * max_sessions * one))
        self.model_lock = threading.Lock()
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, volume: Volume, normalize: str = "auto", scratch: Path | None = None) -> Session:
        model = SliceModel(self.predictor, volume.normalised(normalize), self.model_lock)
        session = Session(secrets.token_urlsafe(16), volume, model, np.zeros(volume.shape, bool), scratch)
        session.history = collections.deque(maxlen=self.max_undo)
        evicted = []
        with self._lock:
            while len(self._sessions) >= self.max_sessions:
                evicted.append(self._sessions.popitem(last=False)[1])
            self._sessions[session.id] = session
        _discard(evicted)
        return session

    def get(self, session_id: str) -> Session:
        with self._lock:
            if session_id not in self._sessions:
                raise SessionNotFound(session_id)
            self._sessions.move_to_end(session_id)
            return self._sessions[session_id]

    def close(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionNotFound(session_id)
        session.stop_walk()
        doomed = [session]
        del session  # the last reference goes with the list, before memory is trimmed
        _discard(doomed)

    def sessions(self) -> list[Session]:
        """The open sessions, the most recently used first."""
        with self._lock:
            return list(reversed(self._sessions.values()))

    def close_all(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), collections.OrderedDict()
        for session in sessions:
            session.stop_walk()
        _discard(sessions)

    def cache_bytes(self) -> int:
        return self.predictor.cache.bytes


def _discard(sessions: list[Session]) -> None:
    """Remove the sessions' uploads and give their memory back to the system."""
    if not sessions:
        return
    dicom = any(session.volume.series is not None for session in sessions)
    for session in sessions:
        if session.scratch is not None:
            shutil.rmtree(session.scratch, ignore_errors=True)
    sessions.clear()
    release_memory(collect=dicom)


def release_memory(collect: bool = False) -> None:
    """Ask glibc to return freed heap pages: numpy and ITK buffers of a few MB come from the heap
    once glibc's mmap threshold has grown, and free() alone keeps them mapped. ``collect`` first
    runs the cycle collector (pydicom datasets may hold cycles; it costs ~0.4 s with torch loaded,
    so plain volumes, freed by reference counting, skip it)."""
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def prompt_slice(session: Session, z: int, prompt: SlicePrompt) -> tuple[np.ndarray, float, bool]:
    """Run a prompt on slice z, make its mask the slice's segmentation; (mask, predicted IoU, cached)."""
    depth = session.volume.shape[0]
    if not 0 <= z < depth:
        raise InputError(f"slice {z} is out of range (0 to {depth - 1})")
    session.stop_walk()  # a new prompt replaces a running propagation
    mask, score, _, cached = session.model.predict(z, prompt)
    session.change({z: mask})
    session.prompts[z], session.last_slice = prompt, z
    return mask, score, cached


def undo(session: Session) -> list[int]:
    """Restore the slices of the last change (a prompt, a propagation, an edit); return them."""
    return _swap(session, session.history, session.redo_steps, "nothing to undo")


def redo(session: Session) -> list[int]:
    """Apply again the change undone last; return its slices."""
    return _swap(session, session.redo_steps, session.history, "nothing to redo")


def _swap(session: Session, source, target, empty: str) -> list[int]:
    session.stop_walk()
    with session.lock:
        if not source:
            raise InputError(empty)
        step = source.pop()
        target.append({z: session.mask[z].copy() for z in step})
        for z, mask in step.items():
            session.mask[z] = mask
    session.segmentation = None  # the walk's record no longer describes the mask
    return sorted(step)
