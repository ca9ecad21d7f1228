"""The split decoder's image states, computed once per embedding row and kept under a byte bound.

One key scheme: a state is keyed by where its embedding row's bytes live, the array that owns them
(held weakly, so a freed embedding never answers for a new array that reuses its address) and the
row's address in it. A view of a kept embedding (a slice of a batch, an EmbeddingCache entry handed
back again) finds its state; a copy gets its own. ~10.5 MB a row for LiteMedSAM: the default bound
keeps 12. Two admission rules, chosen by the caller (the backend's decode or decode_rows):
- ``evict=True`` (a person clicking): least recently used out, the slices in view stay;
- ``evict=False`` (a program scanning many rows every step): rows past the bound are recomputed per
  call instead of evicting, since cycling N > 12 rows through an LRU would miss on every row.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

STATE_BYTES = 128 << 20


def _owner(array: np.ndarray) -> np.ndarray:
    """The array whose memory ``array`` views (itself when it owns its data)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


class ImageStateCache:
    """``compute(embeddings)``: (B, C, h, w) -> the B rows' states, one array per state name."""

    def __init__(
        self, compute: Callable[[np.ndarray], dict[str, np.ndarray]], max_bytes: int = STATE_BYTES
    ) -> None:
        self.compute = compute
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple[int, int], tuple[weakref.ref, dict[str, np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.computed = 0

    def __len__(self) -> int:
        return len(self._items)

    def states(self, embeddings: np.ndarray, rows: Sequence[int], evict: bool) -> dict[str, np.ndarray]:
        """The states of ``embeddings[rows]``, stacked in that order (one array per state name)."""
        owner = _owner(embeddings)
        keys = {int(r): (id(owner), embeddings[int(r)].__array_interface__["data"][0]) for r in rows}
        found: dict[int, dict[str, np.ndarray]] = {}
        with self._lock:
            for row, key in keys.items():
                entry = self._items.get(key)
                if entry is not None and entry[0]() is owner:
                    self._items.move_to_end(key)
                    found[row] = entry[1]
        missing = [r for r in keys if r not in found]
        if missing:
            fresh = self.compute(np.ascontiguousarray(embeddings[missing]))
            self.computed += len(missing)
            for n, row in enumerate(missing):
                state = {name: value[n : n + 1].copy() for name, value in fresh.items()}
                found[row] = state
                self._admit(owner, keys[row], state, evict)
        parts = [found[int(r)] for r in rows]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _admit(self, owner: np.ndarray, key: tuple[int, int], state: dict, evict: bool) -> None:
        size = sum(v.nbytes for v in state.values())
        with self._lock:
            self._drop_dead()
            while evict and self._items and self.bytes + size > self.max_bytes:
                self._pop(next(iter(self._items)))
            if self.bytes + size <= self.max_bytes:
                self._items[key] = (weakref.ref(owner), state)
                self.bytes += size

    def _drop_dead(self) -> None:
        for key in [k for k, (ref, _) in self._items.items() if ref() is None]:
            self._pop(key)

    def _pop(self, key) -> None:
        _, state = self._items.pop(key)
        self.bytes -= sum(v.nbytes for v in state.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0
