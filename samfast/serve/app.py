"""The HTTP API of `samfast serve` (FastAPI): open a volume, click/box -> mask, undo, export.

Every request but the docs page needs the API key (header X-API-Key, compared in constant time;
declared as the spec's security scheme). Bodies, volumes, folders and prompts are bounded
(samfast.serve.limits) before anything large is allocated. Errors are JSON {"detail": "one line"}
with the status the spec declares; the server keeps serving and keeps the connection open.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import zipfile
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, Request, Response, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from samfast.clinical.prompts import SlicePrompt
from samfast.clinical.propagate import PropagationRule
from samfast.clinical.rtstruct import ROI_TYPES
from samfast.clinical.volume import VOLUME_SUFFIXES, load_volume, write_volume_mask
from samfast.errors import InputError, SamfastError
from samfast.io.atomic import full_suffix
from samfast.io.budget import BudgetExceeded
from samfast.serve.docs_page import add_asset_routes, asset_paths, docs_html
from samfast.serve.guard import API_KEY_HEADER, Guard
from samfast.serve.limits import MAX_CLICKS, MAX_JSON_BYTES, Limits, Refused
from samfast.serve.openapi_links import install as install_links
from samfast.serve.scratch import Scratch
from samfast.serve.sessions import SessionNotFound, SessionStore, prompt_slice, redo, undo
from samfast.serve.sources import check_source, resolve, shorten
from samfast.serve.viewer import add_viewer_routes, page_paths
from samfast.serve.walks import (
    PREFETCH_EACH_SIDE,
    Prefetcher,
    packed,
    packed_volume,
    propagation_prompts,
    run_edit,
    stream_propagation,
)

log = logging.getLogger("samfast.serve")
Normalize = Literal["auto", "putz", "medsam-mr", "ct-medsam", "ct-ren", "pet", "none"]
Coordinate = Annotated[float, Field(allow_inf_nan=False)]


class Error(BaseModel):
    detail: str = Field(description="One line saying what went wrong.")


_WHY = {
    400: "Bad input: an unreadable image, a prompt outside the slice, nothing to undo.",
    401: "Missing or wrong API key.",
    403: "Refused: outside --allow-root, a system folder, a special file, a folder with too many files.",
    404: "No such session (closed or evicted), or no such file or folder.",
    413: "Too large: the body, the volume's voxels, the session memory budget.",
    422: "The request does not match this schema (the first problem, on one line).",
    500: "A bug in the server (one line; the details are in the server log).",
    502: "The DICOM node named by `send` refused the files or could not be reached (one line).",
}


def _errors(*codes: int) -> dict:
    return {code: {"model": Error, "description": _WHY[code]} for code in sorted({401, 422, 500, *codes})}


class OpenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(
        min_length=1,
        max_length=4095,
        description="A NIfTI/NRRD/MHA file or a DICOM series folder on the server.",
    )
    normalize: Normalize = Field("auto", description="Intensity preset; auto: CT window for CT, else putz.")


class PromptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slice: int = Field(ge=0, description="Axial slice index z.")
    box: Annotated[list[Coordinate], Field(min_length=4, max_length=4)] | None = Field(
        None, description="x0 y0 x1 y1 in voxel indices of the slice."
    )
    points: (
        Annotated[
            list[Annotated[list[Coordinate], Field(min_length=3, max_length=3)]], Field(max_length=MAX_CLICKS)
        ]
        | None
    ) = Field(None, description=f"Clicks [x, y, label]; label 1 fg, 0 bg; at most {MAX_CLICKS}.")


class PropagateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    box: Annotated[list[Coordinate], Field(min_length=6, max_length=6)] | None = Field(
        None,
        description="3D box x0 y0 z0 x1 y1 z1 in voxel indices; left out: walk from the prompts already "
        "given on slices (each prompted slice an anchor).",
    )
    margin_mm: float = Field(PropagationRule.margin_mm, ge=0, le=50, description="Box margin around a mask.")
    momentum: float = Field(
        PropagationRule.momentum, ge=0, le=0.95, description="Share of the previous box kept."
    )
    shape_prior: float = Field(
        PropagationRule.shape_prior, ge=0, le=1, description="Inside a 3D box: 1 ellipsoid, 0 the footprint."
    )


# What check_roi_name refuses, as far as a pattern can say it (its 64-byte UTF-8 bound cannot be):
# no backslash, control character or line/paragraph separator anywhere, no whitespace at either end.
_NAME_CHAR = r"\\\x00-\x1f\x7f-\x9f" + "\u2028\u2029"
ROI_NAME_PATTERN = rf"^[^\s{_NAME_CHAR}]([^{_NAME_CHAR}]*[^\s{_NAME_CHAR}])?$"


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roi_name: str = Field(
        "SAMFAST",
        min_length=1,
        max_length=64,
        pattern=ROI_NAME_PATTERN,
        description="Up to 64 characters and 64 bytes of UTF-8 (DICOM LO); no backslash, no control "
        "characters, no leading or trailing spaces.",
    )
    color: Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)] = [
        255,
        0,
        0,
    ]
    roi_type: Literal[ROI_TYPES] = Field("GTV", description="RTROIInterpretedType.")  # type: ignore[valid-type]
    send: str | None = Field(
        None, description="AE@HOST:PORT: also C-STORE the RTSTRUCT to this DICOM node.", max_length=200
    )


class SessionInfo(BaseModel):
    session: str
    size: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float]
    dicom: bool
    description: str = Field(description="The series' SeriesDescription (DICOM), else the file's name.")
    cached_slices: int


class SessionState(SessionInfo):
    voxels: int = Field(description="Voxels in the current mask.")


class PackedMask(BaseModel):
    shape: list[int] = Field(description="rows, columns")
    packbits: str = Field(description="base64 of np.packbits of the mask, row-major, 1 bit a pixel")


class PromptReply(BaseModel):
    slice: int
    pixels: int
    predicted_iou: float
    cached: bool
    elapsed_ms: float
    mask: PackedMask


class UndoReply(BaseModel):
    slice: int = Field(description="The first slice put back.")
    pixels: int
    mask: PackedMask
    slices: list[int] = Field(description="Every slice put back (a propagation or an edit is one step).")


class SliceRecord(BaseModel):
    slice: int
    pixels: int
    predicted_iou: float
    box: list[float] | None
    mask: PackedMask


class WalkSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    done: bool = True
    status: Literal["complete", "cancelled", "error"]
    detail: str | None = None
    slices: list[int] | None = None
    voxels: int | None = None
    stops: dict[str, str] | None = None
    elapsed_ms: float


class SliceMask(BaseModel):
    slice: int
    mask: PackedMask


class EditReply(BaseModel):
    slice: int
    rerun: list[int] = Field(description="Slices the model ran again.")
    stops: dict[str, str] | None
    voxels: int
    masks: list[SliceMask] = Field(description="Every slice whose mask changed, and the edited one.")


class VolumeBits(BaseModel):
    shape: list[int] = Field(description="z, y, x of the volume")
    offset: list[int] = Field(description="z, y, x of the mask's bounding box in the volume")
    box_shape: list[int] = Field(description="z, y, x size of the bounding box (0s for an empty mask)")
    data: str = Field(description="base64 of gzip of np.packbits of the box's voxels, (z, y, x) order")


class Closed(BaseModel):
    closed: str


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str
    sessions: int
    cache_bytes: int


def _slice_prompt(request: PromptRequest) -> SlicePrompt:
    if request.box is None and not request.points:
        raise InputError("give a box and/or points")
    prompt = SlicePrompt(box=None if request.box is None else np.array(request.box, np.float32))
    if request.points:
        array = np.array(request.points, np.float32)
        if not np.isin(array[:, 2], (0, 1)).all():
            raise InputError("each point is [x, y, label] with label 1 (foreground) or 0 (background)")
        prompt.points, prompt.labels = array[:, :2], array[:, 2]
    return prompt


def _unpack_upload(upload: UploadFile, folder: Path, limit: int, max_files: int) -> tuple[Path, str]:
    """Save an upload (a volume file, or a .zip holding one DICOM series) under ``folder``;
    (what to open, the upload's name for messages)."""
    name = Path(upload.filename or "").name or "upload"
    suffix = full_suffix(name).lower()
    if suffix != ".zip" and suffix not in VOLUME_SUFFIXES:
        raise InputError(f"{name}: upload a {', '.join(VOLUME_SUFFIXES)} file or a .zip of a DICOM series")
    if "\0" in name or len(name.encode("utf-8", "replace")) > 128 or name.startswith("."):
        name = "upload" + suffix  # saved under the client's name (messages say it), when it is safe
    target = folder / name
    with open(target, "wb") as sink:
        shutil.copyfileobj(upload.file, sink)
    if suffix != ".zip":
        return target, name
    series = folder / "series"
    try:
        with zipfile.ZipFile(target) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > max_files:
                raise BudgetExceeded(f"{name}: holds more than {max_files} files")
            if sum(m.file_size for m in members) > 4 * limit:  # a zip bomb must not fill the disk
                raise BudgetExceeded(f"{name}: unpacks to more than {4 * limit} bytes")
            series.mkdir()
            for index, member in enumerate(members):  # own names, plain files: no path or link from it
                with archive.open(member) as source, open(series / f"{index:06d}", "wb") as out:
                    shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError):
        raise InputError(f"{name}: not a readable zip file") from None
    target.unlink()
    return series, name


