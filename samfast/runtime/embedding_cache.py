"""Embedding cache keyed by content: the preprocessed slice's bytes plus what made the embedding.

In memory with a byte bound (least recently used out first), optionally backed by a folder of .npy
files written atomically, so re-runs and interactive clicks skip the encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from samfast.io.atomic import atomic_path

DEFAULT_MAX_BYTES = 512 << 20  # ~128 LiteMedSAM embeddings (4 MiB each)


def embedding_identity(predictor) -> dict:
    """What besides the slice decides an embedding: model, weights, backend, device, precision."""
    info = predictor.backend.info
    return {
        "model": predictor.spec.name,
        "weights": predictor.weights.label,
        "backend": info.name,
        "device": info.device,
        "precision": info.precision,
    }


def content_key(prepared: np.ndarray, identity: dict) -> str:
    """sha256 of the identity and of one preprocessed (3, S, S) slice's dtype, shape and bytes."""
    prepared = np.ascontiguousarray(prepared)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    digest.update(f"{prepared.dtype.str}{prepared.shape}".encode())
    digest.update(prepared.data)
    return digest.hexdigest()


class EmbeddingCache:
    """``get(key)`` / ``put(key, embedding)``; counts hits, misses and evictions; thread-safe.

    Returned arrays are the stored ones, made read-only, so a hit costs no copy and cannot be
    altered by the caller. ``max_bytes`` bounds memory; ``folder`` adds a disk tier (unbounded
    there: it is the user's folder) that memory misses fall back to.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, folder: str | os.PathLike | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.disk_hits = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items or (self.folder is not None and self._file(key).exists())

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return value
        if self.folder is not None and self._file(key).exists():
            try:
                value = np.load(self._file(key))
            except (OSError, ValueError):
                value = None  # a damaged file is a miss; put() rewrites it
            if value is not None:
                with self._lock:
                    self.hits += 1
                    self.disk_hits += 1
                return self._remember(key, value)
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, embedding: np.ndarray) -> np.ndarray:
        """Store (a read-only copy of) ``embedding``; return the stored array."""
        value = np.array(embedding, copy=True)
        if self.folder is not None and not self._file(key).exists():
            with atomic_path(self._file(key)) as tmp, open(tmp, "wb") as handle:
                np.save(handle, value)
        return self._remember(key, value)

    def _remember(self, key: str, value: np.ndarray) -> np.ndarray:
        value.setflags(write=False)
        if value.nbytes > self.max_bytes:
            return value  # larger than the whole budget: hand it back, keep nothing
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.bytes -= evicted.nbytes
                self.evictions += 1
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def stats(self) -> dict:
        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "disk_hits": self.disk_hits,
            "evictions": self.evictions,
            "entries": len(self._items),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "hit_rate": self.hits / lookups if lookups else None,
        }


def encode_cached(
    backend, prepared: np.ndarray, cache: EmbeddingCache | None, identity: dict, keys: list[str] | None = None
) -> np.ndarray:
    """(B, 3, S, S) prepared slices -> (B, C, h, w) embeddings; only cache misses reach the
    encoder, in one call. ``keys``: the slices' content keys, when the caller has them already.
    One slice comes back as a view of the cached (read-only) array, not a copy: a split decoder's
    image state, keyed by where an embedding's bytes live, is then found again on the next visit."""
    if cache is None:
        return backend.encode(prepared)
    keys = keys or [content_key(p, identity) for p in prepared]
    found = [cache.get(k) for k in keys]
    missing = [i for i, value in enumerate(found) if value is None]
    if missing:
        fresh = backend.encode(np.ascontiguousarray(prepared[missing]))
        for i, embedding in zip(missing, fresh, strict=True):
            found[i] = cache.put(keys[i], embedding)
    return found[0][None] if len(found) == 1 else np.stack(found)
