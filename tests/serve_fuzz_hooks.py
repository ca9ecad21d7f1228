"""schemathesis hooks for fuzzing `samfast serve` with live sessions (SCHEMATHESIS_HOOKS=<this file>).

SAMFAST_FUZZ_VOLUME names a volume (a DICOM series folder, so RTSTRUCT export is reachable) under the
server's --allow-root. Schema-valid (positive) cases are bent towards it: most opens name it, and
prompts land inside its slices, so the stateful phase reaches the model, undo and export instead of
404s and out-of-range refusals. Negative cases are left as generated: they must stay invalid.
"""

from __future__ import annotations

import json
import os

import schemathesis
import SimpleITK as sitk

VOLUME = os.environ["SAMFAST_FUZZ_VOLUME"]
_reader = sitk.ImageSeriesReader()
_reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(VOLUME))
WIDTH, HEIGHT, DEPTH = (int(n) for n in _reader.Execute().GetSize())

# What a schema-valid request may still be refused for (400): the session's state (no history, an
# empty mask, no prompt to propagate from, no walk to edit) or DICOM's rules for names and ROI types,
# which the schema does not spell out.
ALLOWED_400 = (
    "nothing to undo",
    "nothing to redo",
    "the mask is empty",
    "nothing to propagate from",
    "an edit re-walks a propagation",
    "ROI name ",
)
SLICE_ROUTES = {("POST", "/sessions/{session_id}/prompt"), ("POST", "/sessions/{session_id}/edit")}


def _positive(case) -> bool:
    return case.meta is None or not case.meta.generation.mode.is_negative


def _inside(value, size: int, low: int = 0) -> int:
    return low + abs(int(value)) % (size - low)


def _box(values: list, sizes: tuple[int, ...]) -> list[int]:
    """Lows then highs, each low below its high, all inside ``sizes``."""
    n = len(sizes)
    lows = [_inside(v, size - 1) for v, size in zip(values[:n], sizes, strict=True)]
    return lows + [_inside(v, size, low + 1) for v, size, low in zip(values[n:], sizes, lows, strict=True)]


@schemathesis.hook
def map_case(context, case):
    body, route = case.body, (case.operation.method.upper(), case.operation.path)
    if not _positive(case):
        return case
    if isinstance(case.query, dict) and isinstance(case.query.get("slice"), int | float):
        case.query["slice"] = int(case.query["slice"]) % DEPTH
    if isinstance(case.query, dict) and isinstance(case.query.get("index"), int | float):
        case.query["index"] = int(case.query["index"]) % DEPTH  # the image route; DEPTH is the least side
    if not isinstance(body, dict):
        return case
    if route == ("POST", "/sessions") and isinstance(body.get("path"), str) and len(body["path"]) % 5:
        body["path"] = VOLUME  # one open in five keeps its random path (403/404 expected)
    elif route in SLICE_ROUTES:
        if isinstance(body.get("slice"), int | float):  # 3.0 is an integer to JSON Schema
            body["slice"] = int(body["slice"]) % DEPTH
        if isinstance(body.get("box"), list) and len(body["box"]) == 4:
            body["box"] = _box(body["box"], (WIDTH, HEIGHT))
        if isinstance(body.get("points"), list):
            body["points"] = [
                [_inside(x, WIDTH), _inside(y, HEIGHT), abs(int(label)) % 2] for x, y, label in body["points"]
            ]
        if not body.get("box") and not body.get("points"):
            body["box"] = [8, 8, WIDTH - 8, HEIGHT - 8]  # a prompt needs one or the other
    elif route == ("POST", "/sessions/{session_id}/propagate") and isinstance(body.get("box"), list):
        if len(body["box"]) == 6:
            body["box"] = _box(body["box"], (WIDTH, HEIGHT, DEPTH))
    elif route == ("POST", "/sessions/{session_id}/rtstruct") and body.get("send") is not None:
        body["send"] = None  # never C-STORE to a node the fuzzer made up
    return case


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure but a 400 to schema-valid data for a reason listed in ALLOWED_400."""
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 400:
        return True
    try:
        detail = json.loads(response.content)["detail"]
    except (ValueError, KeyError, TypeError):
        return True
    return not detail.startswith(ALLOWED_400)
