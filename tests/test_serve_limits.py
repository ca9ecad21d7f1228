"""`samfast serve` as a hostile client meets it: the real command in a subprocess on loopback (one
server for the module, LiteMedSAM loaded once), its RSS sampled from /proc while requests run.

Bombs, click floods, path tricks, 30 sessions, schemathesis with all checks, and SIGTERM last.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_fixtures import tumour_crop

KEY = "limits-key-0123456789abcdef"
H = {"X-API-Key": KEY}
UPLOAD_MB = 8
RSS_BOUND = 300 * 2**20


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Peak:
    """The server's largest RSS while the block runs, sampled every 2 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss(self.pid))
            time.sleep(0.002)

    def __enter__(self):
        self.before = _rss(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.growth = self.peak - self.before


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nifti_header(size: tuple[int, int, int], datatype: int, bitpix: int) -> bytes:
    """A NIfTI-1 header (348 bytes + 4 of extension flag) made by SimpleITK, its size patched."""
    return _patched(_small_nifti(), size, datatype, bitpix)[:352]


def _small_nifti() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "small.nii"
        sitk.WriteImage(sitk.Image([2, 2, 2], sitk.sitkInt16), str(path))
        return path.read_bytes()


def _patched(data: bytes, size, datatype: int, bitpix: int) -> bytes:
    header = bytearray(data)
    struct.pack_into("<4h", header, 40, 3, *size)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    return bytes(header)


def _gzip_zeros(prefix: bytes, zeros: int) -> bytes:
    """``prefix`` then ``zeros`` zero bytes, gzip-compressed in chunks (never all in memory)."""
    import io

    buffer = io.BytesIO()
    chunk = bytes(2**20)
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as stream:
        stream.write(prefix)
        for _ in range(zeros // len(chunk)):
            stream.write(chunk)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    data, scratch, cwd = base / "data", base / "tmp", base / "cwd"
    for folder in (data, scratch, cwd):
        folder.mkdir()
    sitk.WriteImage(tumour_crop("BraTS20_Demo_002", slices=4, size=96)[0], str(data / "small.nii.gz"))
    gradient = (np.arange(80 * 192 * 192, dtype=np.int64).reshape(80, 192, 192) % 3001).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(gradient), str(data / "medium.nii"))
    # Scratch left by a server that died (its pid is gone), a stranger's folder, a live owner's.
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name, owner in (("dead", {"pid": dead.pid, "start": "0"}), ("live", None), ("stranger", None)):
        folder = scratch / f"samfast-serve-{name}"
        folder.mkdir()
        (folder / "upload.nii.gz").write_bytes(b"x")
        if name == "live":
            start = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
            owner = {"pid": os.getpid(), "start": start}
        if owner:
            (folder / ".samfast-serve-owner").write_text(json.dumps(owner))
    key_file = base / "key"
    key_file.write_text(KEY + "\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "SAMFAST_API_KEY"}
    env.update(TMPDIR=str(scratch), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, "-m", "samfast", "serve", "--port", str(port), "--api-key-file", str(key_file)]
    command += ["--allow-root", str(data), "--max-upload-mb", str(UPLOAD_MB), "--max-sessions", "2"]
    log = open(base / "server.log", "wb")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, (base / "server.log").read_text()[-2000:]
        try:
            if httpx.get(f"{url}/health", headers=H, timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        raise AssertionError("server did not start")
    with httpx.Client(base_url=url, headers=H, timeout=120) as client:
        yield {
            "client": client, "process": process, "port": port, "data": data, "scratch": scratch,
            "log": base / "server.log", "base": base,
        }  # fmt: skip
    if process.poll() is None:
        process.kill()
        process.wait()
    log.close()


def _mhd(data_file: str) -> str:
    fields = ("ObjectType = Image", "NDims = 3", "DimSize = 4 4 4", "ElementType = MET_UCHAR")
    return "\n".join((*fields, f"ElementDataFile = {data_file}", ""))


def _open(client, path) -> str:
    reply = client.post("/sessions", json={"path": str(path)})
    assert reply.status_code == 200, reply.text
    return reply.json()["session"]


def test_the_key_stays_out_of_ps_and_stale_scratch_is_removed_at_start(served):
    cmdline = Path(f"/proc/{served['process'].pid}/cmdline").read_bytes()
    assert KEY.encode() not in cmdline
    left = sorted(p.name for p in served["scratch"].glob("samfast-serve-*"))
    assert "samfast-serve-dead" not in left  # marked, owner gone: removed
    assert {"samfast-serve-live", "samfast-serve-stranger"} <= set(left)  # owner alive / not ours: kept
    own = [name for name in left if name.startswith(f"samfast-serve-{served['process'].pid}-")]
    assert len(own) == 1


def test_header_bomb_and_gzip_bombs_are_refused_before_allocating(served):
    client, pid = served["client"], served["process"].pid
    header_bomb = _nifti_header((4000, 4000, 100), 4, 16)
    header_bomb += bytes(480 - len(header_bomb))
    gzip_bomb = _gzip_zeros(_nifti_header((1000, 1000, 300), 2, 8), 300 * 2**20)
    trailing = _gzip_zeros(_nifti_header((64, 64, 64), 4, 16), 400 * 2**20)  # small header, 400 MB inside
    assert len(header_bomb) == 480 and len(gzip_bomb) < 400_000 and len(trailing) < UPLOAD_MB * 2**20
    for name, body, words in (
        ("header.nii", header_bomb, "1600000000 voxels"),
        ("bomb.nii.gz", gzip_bomb, "300000000 voxels"),
        ("trailing.nii.gz", trailing, "inflates past"),
    ):
        with Peak(pid) as peak:
            reply = client.post("/sessions/upload", files={"file": (name, body, "application/gzip")})
        print(f"\n{name} ({len(body)} bytes): {reply.status_code}, server RSS +{peak.growth / 2**20:.0f} MB")
        assert reply.status_code == 413 and words in reply.json()["detail"], reply.text
        assert str(served["scratch"]) not in reply.text and name in reply.json()["detail"]
        assert peak.growth <= RSS_BOUND


def test_8000_clicks_are_refused_without_touching_the_model(served):
    client = served["client"]
    sid = _open(client, served["data"] / "small.nii.gz")
    clicks = [[float(i % 90), float(i % 80), 1.0] for i in range(8000)]
    for count, status, words in ((8000, 413, "larger than"), (65, 422, "points")):
        with Peak(served["process"].pid) as peak:
            started = time.perf_counter()
            reply = client.post(f"/sessions/{sid}/prompt", json={"slice": 1, "points": clicks[:count]})
            elapsed = time.perf_counter() - started
        print(
            f"\n{count} clicks: {reply.status_code} in {1e3 * elapsed:.0f} ms, "
            f"RSS +{peak.growth / 2**20:.0f} MB"
        )
        assert reply.status_code == status and words in reply.json()["detail"], reply.text
    assert client.get(f"/sessions/{sid}").json()["cached_slices"] == 0  # the encoder never ran
    few = client.post(f"/sessions/{sid}/prompt", json={"slice": 1, "points": [[40, 40, 1], [10, 10, 0]]})
    assert few.status_code == 200 and few.json()["pixels"] > 0
    assert client.delete(f"/sessions/{sid}").status_code == 200


def test_path_errors_are_4xx_and_the_connection_stays_open(served):
    data = served["data"]
    many = data / "many"
    many.mkdir()
    for index in range(4100):
        (many / f"{index}.dcm").touch()
    os.mkfifo(data / "pipe.nii")
    (data / "passwd.mhd").write_text(_mhd("/etc/passwd"))
    (data / "link.nii.gz").symlink_to("/etc/passwd")
    cases = [
        ("/", 403),
        ("/proc", 403),
        ("/proc/self/status", 403),
        (str(data / ("a" * 300)), 404),
        (str(data / ("b" * 200) / ("c" * 100)), 404),
        (str(many), 403),
        (str(data / "pipe.nii"), 403),
        (str(data / "passwd.mhd"), 403),
        (str(data / "link.nii.gz"), 403),
        (str(data / "none.nii.gz"), 404),
    ]
    connection = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=60)
    connection.connect()
    sock = connection.sock
    for path, status in cases:
        connection.request(
            "POST", "/sessions", json.dumps({"path": path}), {**H, "Content-Type": "application/json"}
        )
        reply = connection.getresponse()
        body = json.loads(reply.read())
        assert reply.status == status, (path, body)
        assert "\n" not in body["detail"] and len(body["detail"]) < 300
        assert (reply.getheader("connection") or "").lower() != "close"
        connection.request("GET", "/health", headers=H)
        health = connection.getresponse()
        assert health.status == 200 and json.loads(health.read())["status"] == "ok"
        assert connection.sock is sock  # the same kept-alive connection served both
    connection.close()


def test_uploads_read_only_what_was_uploaded(served):
    client = served["client"]
    for name in ("evil.mhd", "evil.mha"):
        reply = client.post(
            "/sessions/upload", files={"file": (name, _mhd("/etc/passwd").encode(), "text/plain")}
        )
        assert reply.status_code == 400 and "data file elsewhere" in reply.json()["detail"], reply.text
    nrrd = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 8 8\nencoding: raw\ndata file: /etc/passwd\n\n"
    reply = client.post("/sessions/upload", files={"file": ("evil.nrrd", nrrd, "application/octet-stream")})
    assert reply.status_code == 400 and "data file elsewhere" in reply.json()["detail"]
    local = (
        b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    )
    reply = client.post(
        "/sessions/upload", files={"file": ("ok.mha", local + bytes(range(64)), "text/plain")}
    )
    assert reply.status_code == 200 and reply.json()["size"] == [4, 4, 4], reply.text
    client.delete(f"/sessions/{reply.json()['session']}")


def test_30_sessions_give_their_memory_back(served):
    client, pid = served["client"], served["process"].pid
    medium = served["data"] / "medium.nii"  # 192 x 192 x 80 int16: ~20 MB held per session, 600 MB for 29
    client.delete(f"/sessions/{_open(client, medium)}")
    level = _rss(pid)
    peak = level
    for _ in range(29):
        sid = _open(client, medium)
        peak = max(peak, _rss(pid))
        assert client.delete(f"/sessions/{sid}").status_code == 200
    after = _rss(pid)
    print(
        f"\n30 sessions: RSS after the first {level / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB, "
        f"after 30 {after / 2**20:.0f} MB"
    )
    assert after - level <= 150 * 2**20
    assert client.get("/health").json()["sessions"] == 0


def test_docs_page_loads_without_the_key_and_the_spec_declares_it(served):
    client, url = served["client"], f"http://127.0.0.1:{served['port']}"
    page = httpx.get(f"{url}/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text and "preauthorizeApiKey" in page.text
    assert httpx.get(f"{url}/openapi.json").status_code == 401
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"APIKeyHeader": []}], (method, path)
            assert {"401", "500"} <= set(operation["responses"]), (method, path)
            if "422" in operation["responses"]:
                schema = operation["responses"]["422"]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}
    invalid = client.post("/sessions", json={"path": 3})
    assert invalid.status_code == 422 and isinstance(invalid.json()["detail"], str)
    options = client.options("/sessions/upload")
    assert options.status_code == 405 and options.headers["allow"] == "POST"
    assert client.options("/sessions/abc").headers["allow"] == "DELETE, GET"


