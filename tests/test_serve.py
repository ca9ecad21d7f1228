"""`samfast serve` over real HTTP on loopback: uvicorn in a thread on a free port, httpx as the client,
the real LiteMedSAM predictor; sessions, cache, undo, RTSTRUCT export, keys, limits and failures."""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import statistics
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_fixtures import build_series, tumour_crop
from serve_fixtures import serve_in_thread

from samfast import Predictor
from samfast.clinical.prompts import SlicePrompt
from samfast.clinical.rtstruct import read_rtstruct_mask
from samfast.clinical.slice_model import SliceModel
from samfast.clinical.volume import load_volume
from samfast.eval.metrics import dice
from samfast.serve.app import create_app

KEY = "test-key-0123456789abcdef"
LIMIT = 2 * 2**20


@pytest.fixture(scope="module")
def predictor():
    return Predictor("litemedsam", backend="onnxruntime")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Two small real volumes: a DICOM series (case 001) and a NIfTI file (case 002)."""
    folder = tmp_path_factory.mktemp("serve")
    series = build_series(tumour_crop("BraTS20_Demo_001", slices=4, size=96)[0], folder / "series")
    nifti = folder / "case2.nii.gz"
    sitk.WriteImage(tumour_crop("BraTS20_Demo_002", slices=4, size=96)[0], str(nifti))
    return series, nifti


@pytest.fixture(scope="module")
def server(predictor):
    # no idle prefetch: these tests time and count encoder calls prompt by prompt (the prefetch has
    # its own tests in test_serve_3d.py)
    app = create_app(predictor, KEY, max_sessions=2, cache_slices=8, max_body_bytes=LIMIT, prefetch_slices=0)

    @app.get("/boom")
    def boom():  # stands for a bug in a handler
        raise RuntimeError("deliberate failure\nwith a second line")

    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        client.app_state = app.state  # the tests read the store's lock from here
        yield client


H = {"X-API-Key": KEY}


def _mask(payload: dict) -> np.ndarray:
    shape = payload["mask"]["shape"]
    bits = np.frombuffer(base64.b64decode(payload["mask"]["packbits"]), np.uint8)
    return np.unpackbits(bits)[: shape[0] * shape[1]].reshape(shape).astype(bool)


def _zip(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return buffer.getvalue()


def _open(server, path) -> str:
    reply = server.post("/sessions", json={"path": str(path)}, headers=H)
    assert reply.status_code == 200, reply.text
    return reply.json()["session"]


def test_every_request_needs_the_key(server):
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]}):
        for method, url in (("GET", "/health"), ("GET", "/openapi.json"), ("POST", "/sessions")):
            reply = server.request(method, url, headers=headers)
            assert reply.status_code == 401 and "API key" in reply.json()["detail"]
    spec = server.get("/openapi.json", headers=H)
    assert spec.status_code == 200
    assert {"/sessions", "/sessions/upload", "/sessions/{session_id}/prompt"} <= set(spec.json()["paths"])


def test_full_session_upload_click_undo_export(server, volumes):
    series = volumes[0]
    files = {"file": ("series.zip", _zip(series), "application/zip")}
    opened = server.post("/sessions/upload", files=files, headers=H)
    assert opened.status_code == 200, opened.text
    info = opened.json()
    assert info["dicom"] and info["size"] == [96, 96, 4]
    sid = info["session"]
    box = {"slice": 2, "box": [20, 20, 80, 80]}
    first = server.post(f"/sessions/{sid}/prompt", json=box, headers=H).json()
    assert first["cached"] is False and first["pixels"] > 50
    refined = server.post(
        f"/sessions/{sid}/prompt", json={**box, "points": [[30, 30, 0], [50, 50, 1]]}, headers=H
    ).json()
    assert refined["cached"] is True
    assert not np.array_equal(_mask(refined), _mask(first))
    undone = server.post(f"/sessions/{sid}/undo", headers=H).json()
    assert undone["slice"] == 2 and np.array_equal(_mask(undone), _mask(first))
    exported = server.post(
        f"/sessions/{sid}/rtstruct", json={"roi_name": "GTV", "color": [0, 0, 255]}, headers=H
    )
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/dicom"
    rt_path = series.parent / "rt.dcm"
    rt_path.write_bytes(exported.content)
    assert pydicom.dcmread(rt_path).Modality == "RTSTRUCT"
    local = load_volume(series)
    expected = np.zeros(local.shape, bool)
    expected[2] = _mask(first)
    assert dice(read_rtstruct_mask(rt_path, local.series, "GTV"), expected) >= 0.99
    nifti = server.get(f"/sessions/{sid}/mask", headers=H)
    (series.parent / "mask.nii.gz").write_bytes(nifti.content)
    back = sitk.ReadImage(str(series.parent / "mask.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(back).astype(bool), expected)
    np.testing.assert_allclose(back.GetOrigin(), local.image.GetOrigin(), atol=1e-5)
    assert server.delete(f"/sessions/{sid}", headers=H).status_code == 200
    assert server.get(f"/sessions/{sid}", headers=H).status_code == 404


def test_click_on_a_cached_slice_skips_the_encoder(server, volumes):
    sid = _open(server, volumes[1])
    encoded, cached = [], []
    for z in range(4):  # side by side: first prompt on a slice encodes it, the second one does not
        for times in (encoded, cached):
            started = time.perf_counter()
            reply = server.post(
                f"/sessions/{sid}/prompt", json={"slice": z, "box": [15, 15, 85, 85]}, headers=H
            )
            times.append(time.perf_counter() - started)
            assert reply.status_code == 200 and reply.json()["cached"] is (times is cached)
    ratio = statistics.median(encoded) / statistics.median(cached)
    print(
        f"\nserve: prompt on a new slice {1e3 * statistics.median(encoded):.0f} ms, on a cached slice "
        f"{1e3 * statistics.median(cached):.0f} ms (HTTP round trip, medians of 4): {ratio:.1f}x"
    )
    assert ratio > 3


def test_concurrent_sessions_get_their_own_masks(server, volumes, predictor):
    lock = server.app_state.store.model_lock
    prompts = [(z, [15.0, 15.0, 85.0, 85.0]) for z in (1, 3)]
    expected = {}
    for index, path in enumerate(volumes):
        volume = load_volume(path)
        reference = SliceModel(predictor, volume.normalised(), lock=lock)
        for z, box in prompts:
            expected[index, z] = reference.predict(z, SlicePrompt(box=np.array(box, np.float32)))[0]
    sessions = [_open(server, path) for path in volumes]

    def run(job):
        index, z, box = job
        reply = server.post(f"/sessions/{sessions[index]}/prompt", json={"slice": z, "box": box}, headers=H)
        assert reply.status_code == 200, reply.text
        return (index, z), _mask(reply.json())

    jobs = [(index, z, box) for z, box in prompts for index in range(2)] * 2
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, jobs))
    assert len(results) == 8
    for key, mask in results:
        assert np.array_equal(mask, expected[key]), key
    assert not np.array_equal(expected[0, 1], expected[1, 1])


def test_least_recently_used_session_is_evicted(server, volumes):
    first, second = _open(server, volumes[1]), _open(server, volumes[1])
    assert server.get(f"/sessions/{first}", headers=H).status_code == 200  # first is now the most recent
    third = _open(server, volumes[1])
    assert server.get(f"/sessions/{second}", headers=H).status_code == 404
    assert server.get(f"/sessions/{first}", headers=H).status_code == 200
    assert server.get("/health", headers=H).json()["sessions"] == 2
    server.delete(f"/sessions/{third}", headers=H)


def test_oversize_upload_is_refused_and_the_server_keeps_serving(server):
    files = {"file": ("big.nii.gz", b"\0" * (LIMIT + 1), "application/gzip")}
    reply = server.post("/sessions/upload", files=files, headers=H)
    assert reply.status_code == 413 and "larger than" in reply.json()["detail"]

    def chunks():  # no Content-Length: the body is counted as it streams in
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.nii.gz"\r\n\r\n'
        for _ in range(LIMIT // 2**16 + 2):
            yield b"\0" * 2**16
        yield b"\r\n--b--\r\n"

    streamed = server.post(
        "/sessions/upload", content=chunks(), headers={**H, "content-type": "multipart/form-data; boundary=b"}
    )
    assert streamed.status_code == 413 and "larger than" in streamed.json()["detail"]
    assert server.get("/health", headers=H).status_code == 200


def test_a_bug_in_a_handler_is_one_json_line_and_the_connection_stays_open(server, caplog):
    connection = http.client.HTTPConnection("127.0.0.1", server.base_url.port, timeout=60)
    connection.connect()
    sock = connection.sock
    with caplog.at_level(logging.ERROR):
        connection.request("GET", "/boom", headers=H)
        reply = connection.getresponse()
        body = json.loads(reply.read())
    assert reply.status == 500 and (reply.getheader("connection") or "") != "close"
    detail = body["detail"]
    assert "internal error RuntimeError" in detail and "see the server log" in detail
    assert "deliberate" not in detail and "Traceback" not in detail  # no internals in the reply
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and "deliberate failure with a second line" in logged[0].getMessage()
    assert "\n" not in logged[0].getMessage() and not logged[0].exc_info  # no traceback
    connection.request("GET", "/health", headers=H)  # the same connection serves the next request
    assert connection.getresponse().status == 200 and connection.sock is sock
    connection.close()


def test_bad_input_is_a_4xx_with_a_message(server, volumes, tmp_path):
    nifti_session = _open(server, volumes[1])
    url = f"/sessions/{nifti_session}"
    bad_zip = {"file": ("series.zip", b"PK not a zip", "application/zip")}
    cases = [
        (
            server.post("/sessions", json={"path": str(tmp_path / "none.nii.gz")}, headers=H),
            404,
            "no such file",
        ),
        (
            server.post("/sessions/upload", files={"file": ("a.txt", b"x", "text/plain")}, headers=H),
            400,
            ".zip",
        ),
        (server.post("/sessions/upload", files=bad_zip, headers=H), 400, "not a readable zip"),
        (
            server.post(f"{url}/prompt", json={"slice": 9, "box": [1, 1, 9, 9]}, headers=H),
            400,
            "out of range",
        ),
        (server.post(f"{url}/prompt", json={"slice": 1, "box": [1, 1, 500, 9]}, headers=H), 400, "outside"),
        (server.post(f"{url}/prompt", json={"slice": 1}, headers=H), 400, "box and/or points"),
        (server.post(f"{url}/prompt", json={"slice": "x"}, headers=H), 422, "slice"),
        (
            server.post(f"{url}/prompt", content=b"{", headers={**H, "content-type": "application/json"}),
            422,
            "",
        ),
        (server.post(f"{url}/undo", headers=H), 400, "nothing to undo"),
        (server.post(f"{url}/rtstruct", json={}, headers=H), 400, "DICOM series"),
        (server.post("/sessions/nope/undo", headers=H), 404, "no session"),
    ]
    for reply, status, message in cases:
        assert reply.status_code == status, reply.text
        assert message in reply.json()["detail"] and "Traceback" not in reply.text
    server.delete(url, headers=H)
