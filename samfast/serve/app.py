"""The HTTP API of `samfast serve` (FastAPI): open a volume, click/box -> mask, undo, export.

Every request needs the API key (header X-API-Key, compared in constant time) and bodies above
``max_body_bytes`` are refused with 413 before they are read. Errors are JSON {"detail": "..."}:
bad input 4xx, a bug 500 with one line; the server keeps serving either way.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from samfast.clinical.prompts import SlicePrompt
from samfast.clinical.volume import VOLUME_SUFFIXES, load_volume, write_volume_mask
from samfast.errors import InputError, SamfastError
from samfast.io.atomic import full_suffix
from samfast.serve.sessions import SessionNotFound, SessionStore, prompt_slice, undo

log = logging.getLogger("samfast.serve")
API_KEY_HEADER = "x-api-key"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class Guard:
    """ASGI middleware: the API key on every request, and a cap on the body size."""

    def __init__(self, app, api_key: str, max_body_bytes: int) -> None:
        self.app, self.key, self.limit = app, api_key.encode(), max_body_bytes

    async def _refuse(self, send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if not hmac.compare_digest(headers.get(API_KEY_HEADER.encode(), b""), self.key):
            return await self._refuse(send, 401, f"missing or wrong API key (header {API_KEY_HEADER})")
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            return await self._refuse(send, 413, f"request body larger than {self.limit} bytes")
        received = 0

        async def counted():  # chunked bodies carry no length: count as they arrive
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


class OpenRequest(BaseModel):
    path: str = Field(description="A NIfTI/NRRD/MHA file or a DICOM series folder on the server.")
    normalize: str = Field("auto", description="auto, putz, medsam-mr, ct-medsam, ct-ren, pet, none.")


class PromptRequest(BaseModel):
    slice: int = Field(description="Axial slice index z.")
    box: list[float] | None = Field(None, description="x0 y0 x1 y1 in voxel indices of the slice.")
    points: list[list[float]] | None = Field(None, description="Clicks [x, y, label]; 1 fg, 0 bg.")


class ExportRequest(BaseModel):
    roi_name: str = "SAMFAST"
    color: list[int] = [255, 0, 0]
    roi_type: str = Field("GTV", description="RTROIInterpretedType: GTV, CTV, PTV, ORGAN, ...")
    send: str | None = Field(None, description="AE@HOST:PORT: also C-STORE the RTSTRUCT to this DICOM node.")


def _packed(mask: np.ndarray) -> dict:
    """A mask as rows/columns and base64 of np.packbits (row-major, 1 bit a pixel)."""
    return {"shape": list(mask.shape), "packbits": base64.b64encode(np.packbits(mask)).decode()}


def _slice_prompt(request: PromptRequest) -> SlicePrompt:
    if request.box is None and not request.points:
        raise InputError("give a box and/or points")
    if request.box is not None and len(request.box) != 4:
        raise InputError("box needs 4 numbers x0 y0 x1 y1")
    prompt = SlicePrompt(box=None if request.box is None else np.array(request.box, np.float32))
    if request.points:
        if any(len(p) != 3 for p in request.points):
            raise InputError("each point is [x, y, label]")
        array = np.array(request.points, np.float32)
        prompt.points, prompt.labels = array[:, :2], array[:, 2]
    return prompt


def _unpack_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    """Save an upload (a volume file, or a .zip holding one DICOM series) under ``folder``."""
    name = Path(upload.filename or "volume").name
    suffix = full_suffix(name).lower()
    if suffix != ".zip" and suffix not in VOLUME_SUFFIXES:
        raise InputError(f"{name}: upload a {', '.join(VOLUME_SUFFIXES)} file or a .zip of a DICOM series")
    target = folder / ("upload" + suffix)
    with open(target, "wb") as sink:
        shutil.copyfileobj(upload.file, sink)
    if suffix != ".zip":
        return target
    series = folder / "series"
    try:
        with zipfile.ZipFile(target) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > 4 * limit:  # a zip bomb must not fill the disk
                raise InputError(f"{name}: unpacks to more than {4 * limit} bytes")
            series.mkdir()
            for index, member in enumerate(members):  # own names: no path from the archive is used
                with archive.open(member) as source, open(series / f"{index:06d}", "wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile:
        raise InputError(f"{name}: not a readable zip file") from None
    return series


def create_app(
    predictor,
    api_key: str,
    max_sessions: int = 4,
    cache_slices: int = 16,
    max_body_bytes: int = 256 * 2**20,
) -> FastAPI:
    """The service over one predictor; ``api_key`` guards every route, the OpenAPI spec included."""
    if not api_key:
        raise InputError("an API key is required")
    store = SessionStore(predictor, max_sessions, cache_slices)
    app = FastAPI(
        title="samfast", summary="Segment Anything for treatment planning: sessions, clicks, RTSTRUCT."
    )
    app.state.store = store
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.exception_handler(SamfastError)
    async def _bad_input(request: Request, error: SamfastError):
        return JSONResponse({"detail": str(error).splitlines()[0]}, status_code=400)

    @app.exception_handler(SessionNotFound)
    async def _no_session(request: Request, error: SessionNotFound):
        return JSONResponse({"detail": f"no session {error.args[0]!r} (closed or evicted)"}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"invalid request: {where}: {first.get('msg', 'bad value')}"}, 422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception):
        log.exception("internal error in %s %s", request.method, request.url.path)
        message = " ".join(str(error).split())[:200]
        return JSONResponse({"detail": f"internal error {type(error).__name__}: {message}"}, status_code=500)

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "sessions": len(store),
            "cache_bytes": store.cache_bytes(),
            **predictor.describe(),
        }

    @app.post("/sessions")
    def open_path(request: OpenRequest) -> dict:
        return store.open(load_volume(request.path), request.normalize).describe()

    @app.post("/sessions/upload")
    def open_upload(file: Annotated[UploadFile, File()], normalize: str = "auto") -> dict:
        scratch = Path(tempfile.mkdtemp(prefix="samfast-serve-"))
        try:
            volume = load_volume(_unpack_upload(file, scratch, max_body_bytes))
            return store.open(volume, normalize, scratch).describe()
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    @app.post("/sessions/{session_id}/prompt")
    def prompt(session_id: str, request: PromptRequest) -> dict:
        session = store.get(session_id)
        started = time.perf_counter()
        mask, score, cached = prompt_slice(session, request.slice, _slice_prompt(request))
        elapsed = time.perf_counter() - started
        return {
            "slice": request.slice,
            "pixels": int(mask.sum()),
            "predicted_iou": score,
            "cached": cached,
            "elapsed_ms": 1e3 * elapsed,
            "mask": _packed(mask),
        }

    @app.post("/sessions/{session_id}/undo")
    def undo_last(session_id: str) -> dict:
        session = store.get(session_id)
        z = undo(session)
        return {"slice": z, "pixels": int(session.mask[z].sum()), "mask": _packed(session.mask[z])}

    @app.get("/sessions/{session_id}")
    def describe(session_id: str) -> dict:
        session = store.get(session_id)
        return {**session.describe(), "voxels": int(session.mask.sum())}

    @app.post("/sessions/{session_id}/rtstruct", response_class=Response)
    def export_rtstruct(session_id: str, request: ExportRequest) -> Response:
        from samfast.clinical.rtstruct import parse_color, write_rtstruct

        session = store.get(session_id)
        if session.volume.series is None:
            raise InputError("RTSTRUCT export needs a session opened on a DICOM series")
        color = parse_color(",".join(str(v) for v in request.color))
        with session.lock:
            mask = session.mask.copy()
        with tempfile.TemporaryDirectory(prefix="samfast-rt-") as folder:
            path = write_rtstruct(
                mask, session.volume.series, Path(folder) / "out", request.roi_name, color,
                roi_type=request.roi_type, model=predictor.spec.name,
            )  # fmt: skip
            if request.send:
                from samfast.clinical.send import SendError, send_files

                try:
                    send_files([path], request.send)
                except SendError as error:  # the node's fault, not the request's: 502
                    return JSONResponse({"detail": str(error)}, status_code=502)
            return Response(path.read_bytes(), media_type="application/dicom")

    @app.get("/sessions/{session_id}/mask", response_class=Response)
    def export_mask(session_id: str) -> Response:
        """The whole mask as NIfTI (uint8, gzip) with the volume's geometry."""
        session = store.get(session_id)
        with session.lock:
            mask = session.mask.copy()
        with tempfile.TemporaryDirectory(prefix="samfast-mask-") as folder:
            path = write_volume_mask(mask, session.volume, Path(folder) / "mask.nii.gz", "samfast serve")
            return Response(path.read_bytes(), media_type="application/gzip")

    @app.delete("/sessions/{session_id}")
    def close(session_id: str) -> dict:
        store.close(session_id)
        return {"closed": session_id}

    return app
