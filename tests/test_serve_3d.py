"""3D through `samfast serve` over real HTTP on loopback: propagation streamed slice by slice, the same
mask as `samfast segment`, cancellation by a newer prompt or a client that leaves, one undo step,
edits, the compact mask encoding and idle-time prefetch. The real LiteMedSAM predictor, httpx."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import threading
import time

import httpx
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_fixtures import tumour_crop
from serve_fixtures import serve_in_thread
from typer.testing import CliRunner

from samfast import Predictor
from samfast.cli import app as cli
from samfast.eval.metrics import bounding_box, dice
from samfast.serve.app import create_app

KEY = "test-key-0123456789abcdef"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def predictor():
    predictor = Predictor("litemedsam", backend="onnxruntime")
    calls = []
    encode = predictor.backend.encode

    def counted(batch):  # every encoder call, with when it ended
        out = encode(batch)
        calls.append(time.perf_counter())
        return out

    predictor.backend.encode = counted
    predictor.encoder_calls = calls
    return predictor


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """12 slices of demo case 002 around its tumour core, and the core's 3D box (voxel indices)."""
    image, label = tumour_crop("BraTS20_Demo_002", slices=12, size=112)
    path = tmp_path_factory.mktemp("serve3d") / "case2.nii.gz"
    sitk.WriteImage(image, str(path))
    core = np.isin(sitk.GetArrayFromImage(label), (1, 4))
    zs = np.flatnonzero(core.any(axis=(1, 2)))
    x0, y0, x1, y1 = (float(v) for v in bounding_box(core.any(axis=0)))
    return path, [x0, y0, float(zs[0]), x1, y1, float(zs[-1])], core


@contextlib.contextmanager
def _serve(predictor, **options):
    app = create_app(predictor, KEY, max_sessions=2, cache_slices=16, **options)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        client.store = app.state.store
        yield client


@pytest.fixture(scope="module")
def server(predictor):
    with _serve(predictor, prefetch_slices=0) as client:  # no prefetch: encoder calls are the walk's
        yield client


def _open(server, path) -> str:
    reply = server.post("/sessions", json={"path": str(path)}, headers=H)
    assert reply.status_code == 200, reply.text
    return reply.json()["session"]


def _unpack(packed: dict) -> np.ndarray:
    shape = packed["shape"]
    bits = np.frombuffer(base64.b64decode(packed["packbits"]), np.uint8)
    return np.unpackbits(bits)[: shape[0] * shape[1]].reshape(shape).astype(bool)


def _volume_bits(payload: dict) -> np.ndarray:
    mask = np.zeros(payload["shape"], bool)
    if payload["data"]:
        size = int(np.prod(payload["box_shape"]))
        bits = np.unpackbits(np.frombuffer(gzip.decompress(base64.b64decode(payload["data"])), np.uint8))
        z, y, x = payload["offset"]
        dz, dy, dx = payload["box_shape"]
        mask[z : z + dz, y : y + dy, x : x + dx] = bits[:size].reshape(dz, dy, dx).astype(bool)
    return mask


def _propagate(server, sid, body) -> tuple[list[dict], dict]:
    with server.stream("POST", f"/sessions/{sid}/propagate", json=body, headers=H) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in reply.iter_lines() if line]
    return lines[:-1], lines[-1]


