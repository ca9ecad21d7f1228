"""libsamfast through ctypes, for the ctest scripts: the same calls a C host makes, from Python.

lib = Library("build/csrc/libsamfast.so")
with lib.open(folder) as model:
    model.set_slice(slice_hw)                       # float32 H×W or H×W×3
    masks, iou, low_res = model.predict(box=[54, 134, 98, 194])
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

STATUS_NAMES = [
    "SAMFAST_OK",
    "SAMFAST_ERR_INVALID_ARGUMENT",
    "SAMFAST_ERR_NOT_FOUND",
    "SAMFAST_ERR_MANIFEST",
    "SAMFAST_ERR_OUT_OF_RANGE",
    "SAMFAST_ERR_BUFFER_TOO_SMALL",
    "SAMFAST_ERR_NO_SLICE",
    "SAMFAST_ERR_UNSUPPORTED",
    "SAMFAST_ERR_RUNTIME",
    "SAMFAST_ERR_OUT_OF_MEMORY",
]

_f32p = ctypes.POINTER(ctypes.c_float)
_u8p = ctypes.POINTER(ctypes.c_uint8)
_intp = ctypes.POINTER(ctypes.c_int)
_text, _size, _int, _double = ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_double


def _chars(n: int):
    return ctypes.c_char * n


def _sized(*fields) -> list:
    """A samfast.h struct's fields: ``struct_size`` first, then ``fields`` in order."""
    return [("struct_size", _size), *fields]


class _Sized(ctypes.Structure):
    """A samfast.h struct, its struct_size set to this layout's size as SAMFAST_*_INIT does."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(ctypes.sizeof(type(self)), *args, **kwargs)

    def values(self) -> dict:
        """The fields after struct_size, text decoded."""
        got = {name: getattr(self, name) for name, _ in self._fields_[1:]}
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in got.items()}


class Info(_Sized):
    _fields_ = _sized(("model", _chars(32)), ("weights", _chars(96)), ("format", _chars(16)))
    _fields_ += [("backend", _chars(16)), ("device", _chars(16)), ("precision", _chars(8))]
    _fields_ += [("normalization", _chars(16)), ("input_size", _int), ("low_res_size", _int)]
    _fields_ += [("embedding_channels", _int), ("embedding_height", _int), ("embedding_width", _int)]
    _fields_ += [("cache_slices", _int), ("slice_bytes", _size)]


class Options(_Sized):
    _fields_ = _sized(("backend", _text), ("device", _text), ("precision", _text))
    _fields_ += [("cache_slices", _int), ("threads", _int)]


class Prompt(_Sized):
    _fields_ = _sized(("box", _f32p), ("points", _f32p), ("labels", _intp), ("n_points", _int))
    _fields_ += [("mask_input", _f32p), ("multimask", _int)]


class Output(_Sized):
    _fields_ = _sized(("masks", _u8p), ("masks_capacity", _size), ("iou", _f32p), ("iou_capacity", _size))
    _fields_ += [("low_res", _f32p), ("low_res_capacity", _size), ("n_masks", _int)]


class VolumeOptions(_Sized):
    _fields_ = _sized(("margin_mm", _double), ("momentum", _double), ("shape_prior", _double))
    _fields_ += [("min_pixels", _int), ("min_overlap", _double), ("min_score_ratio", _double)]
    _fields_ += [("min_score", _double)]


# name: (restype, argtypes); samfast_status is an int.
_model, _status, _volume_options = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(VolumeOptions)
_SIGNATURES = {
    "samfast_version": (_text, []),
    "samfast_status_name": (_text, [_int]),
    "samfast_last_error": (_text, []),
    "samfast_has_tensorrt": (_int, []),
    "samfast_has_backend": (_int, [_text]),
    "samfast_set_num_threads": (_status, [_int]),
    "samfast_open": (_status, [_text, _text, ctypes.POINTER(_model)]),
    "samfast_open_with": (_status, [_text, ctypes.POINTER(Options), ctypes.POINTER(_model)]),
    "samfast_close": (None, [_model]),
    "samfast_get_info": (_status, [_model, ctypes.POINTER(Info)]),
    "samfast_set_slice": (_status, [_model, _f32p, _int, _int, _int, _double, _double]),
    "samfast_get_slice": (_status, [_model, _intp, _intp, ctypes.c_void_p, ctypes.c_void_p]),
    "samfast_predict": (_status, [_model, ctypes.POINTER(Prompt), ctypes.POINTER(Output)]),
    "samfast_volume_options_init": (_status, [_volume_options, _size]),
    "samfast_segment_volume": (
        _status,
        [_model, _f32p, *[_int] * 3, *[_double] * 3, _f32p, _volume_options, _u8p, _f32p, _f32p],
    ),
}


class SamfastCError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.name = STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else f"status {status}"
        self.message = message
        super().__init__(f"{self.name}: {message}")


def _ptr(array: np.ndarray | None, kind):
    return None if array is None else array.ctypes.data_as(kind)


class Library:
    def __init__(self, path: str | Path) -> None:
        lib = ctypes.CDLL(str(path))
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        self.lib = lib

    def volume_options(self, **changes) -> VolumeOptions:
        """samfast_volume_options_init's defaults, with ``changes``."""
        options = VolumeOptions()
        self.check(self.lib.samfast_volume_options_init(ctypes.byref(options), ctypes.sizeof(options)))
        for name, value in changes.items():
            setattr(options, name, value)
        return options

    def volume_defaults(self) -> dict:
        """samfast_volume_options_init's values."""
        return self.volume_options().values()

    @property
    def version(self) -> str:
        return self.lib.samfast_version().decode()

    def last_error(self) -> str:
        return self.lib.samfast_last_error().decode()

    def check(self, status: int) -> None:
        if status != 0:
            raise SamfastCError(status, self.last_error())

    def set_num_threads(self, n: int) -> None:
        self.check(self.lib.samfast_set_num_threads(n))

    def has_backend(self, name: str) -> bool:
        return bool(self.lib.samfast_has_backend(name.encode()))

    def open(self, folder, device: str | None = None, **options) -> Model:
        """``options``: samfast_options fields (backend, precision, cache_slices, threads); with
        any given, samfast_open_with is called, else samfast_open."""
        return Model(self, folder, device, options or None)


