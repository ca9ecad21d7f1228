"""A SamPredictor-compatible predictor that runs on any samfast backend.

Two tiers, as segment-anything's predict / predict_torch:
- people: set_image / predict / predict_batch on numpy in original image coordinates, prompts
  checked with one-line errors; masks come back in original image coordinates;
- programs: predict_rows decodes row i of a prompt batch against embedding row i (many slices in
  one call), trusting its inputs.
The Predictor does geometry and input checks; how a backend decodes (split decoder, image states,
rows in one call or one by one) is the backend's, behind samfast.backends.base.Backend.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from samfast import preprocess
from samfast.backends import Prompts
from samfast.errors import InputError
from samfast.models import get_spec, resolve_weights
from samfast.runtime.precision import Choice, resolve
from samfast.runtime.sets import backend_building_missing_set

MASK_THRESHOLD = 0.0
logger = logging.getLogger(__name__)


class Predictor:
    """``Predictor(model="litemedsam", backend="onnxruntime")`` then ``set_image`` and ``predict``."""

    def __init__(
        self,
        model: str = "litemedsam",
        backend: str | None = None,
        device: str = "cpu",
        precision: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        random_weights: bool = False,
        engine_dir: str | os.PathLike | None = None,
        log: Callable[[str], None] | None = None,
        threads: int | None = None,
        cache=None,
        profile: dict | None = None,
    ) -> None:
        """``cache``: a samfast.runtime.embedding_cache.EmbeddingCache; set_image then skips the
        encoder for a slice (same preprocessed pixels, model, weights, backend, precision) seen before.

        ``backend`` / ``precision`` left out: onnxruntime fp32, or with ``profile`` (a machine
        profile the caller loaded, samfast.runtime.profile.load_profile) the fastest configuration
        that passed the accuracy gate there; ``precision`` "auto" asks for the profile's pick
        explicitly (samfast.runtime.precision). Progress goes to ``log``, else the samfast logger."""
        log = log or logger.info
        self.spec = get_spec(model)
        self.weights = resolve_weights(self.spec.name, checkpoint, random_weights)
        self.choice = resolve(backend, device, precision, profile=profile, log=log, model=self.spec.name)
        if self.choice.source == "profile":
            log(f"machine profile: {self.choice.backend} {self.choice.precision} (samfast tune)")
        self.backend = backend_building_missing_set(
            self.choice.backend,
            self.spec.name,
            self.weights,
            device=device,
            precision=self.choice.precision,
            engine_dir=Path(engine_dir) if engine_dir else None,
            log=log,
            threads=threads,
        )
        self.cache = cache
        self.reset_image()

    @classmethod
    def from_backend(cls, model: str, weights, backend) -> Predictor:
        """A predictor over an already-built backend (e.g. an artifact set being verified)."""
        predictor = cls.__new__(cls)
        predictor.spec = get_spec(model)
        predictor.weights = weights
        predictor.backend = backend
        predictor.choice = Choice(backend.info.name, backend.info.precision, "given")
        predictor.cache = None
        predictor.reset_image()
        return predictor

    def with_cache(self, cache) -> Predictor:
        """Another predictor over the same backend (its sessions and image states shared) that
        keeps embeddings in ``cache``; this one is left as it is."""
        other = Predictor.from_backend(self.spec.name, self.weights, self.backend)
        other.choice = self.choice
        other.cache = cache
        return other

    # -- image -------------------------------------------------------------------------------

    def reset_image(self) -> None:
        self._embedding: np.ndarray | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.embedding_key: str | None = None

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """H×W or H×W×3 slice (any numeric dtype) -> (3, S, S) float32 encoder input."""
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise InputError(f"image must be H×W or H×W×3, got shape {image.shape}")
        if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
            raise InputError(f"image must be numeric, got dtype {image.dtype}")
        image = preprocess.to_three_channels(image.astype(np.float32))
        if not np.isfinite(image).all():
            raise InputError("image contains NaN or infinite values")
        size = self.spec.input_size
        resized = preprocess.resize_longest_side(image, size)
        if self.spec.normalization == "minmax":
            low, high = float(resized.min()), float(resized.max())
            resized = (resized - low) / max(high - low, 1e-8)
        else:
            resized = (resized - np.float32(self.spec.pixel_mean)) / np.float32(self.spec.pixel_std)
        # Padding after normalisation: padded pixels are 0 in the encoder's frame, as Sam.preprocess.
        padded = preprocess.pad_to_square(resized.astype(np.float32), size)
        return np.ascontiguousarray(padded.transpose(2, 0, 1))

    def set_image(self, image: np.ndarray) -> bool:
        """Compute and keep the embedding of one slice; True when ``cache`` had it (no encoder run)."""
        prepared = self.prepare_image(image)
        self._set_geometry(np.asarray(image).shape[:2])
        if self.cache is None:
            self._embedding = self.backend.encode(prepared[None])
            return False
        from samfast.runtime.embedding_cache import content_key, embedding_identity, encode_cached

        identity = embedding_identity(self)
        key = content_key(prepared, identity)
        cached = key in self.cache
        self._embedding = encode_cached(self.backend, prepared[None], self.cache, identity, [key])
        self.embedding_key = key
        return cached

    def _set_geometry(self, original_size: tuple[int, int]) -> None:
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = preprocess.preprocess_shape(self.original_size, self.spec.input_size)

    def get_image_embedding(self) -> np.ndarray:
        if self._embedding is None:
            raise InputError("no image set: call set_image first")
        return self._embedding.copy()

    def set_image_embedding(self, embedding: np.ndarray, original_size: tuple[int, int]) -> None:
        """Reuse an embedding computed earlier (for example from a cache) for a slice of this size."""
        embedding = np.asarray(embedding, dtype=np.float32)
        expected = (1, *self.spec.embedding_shape)
        if embedding.shape != expected:
            raise InputError(f"embedding shape {embedding.shape} does not fit {self.spec.name} {expected}")
        self._set_geometry(original_size)
        self._embedding = embedding
        self.embedding_key = None

    # -- prompts -----------------------------------------------------------------------------

    def _check_inside(self, xy: np.ndarray, what: str) -> None:
        height, width = self.original_size
        if (
            (xy[..., 0] < 0).any()
            or (xy[..., 1] < 0).any()
            or (xy[..., 0] > width).any()
            or (xy[..., 1] > height).any()
        ):
            raise InputError(f"{what} lies outside the {width}×{height} image")

    def _model_prompts(self, point_coords, point_labels, boxes, mask_input) -> Prompts:
        if self._embedding is None:
            raise InputError("no image set: call set_image first")
        if point_coords is None and boxes is None and mask_input is None:
            raise InputError("give at least one prompt: points, a box or a mask")
        if (point_coords is None) != (point_labels is None):
            raise InputError("point_coords and point_labels go together")
        size = self.spec.input_size
        prompts = Prompts()
        if point_coords is not None:
            coords = np.asarray(point_coords, dtype=np.float32)
            labels = np.asarray(point_labels, dtype=np.float32)
            if coords.ndim != 3 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
                raise InputError(
                    f"points must be B×N×2 with labels B×N, got {coords.shape} and {labels.shape}"
                )
            if not np.isfinite(coords).all():
                raise InputError("point coordinates must be finite numbers")
            if not np.isin(labels, (0, 1)).all():
                raise InputError("point labels must be 1 (foreground) or 0 (background)")
            self._check_inside(coords, "a point")
            prompts.point_coords = preprocess.transform_coords(coords, self.original_size, size)
            prompts.point_labels = labels
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise InputError(f"boxes must be B×4 x0 y0 x1 y1, got shape {boxes.shape}")
            if not np.isfinite(boxes).all():
                raise InputError("box coordinates must be finite numbers")
            if (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
                raise InputError("box is empty or inverted: need x0 < x1 and y0 < y1")
            self._check_inside(boxes.reshape(-1, 2, 2), "the box")
            prompts.boxes = preprocess.transform_boxes(boxes, self.original_size, size)
        if mask_input is not None:
            low = self.spec.low_res_size
            mask_input = np.asarray(mask_input, dtype=np.float32)
            if mask_input.ndim != 4 or mask_input.shape[1:] != (1, low, low):
                raise InputError(f"mask_input must be B×1×{low}×{low} low-res logits, got {mask_input.shape}")
            prompts.mask_input = mask_input
        batches = {
            v.shape[0] for v in (prompts.point_coords, prompts.boxes, prompts.mask_input) if v is not None
        }
        if len(batches) != 1:
            raise InputError(f"prompt fields disagree on the batch size: {sorted(batches)}")
        return prompts

    def postprocess_masks(
        self, low_res: np.ndarray, original_size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """(B, C, L, L) low-res logits -> (B, C, H, W) logits in original image coordinates
        (those of the current image, or of ``original_size`` (H, W) when given)."""
        size = self.spec.input_size
        original_size = self.original_size if original_size is None else tuple(int(v) for v in original_size)
        input_size = preprocess.preprocess_shape(original_size, size)
        # Sam.postprocess_masks in numpy (F.interpolate's bilinear, align_corners=False), so the
        # ONNX Runtime / OpenVINO path needs no torch.
        logits = preprocess.resize_bilinear(low_res, (size, size))
        logits = logits[..., : input_size[0], : input_size[1]]
        return preprocess.resize_bilinear(logits, original_size)

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B prompt sets against the current embedding.

        Returns masks (B, C, H, W), predicted IoUs (B, C) and low-res logits (B, C, L, L) with
        C = 3 when ``multimask_output`` else 1 (mask token 0, as MaskDecoder.forward picks).
        """
        prompts = self._model_prompts(point_coords, point_labels, boxes, mask_input)
        low_res, iou = self.backend.decode(self._embedding, prompts)
        tokens = slice(1, None) if multimask_output else slice(0, 1)
        low_res, iou = low_res[:, tokens], iou[:, tokens]
        masks = self.postprocess_masks(low_res)
        if not return_logits:
            masks = masks > MASK_THRESHOLD
        return masks, iou, low_res

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt set, as SamPredictor.predict: points N×2 with labels N, box of 4, mask_input
        1×L×L. Returns masks (C, H, W), predicted IoUs (C,) and low-res logits (C, L, L)."""
        masks, iou, low_res = self.predict_batch(
            None if point_coords is None else np.asarray(point_coords, np.float32)[None],
            None if point_labels is None else np.asarray(point_labels, np.float32)[None],
            None if box is None else np.asarray(box, np.float32).reshape(1, -1),
            None
            if mask_input is None
            else np.asarray(mask_input, np.float32).reshape(1, 1, *np.shape(mask_input)[-2:]),
            multimask_output,
            return_logits,
        )
        return masks[0], iou[0], low_res[0]

    # -- program tier ------------------------------------------------------------------------

    def predict_rows(
        self,
        embeddings: np.ndarray,
        rows: Sequence[int],
        original_size: tuple[int, int],
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompt row r against ``embeddings[rows[r]]``; prompts in original coordinates of slices
        of ``original_size`` (B×N×2 points, B×N labels, B×4 boxes, B×1×L×L logits), not checked.

        Returns low-res logits (B, C, L, L) and predicted IoUs (B, C), C = 3 or 1 as in predict_batch;
        ``masks`` turns a row's logits into masks.
        """
        size = self.spec.input_size
        prompts = Prompts(mask_input=None if mask_input is None else np.asarray(mask_input, np.float32))
        if point_coords is not None:
            prompts.point_coords = preprocess.transform_coords(
                np.asarray(point_coords, np.float32), original_size, size
            )
            prompts.point_labels = np.asarray(point_labels, np.float32)
        if boxes is not None:
            prompts.boxes = preprocess.transform_boxes(np.asarray(boxes, np.float32), original_size, size)
        low_res, iou = self.backend.decode_rows(embeddings, list(rows), prompts)
        tokens = slice(1, None) if multimask_output else slice(0, 1)
        return low_res[:, tokens], iou[:, tokens]

    def masks(self, low_res: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(C, L, L) low-res logits of one row -> (C, H, W) bool masks of a slice of ``original_size``
        (one row at a time: full-size logits of many slices would be a large transient)."""
        return self.postprocess_masks(low_res[None], original_size=original_size)[0] > MASK_THRESHOLD

    def describe(self) -> dict:
        return {"model": self.spec.name, "weights": self.weights.as_dict(), **self.backend.describe()}
