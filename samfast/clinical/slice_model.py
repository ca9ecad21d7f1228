"""The predictor bound to one volume: encode a slice, then answer prompts on it with the decoder.

Embeddings are kept by the predictor's one content-keyed EmbeddingCache (``predictor.cache``, shared
by every volume and session on that predictor), so a second prompt on an already-encoded slice costs
one decoder call. A shared lock lets several volumes use one predictor.
"""

from __future__ import annotations

import threading

import numpy as np

from samfast.clinical.prompts import SlicePrompt


class SliceModel:
    def __init__(self, predictor, volume_input: np.ndarray, lock=None) -> None:
        self.predictor = predictor
        self.volume_input = volume_input  # (z, y, x) normalised intensities
        self.lock = lock or threading.Lock()
        self._keys: dict[int, str] = {}  # slice -> content key of its embedding in the cache

    def is_cached(self, z: int) -> bool:
        cache, key = self.predictor.cache, self._keys.get(int(z))
        return cache is not None and key is not None and key in cache

    def cached_slices(self) -> int:
        return sum(self.is_cached(z) for z in self._keys)

    def prefetch(self, slices, stop=lambda: False) -> int:
        """Encode the slices a walk will need, in the streamer's batches, each once: the walk's
        next slices are known before their boxes are. The model lock is taken per batch, so a
        prompt waits at most one encoder call; ``stop()`` ends the prefetch between batches.
        Returns how many slices were handed to the encoder; without an embedding cache there is
        nowhere to keep them, so nothing is done."""
        cache = self.predictor.cache
        if cache is None:
            return 0
        from samfast.runtime.streaming import SliceStreamer

        # no more than the cache holds: prefetching past it would evict the walk's own next slices
        fits = cache.max_bytes // (4 * int(np.prod(self.predictor.spec.embedding_shape)))
        missing = [int(z) for z in dict.fromkeys(slices) if not self.is_cached(z)][: max(0, fits - 1)]
        if not missing:
            return 0
        done = 0
        with SliceStreamer(self.predictor, self.volume_input, indices=missing, cache=cache) as stream:
            batches = iter(stream)
            while not stop():
                with self.lock:
                    batch = next(batches, None)
                if batch is None:
                    break
                self._keys.update(zip(batch.indices, batch.keys, strict=True))
                done += len(batch.indices)
        return done

    def predict(self, z: int, prompt: SlicePrompt, mask_input: np.ndarray | None = None):
        """(mask H×W bool, predicted IoU, low-res logits, cached) for one slice's prompt.

        Clicks without a box ask for three masks and keep the best-scored one (SAM's advice for an
        ambiguous single click); a box gives one mask.
        """
        multimask = prompt.box is None
        with self.lock:
            cached = self.predictor.set_image(self.volume_input[int(z)])
            if self.predictor.cache is not None:
                self._keys[int(z)] = self.predictor.embedding_key
            masks, scores, logits = self.predictor.predict(
                point_coords=prompt.points,
                point_labels=prompt.labels,
                box=prompt.box,
                mask_input=mask_input,
                multimask_output=multimask,
            )
        best = int(np.argmax(scores))
        return masks[best], float(scores[best]), logits[best], cached
