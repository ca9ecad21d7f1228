"""The contouring page at ``/`` and the one route it needs beyond the API: a slice of the image.

The page (static/page: HTML, plain JavaScript, CSS) ships inside the package and is served by the
app itself, without the key: it holds nothing, asks for the key and keeps it in sessionStorage, and
every request it makes carries the key in the X-API-Key header. No CDN, no build step: planning
workstations often have no internet.

``GET /sessions/{id}/image`` gives one slice of the original intensities (not the model's input),
axial, coronal or sagittal, so the page can window it and draw the reformats.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from samfast.errors import InputError

PAGE_DIR = Path(__file__).with_name("static") / "page"
PAGE_PREFIX = "/page"
PAGE_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# no-cache: the browser asks again each time (a 304 is cheap), so a reinstalled page is never stale.
CACHE_CONTROL = "no-cache"
Plane = Literal["axial", "coronal", "sagittal"]
_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}  # the numpy (z, y, x) axis a plane fixes


class ImageSlice(BaseModel):
    plane: Plane
    index: int
    shape: list[int] = Field(description="rows, columns: axial (y, x), coronal (z, x), sagittal (z, y)")
    dtype: Literal["int16", "float32"] = Field(description="of the values in data")
    data: str = Field(description="base64 of the slice's values, little-endian, row-major")


def page_paths() -> set[tuple[str, str]]:
    """(method, path) pairs the Guard lets through without the key: the page and its files."""
    paths = ["/", *(f"{PAGE_PREFIX}/{name}" for name in PAGE_FILES)]
    return {(method, path) for path in paths for method in ("GET", "HEAD")}


def image_slice(array: np.ndarray, plane: str, index: int) -> dict:
    """One plane of a (z, y, x) volume; integers that fit go as int16 (half the bytes of float32)."""
    axis = _AXIS[plane]
    if not 0 <= index < array.shape[axis]:
        raise InputError(f"{plane} index {index} is out of range (0 to {array.shape[axis] - 1})")
    values = np.take(array, index, axis=axis)
    fits = np.issubdtype(values.dtype, np.integer) and (
        values.size == 0 or (values.min() >= -32768 and values.max() <= 32767)
    )
    out = values.astype("<i2" if fits else "<f4")
    return {
        "plane": plane,
        "index": index,
        "shape": list(out.shape),
        "dtype": "int16" if fits else "float32",
        "data": base64.b64encode(np.ascontiguousarray(out).tobytes()).decode(),
    }


def add_viewer_routes(app: FastAPI, store, errors: dict) -> None:
    """The page, its files, and the image route (``errors``: the spec's error responses for it)."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            PAGE_DIR / "index.html", media_type="text/html; charset=utf-8",
            headers={"Cache-Control": CACHE_CONTROL},
        )  # fmt: skip

    @app.api_route(f"{PAGE_PREFIX}/{{name}}", methods=["GET", "HEAD"], include_in_schema=False)
    def page_file(name: str) -> FileResponse:
        if name not in PAGE_FILES:  # one fixed list: nothing else in the folder is served
            raise HTTPException(404, f"no file {name!r}")
        return FileResponse(
            PAGE_DIR / name, media_type=PAGE_FILES[name], headers={"Cache-Control": CACHE_CONTROL}
        )

    @app.get("/sessions/{session_id}/image", responses=errors)
    def image(
        session_id: str,
        index: int = Query(ge=0, description="The slice along the plane's axis (z, y or x)."),
        plane: Plane = "axial",
    ) -> ImageSlice:
        """One slice of the volume's intensities as stored (not the model's input), for display."""
        session = store.get(session_id)
        return ImageSlice(**image_slice(session.volume.array(), plane, index))