def _methods(app: FastAPI):
    """path -> the methods served there; a fixed route (/sessions/upload) shadows a templated one
    (/sessions/{session_id}) for its own path, as the spec says, not as routing order would."""

    def methods(path: str) -> set[str]:
        scope = {"type": "http", "path": path, "method": "", "root_path": ""}
        routes = [r for r in app.router.routes if r.matches(scope)[0] is not Match.NONE]
        fixed = [r for r in routes if "{" not in getattr(r, "path", "{")]
        return {m for r in (fixed or routes) for m in (getattr(r, "methods", None) or ())}

    return methods


def create_app(
    predictor,
    api_key: str,
    max_sessions: int = 4,
    cache_slices: int = 16,
    max_body_bytes: int = 256 * 2**20,
    limits: Limits | None = None,
    scratch_parent: str | Path | None = None,
    prefetch_slices: int | None = None,
) -> FastAPI:
    """The service over one predictor; ``api_key`` guards every route, the OpenAPI spec included.
    ``prefetch_slices``: slices encoded each side of a session's last slice while it is idle
    (None: what the session's cache share holds; 0: off)."""
    if not api_key:
        raise InputError("an API key is required")
    limits = limits or Limits()
    store = SessionStore(predictor, max_sessions, cache_slices)
    scratch = Scratch(scratch_parent)
    # default: two slices each side (within the session's cache share): four encoder calls end
    # within a planner's 2-s pause at bf16 on two cores; a wider ring would still be encoding when
    # the next prompt comes, and that prompt waits for the call in flight
    each_side = (
        min(PREFETCH_EACH_SIDE, max(0, (cache_slices - 2) // 2))
        if prefetch_slices is None
        else prefetch_slices
    )
    prefetcher = Prefetcher(store, each_side)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for folder in scratch.start():
            log.info("removed scratch of a server that is gone: %s", folder.name)
        try:
            yield
        finally:  # uvicorn's SIGTERM/SIGINT handling ends here too
            prefetcher.close()
            store.close_all()
            scratch.close()

    app = FastAPI(
        title="samfast",
        summary="Segment Anything for treatment planning: sessions, clicks, RTSTRUCT.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Security(APIKeyHeader(name="X-API-Key", auto_error=False))],
    )
    app.state.store, app.state.scratch, app.state.limits = store, scratch, limits
    install_links(app)  # the spec links each session route to the routes that open one
    app.add_middleware(
        Guard,
        api_key=api_key,
        default_limit=MAX_JSON_BYTES,
        body_limits={"/sessions/upload": max_body_bytes},
        open_paths={("GET", "/docs"), ("HEAD", "/docs"), *asset_paths(), *page_paths()},
        methods=_methods(app),
    )

    @app.exception_handler(SamfastError)
    async def _bad_input(request: Request, error: SamfastError):
        status = getattr(error, "status", 413 if isinstance(error, BudgetExceeded) else 400)
        return JSONResponse({"detail": str(error).splitlines()[0] if str(error) else "bad input"}, status)

    @app.exception_handler(SessionNotFound)
    async def _no_session(request: Request, error: SessionNotFound):
        return JSONResponse({"detail": f"no session {error.args[0]!r} (closed or evicted)"}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"invalid request: {where}: {first.get('msg', 'bad value')}"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        return JSONResponse({"detail": str(error.detail)}, error.status_code, headers=error.headers)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI; the page asks for the key, then fetches the spec with it."""
        return HTMLResponse(docs_html(app.title, app.openapi_url, API_KEY_HEADER))

    add_asset_routes(app)  # Swagger UI's files, shipped in the package: /docs works offline
    add_viewer_routes(app, store, _errors(400, 404, 422))  # the contouring page at / and its image route

    @app.get("/health", responses={code: _errors()[code] for code in (401, 500)})
    def health() -> Health:
        return Health(
            status="ok", sessions=len(store), cache_bytes=store.cache_bytes(), **predictor.describe()
        )

    @app.post("/sessions", responses=_errors(400, 403, 404, 413, 422))
    def open_path(request: OpenRequest) -> SessionInfo:
        """Open a volume file or DICOM series folder on the server (within --allow-root, if given)."""
        real = resolve(request.path, limits.allow_roots)
        check_source(real, shorten(request.path), limits, limits.allow_roots)
        return SessionInfo(**store.open(load_volume(real), request.normalize).describe())

    @app.post("/sessions/upload", responses=_errors(400, 413, 422))
    def open_upload(file: Annotated[UploadFile, File()], normalize: Normalize = "auto") -> SessionInfo:
        """Upload a volume file or a .zip of one DICOM series; it is removed when the session ends."""
        folder = scratch.new()
        try:
            target, name = _unpack_upload(file, folder, max_body_bytes, limits.max_folder_entries)
            check_source(target, name, limits, (folder,), local_only=True)
            volume = load_volume(target)
            return SessionInfo(**store.open(volume, normalize, folder).describe())
        except SamfastError as error:  # say the upload's name, never the scratch path
            shutil.rmtree(folder, ignore_errors=True)
            text = str(error).replace(f"{folder}/", "").replace(str(folder), "upload")
            if isinstance(error, Refused):
                raise Refused(error.status, text) from None
            raise type(error)(text) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @app.post("/sessions/{session_id}/prompt", responses=_errors(400, 404, 413, 422))
    def prompt(session_id: str, request: PromptRequest) -> PromptReply:
        """A box and/or clicks on one slice -> that slice's mask (encoder once per slice, then cached)."""
        session = store.get(session_id)
        started = time.perf_counter()
        mask, score, cached = prompt_slice(session, request.slice, _slice_prompt(request))
        elapsed = time.perf_counter() - started
        prefetcher.touch()
        return PromptReply(
            slice=request.slice,
            pixels=int(mask.sum()),
            predicted_iou=score,
            cached=cached,
            elapsed_ms=1e3 * elapsed,
            mask=packed(mask),
        )

    @app.post("/sessions/{session_id}/undo", responses=_errors(400, 404))
    def undo_last(session_id: str) -> UndoReply:
        """Put back the slice changed last."""
        session = store.get(session_id)
        return undo_reply(session, undo(session))

    @app.post("/sessions/{session_id}/redo", responses=_errors(400, 404))
    def redo_last(session_id: str) -> UndoReply:
        """Apply again the change undone last (a new prompt, propagation or edit ends redo)."""
        session = store.get(session_id)
        return undo_reply(session, redo(session))

    def undo_reply(session, slices: list[int]) -> UndoReply:
        """The first changed slice's mask, and every changed slice's index."""
        z = slices[0]
        return UndoReply(
            slice=z, pixels=int(session.mask[z].sum()), mask=packed(session.mask[z]), slices=slices
        )

    def inline(model: type[BaseModel]) -> dict:  # a record type no route returns as JSON
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)  # PackedMask: in the spec already (PromptReply)
        return schema

    ndjson = {
        "content": {
            "application/x-ndjson": {"schema": {"oneOf": [inline(SliceRecord), inline(WalkSummary)]}}
        },
        "description": "NDJSON, one record a line: a SliceRecord for each slice as the walk keeps it, "
        "then one WalkSummary (done: true) with the status, the slices, the stop reasons and the rule.",
    }

    @app.post(
        "/sessions/{session_id}/propagate",
        response_class=StreamingResponse,
        responses={200: ndjson, **_errors(400, 404, 422)},
    )
    def propagate(session_id: str, request: PropagateRequest) -> StreamingResponse:
        """3D: walk from a 3D box, or from the slices already prompted, streaming each slice as it
        comes. The result is one undo step; a new prompt, propagate, undo or close cancels it."""
        session = store.get(session_id)
        prompts = propagation_prompts(session, request.box)  # a bad box is a 400 before the stream
        rule = PropagationRule(
            margin_mm=request.margin_mm, momentum=request.momentum, shape_prior=request.shape_prior
        )
        prefetcher.touch()
        return StreamingResponse(
            stream_propagation(session, prompts, rule), media_type="application/x-ndjson"
        )

    @app.post("/sessions/{session_id}/edit", responses=_errors(400, 404, 413, 422))
    def edit(session_id: str, request: PromptRequest) -> EditReply:
        """Correct one slice of a propagation and re-walk from it until the masks agree with the
        previous ones (one undo step)."""
        session = store.get(session_id)
        depth = session.volume.shape[0]
        if request.slice >= depth:
            raise InputError(f"slice {request.slice} is out of range (0 to {depth - 1})")
        prefetcher.touch()
        return EditReply(**run_edit(session, request.slice, _slice_prompt(request)))

    @app.get("/sessions/{session_id}/mask/bits", responses=_errors(400, 404, 422))
    def mask_bits(session_id: str, slice: int | None = None) -> VolumeBits:
        """The whole mask compactly (cropped to its bounding box, 1 bit a voxel, gzip), or one slice
        of it (``slice``: that slice only, as a 1-slice box)."""
        session = store.get(session_id)
        with session.lock:
            mask = session.mask.copy()
        if slice is None:
            return VolumeBits(**packed_volume(mask))
        if not 0 <= slice < mask.shape[0]:
            raise InputError(f"slice {slice} is out of range (0 to {mask.shape[0] - 1})")
        one = np.zeros_like(mask)
        one[slice] = mask[slice]
        bits = packed_volume(one)
        if not mask[slice].any():
            bits.update(offset=[slice, 0, 0])
        return VolumeBits(**bits)

    @app.get("/sessions/{session_id}", responses=_errors(404))
    def describe(session_id: str) -> SessionState:
        session = store.get(session_id)
        return SessionState(**session.describe(), voxels=int(session.mask.sum()))

    dicom_bytes = {"content": {"application/dicom": {"schema": {"type": "string", "format": "binary"}}}}

    @app.post(
        "/sessions/{session_id}/rtstruct",
        response_class=Response,
        responses={
            200: {**dicom_bytes, "description": "The RT Structure Set."},
            **_errors(400, 404, 413, 422, 502),
        },
    )
    def export_rtstruct(session_id: str, request: ExportRequest) -> Response:
        """The session's mask as an RT Structure Set (sessions opened on a DICOM series)."""
        import tempfile

        from samfast.clinical.references import check_references
        from samfast.clinical.rtstruct import check_roi_name, parse_color, write_rtstruct

        check_roi_name(request.roi_name)  # a bad name is the request's fault, whatever the session
        session = store.get(session_id)
        if session.volume.series is None:
            raise InputError("RTSTRUCT export needs a session opened on a DICOM series")
        check_references(session.volume.series, "RTSTRUCT export")
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

    gzip_bytes = {"content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}}

    @app.get(
        "/sessions/{session_id}/mask",
        response_class=Response,
        responses={200: {**gzip_bytes, "description": "The mask as NIfTI (uint8, gzip)."}, **_errors(404)},
    )
    def export_mask(session_id: str) -> Response:
        """The whole mask as NIfTI (uint8, gzip) with the volume's geometry."""
        import tempfile

        session = store.get(session_id)
        with session.lock:
            mask = session.mask.copy()
        with tempfile.TemporaryDirectory(prefix="samfast-mask-") as folder:
            path = write_volume_mask(mask, session.volume, Path(folder) / "mask.nii.gz", "samfast serve")
            return Response(path.read_bytes(), media_type="application/gzip")

    @app.delete("/sessions/{session_id}", responses=_errors(404))
    def close(session_id: str) -> Closed:
        """Close the session: its memory and its upload are released."""
        store.close(session_id)
        return Closed(closed=session_id)

    return app
