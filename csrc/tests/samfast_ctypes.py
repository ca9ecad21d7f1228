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


class Info(ctypes.Structure):
    _fields_ = [
        ("model", ctypes.c_char * 32),
        ("weights", ctypes.c_char * 96),
        ("format", ctypes.c_char * 16),
        ("backend", ctypes.c_char * 16),
        ("device", ctypes.c_char * 16),
        ("precision", ctypes.c_char * 8),
        ("normalization", ctypes.c_char * 16),
        ("input_size", ctypes.c_int),
        ("low_res_size", ctypes.c_int),
        ("embedding_channels", ctypes.c_int),
        ("embedding_height", ctypes.c_int),
        ("embedding_width", ctypes.c_int),
        ("cache_slices", ctypes.c_int),
        ("slice_bytes", ctypes.c_size_t),
    ]


class Options(ctypes.Structure):
    _fields_ = [
        ("backend", ctypes.c_char_p),
        ("device", ctypes.c_char_p),
        ("precision", ctypes.c_char_p),
        ("cache_slices", ctypes.c_int),
        ("threads", ctypes.c_int),
    ]


class Prompt(ctypes.Structure):
    _fields_ = [
        ("box", _f32p),
        ("points", _f32p),
        ("labels", _intp),
        ("n_points", ctypes.c_int),
        ("mask_input", _f32p),
        ("multimask", ctypes.c_int),
    ]


class Output(ctypes.Structure):
    _fields_ = [
        ("masks", _u8p),
        ("masks_capacity", ctypes.c_size_t),
        ("iou", _f32p),
        ("iou_capacity", ctypes.c_size_t),
        ("low_res", _f32p),
        ("low_res_capacity", ctypes.c_size_t),
        ("n_masks", ctypes.c_int),
    ]


class VolumeOptions(ctypes.Structure):
    _fields_ = [
        ("margin_mm", ctypes.c_double),
        ("momentum", ctypes.c_double),
        ("shape_prior", ctypes.c_double),
        ("min_pixels", ctypes.c_int),
        ("min_overlap", ctypes.c_double),
        ("min_score_ratio", ctypes.c_double),
        ("min_score", ctypes.c_double),
    ]


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
        lib.samfast_version.restype = ctypes.c_char_p
        lib.samfast_status_name.restype = ctypes.c_char_p
        lib.samfast_status_name.argtypes = [ctypes.c_int]
        lib.samfast_last_error.restype = ctypes.c_char_p
        lib.samfast_has_tensorrt.restype = ctypes.c_int
        lib.samfast_set_num_threads.argtypes = [ctypes.c_int]
        lib.samfast_has_backend.restype = ctypes.c_int
        lib.samfast_has_backend.argtypes = [ctypes.c_char_p]
        lib.samfast_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.samfast_open_with.argtypes = [
            ctypes.c_char_p,
            ctypes.POINTER(Options),
            ctypes.POINTER(ctypes.c_void_p),
        ]
        lib.samfast_close.argtypes = [ctypes.c_void_p]
        lib.samfast_close.restype = None
        lib.samfast_get_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(Info)]
        lib.samfast_set_slice.argtypes = [
            ctypes.c_void_p,
            _f32p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_double,
            ctypes.c_double,
        ]
        lib.samfast_get_slice.argtypes = [ctypes.c_void_p, _intp, _intp, ctypes.c_void_p, ctypes.c_void_p]
        lib.samfast_predict.argtypes = [ctypes.c_void_p, ctypes.POINTER(Prompt), ctypes.POINTER(Output)]
        lib.samfast_volume_options_init.argtypes = [ctypes.POINTER(VolumeOptions)]
        lib.samfast_volume_options_init.restype = None
        lib.samfast_segment_volume.argtypes = [
            ctypes.c_void_p,
            _f32p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_double,
            ctypes.c_double,
            ctypes.c_double,
            _f32p,
            ctypes.POINTER(VolumeOptions),
            _u8p,
            _f32p,
            _f32p,
        ]
        self.lib = lib

    def volume_defaults(self) -> dict:
        """samfast_volume_options_init's values."""
        options = VolumeOptions()
        self.lib.samfast_volume_options_init(ctypes.byref(options))
        return {name: getattr(options, name) for name, _ in VolumeOptions._fields_}

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
                text["backend"],
                device_bytes,
                text["precision"],
                int(options.get("cache_slices", 0)),
                int(options.get("threads", 0)),
            )
            status = library.lib.samfast_open_with(encoded, ctypes.byref(opts), ctypes.byref(self.handle))
        library.check(status)
        info = Info()
        library.check(library.lib.samfast_get_info(self.handle, ctypes.byref(info)))
        self.info = {
            name: (
                getattr(info, name).decode()
                if isinstance(getattr(info, name), bytes)
                else getattr(info, name)
            )
            for name, _ in Info._fields_
        }
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
            _ptr(box, _f32p),
            _ptr(pts, _f32p),
            _ptr(labs, _intp),
            0 if pts is None else len(pts),
            _ptr(mask, _f32p),
            int(multimask),
        )
        out = Output(
            _ptr(masks, _u8p),
            capacity["masks"],
            _ptr(iou, _f32p),
            capacity["iou"],
            _ptr(low_res, _f32p),
            capacity["low_res"] if want_low_res else 0,
            0,
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
        opts = None
        if options is not None:
            opts = VolumeOptions()
            self.library.lib.samfast_volume_options_init(ctypes.byref(opts))
            for name, value in options.items():
                setattr(opts, name, value)
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