def test_propagation_streams_slices_and_equals_samfast_segment(server, volume, predictor, tmp_path):
    path, box, core = volume
    sid = _open(server, path)
    before_calls = len(predictor.encoder_calls)
    first_seen = {}
    started = time.perf_counter()
    with server.stream("POST", f"/sessions/{sid}/propagate", json={"box": box}, headers=H) as reply:
        lines = []
        for line in reply.iter_lines():
            if line and not lines:  # the first slice arrives after the anchor's encoder call alone
                first_seen = {"s": time.perf_counter() - started, "calls": len(predictor.encoder_calls)}
            if line:
                lines.append(json.loads(line))
    records, final = lines[:-1], lines[-1]
    print(
        f"\nfirst slice after {1e3 * first_seen['s']:.0f} ms; {len(records)} slices; {final['elapsed_ms']} ms"
    )
    assert first_seen["calls"] - before_calls == 1
    assert final["status"] == "complete" and final["rule"]["name"] == "samfast-walk-2"
    assert sorted(r["slice"] for r in records) == final["slices"] == list(range(int(box[2]), int(box[5]) + 1))
    # the same mask as the command line with the same box
    out = tmp_path / "cli.nii.gz"
    result = CliRunner().invoke(cli, ["segment", str(path), "--box", *map(str, box), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).astype(bool)
    served = _volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json())
    assert dice(served, expected) == 1.0 and np.array_equal(served, expected)
    for record in records:  # what was streamed is what the session holds
        assert np.array_equal(_unpack(record["mask"]), served[record["slice"]])
    # the NIfTI answer stays, and agrees
    nifti = tmp_path / "served.nii.gz"
    nifti.write_bytes(server.get(f"/sessions/{sid}/mask", headers=H).content)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(nifti))).astype(bool), served)
    one = _volume_bits(server.get(f"/sessions/{sid}/mask/bits", params={"slice": 5}, headers=H).json())
    assert np.array_equal(one[5], served[5]) and not np.delete(one, 5, axis=0).any()
    assert dice(served, core) > 0.5


def test_undo_after_a_propagation_restores_the_mask_before_it(server, volume):
    path, box, _ = volume
    sid = _open(server, path)
    middle = int((box[2] + box[5]) // 2)
    clicked = server.post(
        f"/sessions/{sid}/prompt", json={"slice": middle, "box": [box[0], box[1], box[3], box[4]]}, headers=H
    )
    assert clicked.status_code == 200
    before = _volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json())
    records, final = _propagate(server, sid, {})  # from the prompted slice
    assert final["status"] == "complete" and final["anchors"] == [middle] and len(records) > 1
    after = _volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json())
    assert not np.array_equal(after, before)
    undone = server.post(f"/sessions/{sid}/undo", headers=H).json()
    assert sorted(undone["slices"]) == final["slices"]
    assert np.array_equal(_volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json()), before)
    redone = server.post(f"/sessions/{sid}/redo", headers=H)
    assert redone.status_code == 200 and sorted(redone.json()["slices"]) == final["slices"]
    assert np.array_equal(_volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json()), after)
    nothing = server.post(f"/sessions/{sid}/redo", headers=H)
    assert nothing.status_code == 400 and nothing.json()["detail"] == "nothing to redo"


def test_an_edit_reruns_from_the_corrected_slice_and_is_one_undo_step(server, volume):
    path, box, core = volume
    sid = _open(server, path)
    _, final = _propagate(server, sid, {"box": box})
    assert final["status"] == "complete"
    before = _volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json())
    z = int(box[2]) + 2
    tight = [float(v) for v in bounding_box(core[z])]
    edited = server.post(f"/sessions/{sid}/edit", json={"slice": z, "box": tight}, headers=H)
    assert edited.status_code == 200, edited.text
    reply = edited.json()
    assert z in reply["rerun"] and len(reply["rerun"]) < len(final["slices"])
    after = _volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json())
    changed = {entry["slice"] for entry in reply["masks"]}
    assert all(np.array_equal(after[k], before[k]) for k in range(after.shape[0]) if k not in changed)
    assert server.post(f"/sessions/{sid}/undo", headers=H).status_code == 200
    assert np.array_equal(_volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json()), before)
    # an undo forgets the walk: an edit now asks for a propagation first
    again = server.post(f"/sessions/{sid}/edit", json={"slice": z, "box": tight}, headers=H)
    assert again.status_code == 400 and "propagate first" in again.json()["detail"]