class Model:
    def __init__(
        self, library: Library, folder, device: str | None = None, options: dict | None = None
    ) -> None:
        self.library = library
        self.handle = ctypes.c_void_p()
        encoded = None if folder is None else str(folder).encode()
        device_bytes = None if device is None else device.encode()
        if options is None:
            status = library.lib.samfast_open(encoded, device_bytes, ctypes.byref(self.handle))
        else:
            text = {
                k: None if options.get(k) is None else str(options[k]).encode()
                for k in ("backend", "precision")
            }
            opts = Options(
                device=device_bytes,
                cache_slices=int(options.get("cache_slices", 0)),
                threads=int(options.get("threads", 0)),
                **text,
            )
            status = library.lib.samfast_open_with(encoded, ctypes.byref(opts), ctypes.byref(self.handle))
        library.check(status)
        info = Info()
        library.check(library.lib.samfast_get_info(self.handle, ctypes.byref(info)))
        self.info = info.values()
        self.size: tuple[int, int] | None = None

    def close(self) -> None:
        if self.handle:
            self.library.lib.samfast_close(self.handle)
            self.handle = ctypes.c_void_p()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_slice(self, image: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> None:
        image = np.ascontiguousarray(image, dtype=np.float32)
        channels = 1 if image.ndim == 2 else image.shape[2]
        self.library.check(
            self.library.lib.samfast_set_slice(
                self.handle, _ptr(image, _f32p), image.shape[0], image.shape[1], channels, *spacing
            )
        )
        self.size = (image.shape[0], image.shape[1])

    def predict(
        self,
        box=None,
        points=None,
        labels=None,
        mask_input=None,
        multimask: bool = False,
        capacity: dict | None = None,
        want_low_res: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """masks (C, H, W) bool, IoUs (C,), low-res logits (C, L, L); capacity overrides buffer sizes."""
        height, width = self.size or (1, 1)
        count = 3 if multimask else 1
        low = self.info["low_res_size"]
        box = None if box is None else np.ascontiguousarray(box, np.float32).reshape(4)
        pts = None if points is None else np.ascontiguousarray(points, np.float32).reshape(-1, 2)
        labs = None if labels is None else np.ascontiguousarray(labels, np.int32).reshape(-1)
        mask = None if mask_input is None else np.ascontiguousarray(mask_input, np.float32).reshape(low, low)
        capacity = {"masks": count * height * width, "iou": count, "low_res": count * low * low} | (
            capacity or {}
        )
        masks = np.zeros(max(capacity["masks"], 1), np.uint8)
        iou = np.zeros(max(capacity["iou"], 1), np.float32)
        low_res = np.zeros(max(capacity["low_res"], 1), np.float32) if want_low_res else None
        prompt = Prompt(
            box=_ptr(box, _f32p),
            points=_ptr(pts, _f32p),
            labels=_ptr(labs, _intp),
            n_points=0 if pts is None else len(pts),
            mask_input=_ptr(mask, _f32p),
            multimask=int(multimask),
        )
        out = Output(
            masks=_ptr(masks, _u8p),
            masks_capacity=capacity["masks"],
            iou=_ptr(iou, _f32p),
            iou_capacity=capacity["iou"],
            low_res=_ptr(low_res, _f32p),
            low_res_capacity=capacity["low_res"] if want_low_res else 0,
        )
        self.library.check(
            self.library.lib.samfast_predict(self.handle, ctypes.byref(prompt), ctypes.byref(out))
        )
        n = out.n_masks
        return (
            masks[: n * height * width].reshape(n, height, width).astype(bool),
            iou[:n].copy(),
            None if low_res is None else low_res[: n * low * low].reshape(n, low, low).copy(),
        )

    def segment_volume(
        self,
        volume: np.ndarray,
        box3d,
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
        options: dict | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """samfast_segment_volume on a (z, y, x) volume with a 3D box x0 y0 z0 x1 y1 z1 and (z, y, x)
        spacing: (mask (z, y, x) bool, predicted IoU per slice (NaN: not segmented), box per
        slice (z, 4), NaN where none). ``options``: fields changed from the defaults."""
        volume = np.ascontiguousarray(volume, dtype=np.float32)
        depth, height, width = volume.shape
        box = np.ascontiguousarray(box3d, np.float32).reshape(6)
        opts = None if options is None else self.library.volume_options(**options)
        mask = np.zeros(volume.shape, np.uint8)
        scores = np.zeros(depth, np.float32)
        boxes = np.zeros((depth, 4), np.float32)
        self.library.check(
            self.library.lib.samfast_segment_volume(
                self.handle,
                _ptr(volume, _f32p),
                depth,
                height,
                width,
                *spacing,
                _ptr(box, _f32p),
                None if opts is None else ctypes.byref(opts),
                _ptr(mask, _u8p),
                _ptr(scores, _f32p),
                _ptr(boxes, _f32p),
            )
        )
        return mask.astype(bool), scores, boxes