def test_schemathesis_all_checks_pass(served):
    config = served["base"] / "schemathesis.toml"
    # A schema cannot say which bytes are a readable NIfTI: a schema-valid upload of random bytes is
    # rightly refused (400), so that operation lists 400 among the answers to valid data; nor can it
    # bound an ROI name's UTF-8 bytes (DICOM readers count bytes), so the RTSTRUCT export does too.
    config.write_text(
        '[[operations]]\ninclude-path = "/sessions/upload"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "413"]\n'
        '[[operations]]\ninclude-path = "/sessions/{session_id}/rtstruct"\n'
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "413"]\n'
    )
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
        f"http://127.0.0.1:{served['port']}/openapi.json", "-H", f"X-API-Key: {KEY}",
        "--checks", "all", "--seed", "1", "--max-examples", "10", "--workers", "1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=served["base"])
    tail = result.stdout[-3000:]
    summary = [line.strip() for line in result.stdout.splitlines() if "generated" in line]
    print(f"\nschemathesis: {' '.join(command[3:])}\n{summary}")
    assert result.returncode == 0, tail
    assert summary and " passed" in summary[-1] and "fail" not in summary[-1], tail
    assert served["process"].poll() is None


def test_sigterm_removes_the_scratch(served):
    client, process = served["client"], served["process"]
    series = served["data"] / "small.nii.gz"
    reply = client.post(
        "/sessions/upload", files={"file": ("case.nii.gz", series.read_bytes(), "application/gzip")}
    )
    assert reply.status_code == 200
    own = next(served["scratch"].glob(f"samfast-serve-{process.pid}-*"))
    assert any(own.rglob("*.nii.gz"))  # the upload is there while its session lives
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    assert not own.exists()
    assert not list(served["scratch"].glob(f"samfast-serve-{process.pid}-*"))
    assert (served["scratch"] / "samfast-serve-stranger").is_dir()
    log = served["log"].read_text()
    assert "Traceback" not in log