def test_a_prompt_during_a_propagation_cancels_it_within_one_model_call(server, volume, predictor, tmp_path):
    path, box, _ = volume
    # other intensities than the other tests' volume: no slice is in the embedding cache yet, so the
    # walk needs an encoder call a slice and is still running when the prompt comes
    image = sitk.ReadImage(str(path))
    fresh = tmp_path / "fresh.nii.gz"
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) * 0.5 + 3.0, str(fresh))
    sid = _open(server, fresh)
    got: dict = {"records": []}

    def walk():
        with server.stream("POST", f"/sessions/{sid}/propagate", json={"box": box}, headers=H) as reply:
            for line in reply.iter_lines():
                if line:
                    got["records"].append(json.loads(line))
        got["final"] = got["records"].pop()

    runner = threading.Thread(target=walk)
    runner.start()
    deadline = time.monotonic() + 120
    while not got["records"]:  # the walk is under way: its first slice has come
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.01)
    calls = len(predictor.encoder_calls)
    started = time.perf_counter()
    reply = server.post(f"/sessions/{sid}/prompt", json={"slice": 0, "box": [10, 10, 60, 60]}, headers=H)
    waited = time.perf_counter() - started
    assert reply.status_code == 200
    runner.join(60)
    print(f"\nprompt during a propagation answered in {1e3 * waited:.0f} ms")
    # at most the walk's call in flight and the prompt's own encoder call ran in between
    assert len(predictor.encoder_calls) - calls <= 2
    assert got["final"]["status"] == "cancelled"
    assert len(got["records"]) < int(box[5] - box[2]) + 1
    # a cancelled walk changes nothing: only the prompt's slice is set
    mask = _volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json())
    assert mask[0].any() and not mask[1:].any()


def test_a_client_that_leaves_mid_stream_stops_the_walk_and_frees_the_session(server, volume):
    path, box, _ = volume
    sid = _open(server, path)
    with server.stream("POST", f"/sessions/{sid}/propagate", json={"box": box}, headers=H) as reply:
        next(line for line in reply.iter_lines() if line)  # one slice, then the client goes
    deadline = time.monotonic() + 30
    while server.store.get(sid).walking.locked():
        assert time.monotonic() < deadline, "the walk kept running for a client that left"
        time.sleep(0.05)
    assert not _volume_bits(server.get(f"/sessions/{sid}/mask/bits", headers=H).json()).any()
    assert server.post(
        f"/sessions/{sid}/prompt", json={"slice": 1, "box": [10, 10, 60, 60]}, headers=H
    ).is_success


def test_bad_propagations_are_a_4xx_with_one_line(server, volume):
    path, box, _ = volume
    sid = _open(server, path)
    empty = server.post(f"/sessions/{sid}/propagate", json={}, headers=H)
    assert empty.status_code == 400 and "nothing to propagate from" in empty.json()["detail"]
    outside = server.post(f"/sessions/{sid}/propagate", json={"box": [0, 0, 0, 500, 50, 3]}, headers=H)
    assert outside.status_code == 400 and "outside" in outside.json()["detail"]
    inverted = server.post(f"/sessions/{sid}/propagate", json={"box": [50, 50, 3, 10, 10, 0]}, headers=H)
    assert inverted.status_code == 400 and "inverted" in inverted.json()["detail"]
    rule = server.post(f"/sessions/{sid}/propagate", json={"box": box, "momentum": 2}, headers=H)
    assert rule.status_code == 422
    for reply in (empty, outside, inverted, rule):
        assert "\n" not in reply.json()["detail"]
    assert server.post("/sessions/nope/propagate", json={"box": box}, headers=H).status_code == 404


def test_idle_prefetch_encodes_the_neighbours_of_the_last_prompted_slice(predictor, volume):
    path, box, _ = volume
    with _serve(predictor, prefetch_slices=2) as client:
        sid = _open(client, path)
        z = int((box[2] + box[5]) // 2)
        client.post(
            f"/sessions/{sid}/prompt", json={"slice": z, "box": [box[0], box[1], box[3], box[4]]}, headers=H
        )
        session = client.store.get(sid)
        deadline = time.monotonic() + 60
        while not all(session.model.is_cached(n) for n in (z - 2, z - 1, z + 1, z + 2)):
            assert time.monotonic() < deadline, "prefetch did not encode z±1, z±2"
            time.sleep(0.1)
        assert not session.model.is_cached(z + 3)  # bounded: two slices each side
        reply = client.post(
            f"/sessions/{sid}/prompt", json={"slice": z + 1, "box": [10, 10, 60, 60]}, headers=H
        )
        assert reply.json()["cached"] is True
