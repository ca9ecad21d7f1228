"""`samfast serve` against clients that hold connections without sending: the real command in a
subprocess on loopback with short --header-timeout / --body-timeout, raw sockets as the clients
that say nothing or trickle, httpx as the client that must be served meanwhile. Also the picture
bomb through the upload route, with the server's RSS sampled while it is refused.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_fixtures import serve_process
from test_image_budget import write_png

KEY = "connections-key-0123456789abcdef"
H = {"X-API-Key": KEY}
HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS = 2.0, 3.0, 220
SLACK = 3.0  # scheduling on a loaded 2-core machine
RSS_BOUND = 300 * 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("connections")
    options = ["--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)]
    options += ["--keep-alive-timeout", "1", "--max-connections", str(MAX_CONNECTIONS)]
    with serve_process(base, KEY, *options) as served:
        yield {**served, "base": base}


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def _closed_within(socks: list[socket.socket], seconds: float) -> dict[socket.socket, float]:
    """When each socket saw the server close it (EOF or reset), waiting at most ``seconds``."""
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    data = key.fileobj.recv(4096)
                except (ConnectionResetError, BlockingIOError) as error:
                    data = b"" if isinstance(error, ConnectionResetError) else None
                if data == b"":
                    closed[key.fileobj] = time.monotonic()
                    selector.unregister(key.fileobj)
    return closed


def test_200_silent_connections_are_closed_in_time_while_a_client_is_served(server):
    started = time.monotonic()
    silent = [_connect(server["port"]) for _ in range(200)]
    try:
        trickle = _connect(server["port"])
        trickle.send(b"GET /health HTTP/1.1\r\n")  # then a header byte a second, never finished
        with httpx.Client(base_url=server["url"], headers=H, timeout=10) as client:
            for _ in range(3):
                assert client.get("/health").status_code == 200
        assert time.monotonic() - started < HEADER_TIMEOUT  # served while all 201 were open
        pending = silent + [trickle]
        for _ in range(int(HEADER_TIMEOUT + SLACK)):
            try:
                trickle.send(b"x")
            except OSError:
                break
            closed = _closed_within(pending, 1.0)
            pending = [s for s in pending if s not in closed]
        closed = _closed_within(pending, HEADER_TIMEOUT + SLACK - (time.monotonic() - started))
        left = [s for s in pending if s not in closed]
        elapsed = time.monotonic() - started
        print(f"\n201 connections: {len(silent) + 1 - len(left)} closed by the server after {elapsed:.1f} s")
        assert not left
        assert elapsed <= HEADER_TIMEOUT + SLACK
    finally:
        for sock in silent:
            sock.close()
    assert httpx.get(f"{server['url']}/health", headers=H, timeout=10).status_code == 200


def test_a_body_sent_a_byte_a_second_is_cut_off(server):
    sock = _connect(server["port"])
    head = (
        f"POST /sessions/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.send(head.encode())
    started, sent = time.monotonic(), 0
    try:
        for _ in range(int(BODY_TIMEOUT + SLACK) + 1):
            try:
                sock.send(b"-")
            except OSError:
                break
            sent += 1
            if _closed_within([sock], 1.0):
                break
        elapsed = time.monotonic() - started
        print(f"\nbody at 1 byte/s: cut off after {sent} bytes, {elapsed:.1f} s")
        assert sent < 1000
        assert BODY_TIMEOUT - 0.5 <= elapsed <= BODY_TIMEOUT + SLACK
    finally:
        sock.close()
    assert httpx.get(f"{server['url']}/health", headers=H, timeout=10).status_code == 200
    log = server["log"].read_text()
    assert "Traceback" not in log and "internal error" not in log, log[-2000:]


def test_a_connection_over_the_cap_is_answered_503_and_closed(server):
    held = [_connect(server["port"]) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)  # the server accepts them all before the next
        extra = _connect(server["port"])
        with selectors.DefaultSelector() as selector:
            selector.register(extra, selectors.EVENT_READ)
            assert selector.select(timeout=5)
        extra.setblocking(True)
        reply = extra.recv(4096)
        extra.close()
        assert reply.startswith(b"HTTP/1.1 503 ") and b"more than 220 connections open" in reply
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server sees the closes; then it serves again
        if httpx.get(f"{server['url']}/health", headers=H, timeout=10).status_code == 200:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("not served after the held connections closed")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_the_png_bomb_upload_is_refused_413_without_inflating(server, tmp_path):
    bomb = write_png(tmp_path / "bomb.png", 20000, 20000).read_bytes()
    empty = write_png(tmp_path / "empty.png", 0, 0, rows=0).read_bytes()
    pid, peak, stop = server["process"].pid, [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.002)

    before = _rss(pid)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with httpx.Client(base_url=server["url"], headers=H, timeout=60) as client:
        # a volume's name is the only way in: ITK picks the codec by content, not by name
        as_volume = client.post("/sessions/upload", files={"file": ("bomb.nii", bomb)})
        as_png = client.post("/sessions/upload", files={"file": ("bomb.png", bomb)})
        zero = client.post("/sessions/upload", files={"file": ("empty.nii", empty)})
    stop.set()
    thread.join()
    print(f"\nbomb upload: {as_volume.status_code}, server RSS +{(peak[0] - before) / 2**20:.0f} MB")
    assert as_volume.status_code == 413 and "400000000 voxels" in as_volume.json()["detail"], as_volume.text
    assert as_png.status_code == 400 and "upload a .nii.gz" in as_png.json()["detail"]
    assert zero.status_code == 400 and "PNG header declares 0x0 pixels" in zero.json()["detail"]
    assert peak[0] - before <= RSS_BOUND
    assert "libpng" not in server["log"].read_text()
