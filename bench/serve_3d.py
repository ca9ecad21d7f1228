"""`samfast serve` for 3D contouring, measured over real HTTP on loopback (a client as a plug-in is).

    flock /work/notes/bench.lock .venv/bin/python bench/serve_3d.py [--backend onnxruntime --precision fp32]

On demo case 001 (t1ce), with one real `samfast serve` process per setting (--prefetch default
and --prefetch 0), side by side in one run:
- neighbours: a box on slice z, 2 s idle, then the first box on z+1, z-1, z+2, z-2 (round trip,
  mask unpacked), for 5 slices z across the tumour: p50 / p95;
- clicks while prefetch runs: a box on a new slice, then at once 10 clicks on that (encoded) slice;
- whole-case propagation from the tumour core's 3D box (streamed to the end) against
  `samfast segment` with the same box (CLI wall time, start-up included).
Prints one JSON line with the CPU model. Reports only; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import SimpleITK as sitk
from cli_volume import cpu_model

REPO = Path(__file__).resolve().parents[1]
CASE = REPO / "data" / "brats_demo" / "BraTS20_Demo_001"


def core_box() -> list[int]:
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(CASE / "BraTS20_Demo_001_seg.nii.gz")))
    core = np.isin(label, (1, 4))
    zs, ys, xs = (np.flatnonzero(core.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    return [int(v) for v in (xs[0], ys[0], zs[0], xs[-1], ys[-1], zs[-1])]


def p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def serve(args, prefetch: str | None, key_file: Path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    command = [sys.executable, "-m", "samfast", "serve", "--port", str(port), "--api-key-file", str(key_file)]
    command += ["--allow-root", str(REPO / "data"), "--backend", args.backend, "--precision", args.precision]
    command += [] if prefetch is None else ["--prefetch", prefetch]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if client.get("/health", headers={"X-API-Key": key_file.read_text().strip()}).status_code == 200:
                return child, client
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("the server did not start")


def timed_prompt(client, headers, sid, body) -> float:
    started = time.perf_counter()
    reply = client.post(f"/sessions/{sid}/prompt", json=body, headers=headers)
    payload = reply.json()
    np.unpackbits(np.frombuffer(base64.b64decode(payload["mask"]["packbits"]), np.uint8))
    return 1e3 * (time.perf_counter() - started)


def measure(args, prefetch: str | None, key_file: Path, box: list[int]) -> dict:
    child, client = serve(args, prefetch, key_file)
    headers = {"X-API-Key": key_file.read_text().strip()}
    try:
        image = str(CASE / "BraTS20_Demo_001_t1ce.nii.gz")
        sid = client.post("/sessions", json={"path": image}, headers=headers).json()["session"]
        plane = [box[0], box[1], box[3], box[4]]
        neighbours, clicks = [], []
        for z in np.linspace(box[2] + 6, box[5] - 6, 5).astype(int):
            timed_prompt(client, headers, sid, {"slice": int(z), "box": plane})
            time.sleep(2.0)
            for offset in (1, -1, 2, -2):
                neighbours.append(
                    timed_prompt(client, headers, sid, {"slice": int(z + offset), "box": plane})
                )
        for z in (box[2] + 3, box[5] - 3):  # prefetch starts around z while the clicks come
            timed_prompt(client, headers, sid, {"slice": int(z), "box": plane})
            cx, cy = (box[0] + box[3]) // 2, (box[1] + box[4]) // 2
            for k in range(10):
                body = {"slice": int(z), "box": plane, "points": [[cx + k % 3, cy, 1]]}
                clicks.append(timed_prompt(client, headers, sid, body))
        fresh = client.post("/sessions", json={"path": image}, headers=headers).json()["session"]
        started = time.perf_counter()
        with client.stream(
            "POST", f"/sessions/{fresh}/propagate", json={"box": box}, headers=headers
        ) as reply:
            final = [json.loads(line) for line in reply.iter_lines() if line][-1]
        propagation = time.perf_counter() - started
        return {
            "neighbour_box_ms": {"p50": p(neighbours, 50), "p95": p(neighbours, 95), "n": len(neighbours)},
            "click_on_encoded_slice_ms": {"p50": p(clicks, 50), "p95": p(clicks, 95), "n": len(clicks)},
            "propagation_s": round(propagation, 2),
            "propagation_status": final["status"],
        }
    finally:
        child.terminate()
        child.wait(30)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="samfast-serve-3d-"))
    key_file = work / "key"
    key_file.write_text(secrets.token_hex(16))
    box = core_box()
    load_before = os.getloadavg()
    results = {
        "prefetch default": measure(args, None, key_file, box),
        "prefetch 0": measure(args, "0", key_file, box),
    }
    command = [sys.executable, "-m", "samfast", "segment", str(CASE / "BraTS20_Demo_001_t1ce.nii.gz")]
    command += ["--box", *map(str, box), "--out", str(work / "m.nii.gz")]
    command += ["--backend", args.backend, "--precision", args.precision]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    segment = time.perf_counter() - started
    print(json.dumps({
        "what": f"samfast serve 3D on BraTS20_Demo_001, {args.backend} {args.precision}, loopback",
        "cpu": cpu_model(),
        "results": results,
        "segment_cli_s": round(segment, 2),
        "propagation_over_segment": round(results["prefetch default"]["propagation_s"] / segment, 3),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
