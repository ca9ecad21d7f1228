"""The predictor bound to one volume: encode a slice once, then answer prompts on it with the decoder.

Up to ``cache_slices`` embeddings are kept (least recently used goes first), so a second prompt on
an already-encoded slice costs one decoder call. A shared lock lets several volumes use one predictor.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

from samfast.clinical.prompts import SlicePrompt


class SliceModel:
    def __init__(self, predictor, volume_input: np.ndarray, cache_slices: int = 0, lock=None) -> None:
        self.predictor = predictor
        self.volume_input = volume_input  # (z, y, x) normalised intensities
        self.cache_slices = cache_slices
        self.lock = lock or threading.Lock()
        self._embeddings: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def is_cached(self, z: int) -> bool:
        return z in self._embeddings

    def _select(self, z: int) -> bool:
        """Make slice z the predictor's image; True when it came from the cache (no encoder run)."""
        shape = self.volume_input.shape[1:]
        if z in self._embeddings:
            self._embeddings.move_to_end(z)
            self.predictor.set_image_embedding(self._embeddings[z], shape)
            return True
        self.predictor.set_image(self.volume_input[z])
        if self.cache_slices > 0:
            self._embeddings[z] = self.predictor.get_image_embedding()
            while len(self._embeddings) > self.cache_slices:
                self._embeddings.popitem(last=False)
        return False

    def predict(self, z: int, prompt: SlicePrompt, mask_input: np.ndarray | None = None):
        """(mask H×W bool, predicted IoU, low-res logits, cached) for one slice's prompt.

        Clicks without a box ask for three masks and keep the best-scored one (SAM's advice for an
        ambiguous single click); a box gives one mask.
        """
        multimask = prompt.box is None
        with self.lock:
            cached = self._select(int(z))
            masks, scores, logits = self.predictor.predict(
                point_coords=prompt.points,
                point_labels=prompt.labels,
                box=prompt.box,
                mask_input=mask_input,
                multimask_output=multimask,
            )
        best = int(np.argmax(scores))
        return masks[best], float(scores[best]), logits[best], cached

    def cache_bytes(self) -> int:
        return sum(e.nbytes for e in self._embeddings.values())
