"""Memory of a propagation in `samfast serve` on a large volume: RSS from /proc before, during and after.

    .venv/bin/python bench/serve_memory_3d.py [--slices 300 --side 512 --walk 24]

A synthetic 512×512×300 int16 volume (a bright ellipsoid in noise: real data cannot be that large in
the repository), opened by path in a real `samfast serve` process (LiteMedSAM, ONNX Runtime), then a
propagation from a 3D box over ``--walk`` slices around the ellipsoid's middle, streamed to the end,
undone and redone. Prints one JSON line: the session budget (`--session-memory-mb` and the cost the
service computed), the server's RSS (VmRSS) before opening, after opening, peak during the walk,
after it, and after closing the session. Reports only.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import SimpleITK as sitk
from cli_volume import cpu_model


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--walk", type=int, default=24)
    parser.add_argument("--session-memory-mb", type=float, default=4096)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="samfast-serve-memory-"))
    z, y, x = np.ogrid[: args.slices, : args.side, : args.side]
    c = (args.slices // 2, args.side // 2, args.side // 2)
    inside = ((z - c[0]) / 40.0) ** 2 + ((y - c[1]) / 60.0) ** 2 + ((x - c[2]) / 50.0) ** 2 <= 1
    rng = np.random.default_rng(0)
    volume = (rng.normal(200, 30, inside.shape) + 600 * inside).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(work / "large.nii.gz"))
    del volume, inside
    key = secrets.token_hex(16)
    (work / "key").write_text(key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    command = [
        sys.executable,
        "-m",
        "samfast",
        "serve",
        "--port",
        str(port),
        "--api-key-file",
        str(work / "key"),
    ]
    command += [
        "--allow-root",
        str(work),
        "--session-memory-mb",
        str(args.session_memory_mb),
        "--prefetch",
        "0",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    headers = {"X-API-Key": key}
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if client.get("/health", headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        figures = {"before_open_mb": rss_mb(server.pid)}
        opened = client.post("/sessions", json={"path": str(work / "large.nii.gz")}, headers=headers)
        opened.raise_for_status()
        sid = opened.json()["session"]
        figures["after_open_mb"] = rss_mb(server.pid)
        peak, done = [0.0], threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(server.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        half = args.walk // 2
        box = [c[2] - 55, c[1] - 65, c[0] - half, c[2] + 55, c[1] + 65, c[0] + half]
        with client.stream("POST", f"/sessions/{sid}/propagate", json={"box": box}, headers=headers) as reply:
            final = [json.loads(line) for line in reply.iter_lines() if line][-1]
        client.post(f"/sessions/{sid}/undo", headers=headers).raise_for_status()
        client.post(f"/sessions/{sid}/redo", headers=headers).raise_for_status()
        done.set()
        watcher.join()
        figures["peak_during_walk_undo_redo_mb"] = peak[0]
        figures["after_walk_mb"] = rss_mb(server.pid)
        client.delete(f"/sessions/{sid}", headers=headers).raise_for_status()
        time.sleep(1.0)
        figures["after_close_mb"] = rss_mb(server.pid)
        voxels = args.slices * args.side * args.side
        print(json.dumps({
            "what": f"samfast serve, {args.side}x{args.side}x{args.slices} int16, walk of {args.walk} slices",
            "cpu": cpu_model(),
            "session_memory_mb": args.session_memory_mb,
            "session_cost_mb": round(voxels * (2 + 4 + 4) / 2**20, 1),
            "walk": {"status": final["status"], "slices": len(final.get("slices") or [])},
            "rss": {k: round(v, 1) for k, v in figures.items()},
        }))  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
