"""The split decoder's image states, computed once per embedding row and kept under a byte bound.

A state is keyed by its embedding's content key where the caller has one (an EmbeddingCache key),
else by its embedding array (held weakly, so a freed embedding never answers for a new array that
reuses its address) and the row in it. ~10.5 MB a row for LiteMedSAM: the default bound
keeps 12. Two admission rules, chosen by the caller (the Predictor):
- ``evict=True`` (a person clicking): least recently used out, the slices in view stay;
- ``evict=False`` (a program scanning many rows every step): rows past the bound are recomputed per
  call instead of evicting, since cycling N > 12 rows through an LRU would miss on every row.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

STATE_BYTES = 128 << 20


class ImageStateCache:
    def __init__(self, backend, max_bytes: int = STATE_BYTES) -> None:
        self.backend = backend
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[object, tuple[weakref.ref | None, dict[str, np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.computed = 0

    def __len__(self) -> int:
        return len(self._items)

    def states(
        self, embeddings: np.ndarray, rows: Sequence[int], evict: bool, keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The states of ``embeddings[rows]``, stacked in that order (one array per state name);
        ``keys[i]``: content key of ``embeddings[rows[i]]``, if known."""
        named = {} if keys is None else {int(r): k for r, k in zip(rows, keys, strict=True)}
        found: dict[int, dict[str, np.ndarray]] = {}
        with self._lock:
            for row in dict.fromkeys(int(r) for r in rows):
                key = named.get(row, (id(embeddings), row))
                entry = self._items.get(key)
                if entry is not None and (entry[0] is None or entry[0]() is embeddings):
                    self._items.move_to_end(key)
                    found[row] = entry[1]
        missing = [r for r in dict.fromkeys(int(r) for r in rows) if r not in found]
        if missing:
            fresh = self.backend.image_state(np.ascontiguousarray(embeddings[missing]))
            self.computed += len(missing)
            for n, row in enumerate(missing):
                state = {name: value[n : n + 1].copy() for name, value in fresh.items()}
                found[row] = state
                self._admit(embeddings, row, named.get(row), state, evict)
        parts = [found[int(r)] for r in rows]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _admit(self, embeddings: np.ndarray, row: int, name: str | None, state: dict, evict: bool) -> None:
        size = sum(v.nbytes for v in state.values())
        with self._lock:
            self._drop_dead()
            while evict and self._items and self.bytes + size > self.max_bytes:
                self._pop(next(iter(self._items)))
            if self.bytes + size <= self.max_bytes:
                if name is None:
                    self._items[(id(embeddings), row)] = (weakref.ref(embeddings), state)
                else:
                    self._items[name] = (None, state)
                self.bytes += size

    def _drop_dead(self) -> None:
        for key in [k for k, (ref, _) in self._items.items() if ref is not None and ref() is None]:
            self._pop(key)

    def _pop(self, key) -> None:
        _, state = self._items.pop(key)
        self.bytes -= sum(v.nbytes for v in state.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0
