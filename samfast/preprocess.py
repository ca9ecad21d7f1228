"""Intensity normalisation and SAM input geometry for medical images.
Pure numpy functions (no torch: the ONNX Runtime / OpenVINO path never imports it); intensity
outputs are float32 in [0, 255], never uint8. Resizing reproduces torch's F.interpolate."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

import numpy as np

# (level, width) in HU. MedSAM's [-500, 1000] and Ren et al.'s soft-tissue window.
CT_WINDOW_MEDSAM: tuple[float, float] = (250.0, 1500.0)
CT_WINDOW_REN: tuple[float, float] = (40.0, 400.0)


def _as_float32(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32)
    # NaN survives clipping and would silently poison every downstream pixel.
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or inf values")
    return arr


def _rescale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # Casting the bounds to float32 before clipping makes x == hi map to exactly 255.
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if hi32 <= lo32:
        return np.zeros(arr.shape, dtype=np.float32)
    clipped = np.clip(arr, lo32, hi32)
    return ((clipped - lo32) / (hi32 - lo32) * np.float32(255.0)).astype(np.float32)


def normalize_mr_putz(volume: np.ndarray) -> np.ndarray:
    """Putz et al. MRI rule: divide by the volume maximum and multiply by 255.

    Pass the whole volume, not a slice, so slices keep their relative brightness.
    Z-scored data has a negative background (e.g. -3.5), so the volume is first
    shifted by ``min(volume.min(), 0)``; the minimum then becomes exactly 0. For raw,
    non-negative MRI the shift is zero and this is exactly the paper's rule.

    Raises:
        ValueError: if the volume is empty, constant, or contains NaN/inf.
    """
    arr = _as_float32(volume)
    if arr.size == 0:
        raise ValueError("cannot normalise an empty volume")
    vmin, vmax = float(arr.min()), float(arr.max())
    if vmax == vmin:
        raise ValueError(f"cannot normalise a constant volume (every voxel is {vmin})")
    shifted = arr - np.float32(min(vmin, 0.0))
    return (shifted / shifted.max() * np.float32(255.0)).astype(np.float32)


def normalize_mr_percentile(
    image: np.ndarray,
    lower: float = 0.5,
    upper: float = 99.5,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """MedSAM MRI rule: clip to the [lower, upper] percentiles and rescale to [0, 255].

    Percentiles are taken over ``mask`` voxels when a mask is given (e.g. the brain),
    otherwise over all voxels; the clip is applied to the whole image. A degenerate
    range (upper percentile <= lower percentile) yields an all-zero image.
    """
    arr = _as_float32(image)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != arr.shape:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {arr.shape}")
        values = arr[mask]
    else:
        values = arr.ravel()
    if values.size == 0:
        raise ValueError("no voxels to compute percentiles from (empty image or mask)")
    lo, hi = np.percentile(values, [lower, upper])
    return _rescale(arr, float(lo), float(hi))


def window_ct(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """Clip CT to ``[level - width/2, level + width/2]`` HU and rescale to [0, 255]."""
    if width <= 0:
        raise ValueError(f"CT window width must be positive, got {width}")
    return _rescale(_as_float32(image), level - width / 2.0, level + width / 2.0)


def clip_pet_suv(image: np.ndarray, low: float = 0.0, high: float = 6.0) -> np.ndarray:
    """Clip PET to ``[low, high]`` SUV and rescale to [0, 255]."""
    if high <= low:
        raise ValueError(f"SUV range must satisfy high > low, got low={low}, high={high}")
    return _rescale(_as_float32(image), low, high)


def fuse_rgb(
    ct: np.ndarray,
    pet: np.ndarray,
    t1w: np.ndarray,
    t2w: np.ndarray,
    ct_window: tuple[float, float] = CT_WINDOW_REN,
) -> np.ndarray:
    """Ren et al. multimodal fusion into one H x W x 3 float32 image.

    R = windowed CT, G = PET clipped to 0-6 SUV, B = mean of T1w and T2w, each first
    clipped to [0th, 99.5th percentile] and scaled to [0, 255] (the paper's "0" is the
    image minimum here, which equals 0 for raw non-negative MRI).
    """
    shapes = {
        "ct": np.shape(ct),
        "pet": np.shape(pet),
        "t1w": np.shape(t1w),
        "t2w": np.shape(t2w),
    }
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{name}={shape}" for name, shape in shapes.items())
        raise ValueError(f"fuse_rgb needs equally shaped inputs, got {listed}")
    red = window_ct(ct, *ct_window)
    green = clip_pet_suv(pet)
    blue = (normalize_mr_percentile(t1w, lower=0.0) + normalize_mr_percentile(t2w, lower=0.0)) / 2
    return np.stack([red, green, blue], axis=-1).astype(np.float32)


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """Return an H x W x 3 float32 image from H x W, H x W x 1 or H x W x 3 input."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    raise ValueError(f"expected H x W, H x W x 1 or H x W x 3 image, got shape {arr.shape}")


NORMALIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "putz": normalize_mr_putz,
    "medsam-mr": partial(normalize_mr_percentile, lower=0.5, upper=99.5),
    "ct-medsam": partial(window_ct, level=CT_WINDOW_MEDSAM[0], width=CT_WINDOW_MEDSAM[1]),
    "ct-ren": partial(window_ct, level=CT_WINDOW_REN[0], width=CT_WINDOW_REN[1]),
    "pet": partial(clip_pet_suv, low=0.0, high=6.0),
}


def normalize(image: np.ndarray, preset: str) -> np.ndarray:
    """Apply the normaliser registered under ``preset`` in :data:`NORMALIZERS`."""
    try:
        fn = NORMALIZERS[preset]
    except KeyError:
        valid = ", ".join(sorted(NORMALIZERS))
        raise ValueError(f"unknown preset {preset!r}; valid presets: {valid}") from None
    return fn(image)


def preprocess_shape(original_size: tuple[int, int], target_length: int) -> tuple[int, int]:
    """(H, W) once the longest side of ``original_size`` is scaled to ``target_length``.

    Same rounding as segment-anything's ``ResizeLongestSide.get_preprocess_shape``.
    """
    height, width = original_size
    scale = target_length * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@cache
def interpolation_weights(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """(n_out, n_in) float32 matrix of torch's 1-D bilinear resampling, align_corners=False.

    ``antialias``: torch's separable antialiased kernel (upsample_bilinear2d_aa, PIL's rule): when
    shrinking, the triangle filter widens by the scale; weights are normalised per output pixel.
    Without it, plain bilinear (upsample_bilinear2d): two taps, the source index clamped at 0.
    Both compute the scale and centres in float32, as torch's CPU kernels do for float inputs;
    that is what makes the results agree with torch to a unit in the last place.
    """
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    weights = np.zeros((n_out, n_in), f32)
    rows = np.arange(n_out)
    if antialias:
        wide = scale >= 1.0
        support = scale if wide else f32(1.0)
        invscale = f32(1.0) / scale if wide else f32(1.0)
        centre = scale * (rows.astype(f32) + f32(0.5))
        low = np.maximum(np.trunc(centre - support + f32(0.5)), 0).astype(int)
        high = np.minimum(np.trunc(centre + support + f32(0.5)), n_in).astype(int)
        taps = np.arange(n_in)
        distance = (taps[None, :].astype(f32) - centre[:, None] + f32(0.5)) * invscale
        weights[:] = np.clip(f32(1.0) - np.abs(distance), 0, None)
        weights[(taps[None, :] < low[:, None]) | (taps[None, :] >= high[:, None])] = 0
        totals = weights.sum(axis=1, keepdims=True)
        return np.divide(weights, totals, out=weights, where=totals != 0)
    # scale * (i + 0.5) - 0.5 rounded once to float32 (a fused multiply-add in torch's kernel)
    source = (np.float64(scale) * (rows + 0.5) - 0.5).astype(f32)
    source = np.maximum(source, f32(0.0))
    first = source.astype(int)  # truncation, as the C++ cast
    second = np.minimum(first + 1, n_in - 1)
    frac = (source - first.astype(f32)).astype(f32)
    np.add.at(weights, (rows, first), f32(1.0) - frac)
    np.add.at(weights, (rows, second), frac)
    return weights


@cache
def interpolation_taps(n_in: int, n_out: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """``interpolation_weights`` as taps: (n_out, T) source indices and their float64 weights, T the
    widest run of non-zero weights; a row's unused taps point at its last source with weight 0."""
    dense = interpolation_weights(n_in, n_out, antialias)
    nonzero = dense != 0
    first = nonzero.argmax(axis=1)  # 0 for a row of zeros (none in practice)
    last = n_in - 1 - nonzero[:, ::-1].argmax(axis=1)
    index = first[:, None] + np.arange(int((last - first).max()) + 1)
    inside = index < n_in
    index = np.minimum(index, n_in - 1)
    weights = np.where(inside, np.take_along_axis(dense, index, axis=1), 0).astype(np.float64)
    return index, weights


def _resample(array: np.ndarray, axis: int, n_out: int, antialias: bool) -> np.ndarray:
    """One axis (-1 or -2) of float32 ``array`` resampled to ``n_out``: each output pixel is the sum
    of its taps; with more than two taps (antialiased downscaling) products and sum in float64,
    rounded once to float32 (float32 there was 3 ulps from torch on 512 -> 256).

    Elementwise numpy, not a matrix product: BLAS (OpenBLAS's sgemm) blocks its sums differently
    with its thread count, so the same slice came out a few float32 ulps apart in a 1-thread Ray
    worker (Ray sets OMP_NUM_THREADS=1) and a 2-thread process, and the decoder's predicted IoUs
    followed in their 6th decimal. Here the order of every sum is fixed by the taps,
    whatever the threads, the machine or the batch."""
    index, weights = interpolation_taps(array.shape[axis], n_out, antialias)
    if index.shape[1] <= 2:
        # Plain bilinear (two taps): float32 as torch's kernel computes it, w0 * x0 + w1 * x1;
        # ~3x faster than float64 on the mask upsampling every decoder step pays, same bound.
        weights = weights.astype(np.float32)
    if axis == -1:
        out = array[..., index[:, 0]] * weights[:, 0]
        for tap in range(1, index.shape[1]):
            out += array[..., index[:, tap]] * weights[:, tap]
    else:
        out = array[..., index[:, 0], :] * weights[:, 0, None]
        for tap in range(1, index.shape[1]):
            out += array[..., index[:, tap], :] * weights[:, tap, None]
    return out.astype(np.float32)


def resize_bilinear(array: np.ndarray, size: tuple[int, int], antialias: bool = False) -> np.ndarray:
    """Resize the last two axes (H, W) of ``array`` to ``size`` as
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=antialias)`` does: width
    first, then height, each axis left alone when its size does not change (as torch does).
    Bitwise the same whatever the thread count (see ``_resample``)."""
    out = np.asarray(array, dtype=np.float32)
    height, width = out.shape[-2:]
    if width != size[1]:
        out = _resample(out, -1, int(size[1]), antialias)
    if height != size[0]:
        out = _resample(out, -2, int(size[0]), antialias)
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_longest_side(image: np.ndarray, target_length: int) -> np.ndarray:
    """Resize H x W x C (or H x W) float image so its longest side is ``target_length``.

    Bilinear with antialiasing on float32, as in SAM's ``apply_image_torch``.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected H x W or H x W x C image, got shape {arr.shape}")
    # ResizeLongestSide.apply_image_torch sizes its output from shape[0], shape[1] of a BCHW
    # tensor, i.e. batch and channels (github.com/facebookresearch/segment-anything/issues/218),
    # so we reuse its size rule and interpolation settings rather than the method itself.
    size = preprocess_shape(arr.shape[:2], target_length)
    if arr.ndim == 2:
        return resize_bilinear(arr, size, antialias=True)
    return np.ascontiguousarray(
        resize_bilinear(arr.transpose(2, 0, 1), size, antialias=True).transpose(1, 2, 0)
    )


def pad_to_square(image: np.ndarray, size: int, value: float = 0.0) -> np.ndarray:
    """Pad H x W or H x W x C on the bottom and right to ``size`` x ``size``.

    SAM expects content anchored top-left so prompt coordinates need no offset.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected H x W or H x W x C image, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if h > size or w > size:
        raise ValueError(f"image of shape {arr.shape} does not fit in {size} x {size}")
    pad = [(0, size - h), (0, size - w)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode="constant", constant_values=value)


def transform_coords(coords: np.ndarray, original_size: tuple[int, int], target_length: int) -> np.ndarray:
    """Scale (x, y) points, N x 2 or B x N x 2, from ``original_size`` (H, W).

    Output is in the resized frame of :func:`resize_longest_side`.
    """
    coords = np.asarray(coords)
    if coords.ndim < 1 or coords.shape[-1] != 2:
        raise ValueError(f"coords must end in a dimension of 2 (x, y), got shape {coords.shape}")
    return _scale_coords(coords, original_size, target_length).astype(np.float32)


def transform_boxes(boxes: np.ndarray, original_size: tuple[int, int], target_length: int) -> np.ndarray:
    """Scale (x0, y0, x1, y1) boxes, 4 or B x 4, from ``original_size`` (H, W).

    Output is in the resized frame of :func:`resize_longest_side`.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim not in (1, 2) or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (4,) or (B, 4), got {boxes.shape}")
    out = _scale_coords(boxes.reshape(-1, 2, 2), original_size, target_length)
    return out.reshape(boxes.shape).astype(np.float32)


def _scale_coords(coords: np.ndarray, original_size: tuple[int, int], target_length: int) -> np.ndarray:
    """segment-anything's ResizeLongestSide.apply_coords: (x, y) scaled in float64 per axis."""
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape((old_h, old_w), target_length)
    out = np.array(coords, dtype=float)
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out
