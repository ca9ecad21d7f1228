"""The interactive click in blocks of consecutive calls: torch eager fp32 vs ONNX Runtime (plain and
split decoder) and OpenVINO bf16 (split decoder, where the CPU runs bf16) on the bench slice, 2
threads each. Complements the turn-taking runs (test_runtime.py, precision_backends.py), where every
click follows an encode.

    .venv/bin/python bench/click_probe.py
"""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk
import torch
from peak_rss import CASE, CASE_DIR

from samfast import preprocess
from samfast.backends import Prompts
from samfast.runtime.predictor import Predictor


def main(blocks: int = 5, calls: int = 10) -> None:
    torch.set_num_threads(2)
    t1ce = sitk.GetArrayFromImage(sitk.ReadImage(str(CASE_DIR / f"{CASE}_t1ce.nii.gz")))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(CASE_DIR / f"{CASE}_seg.nii.gz")))
    volume, mask = preprocess.normalize_mr_putz(t1ce.astype(np.float32)), np.isin(seg, (1, 4))
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    eager = Predictor("litemedsam", backend="torch")
    fast = Predictor("litemedsam", backend="onnxruntime", threads=2)
    eager.set_image(volume[z])
    embedding = eager.get_image_embedding()
    ys, xs = np.nonzero(mask[z])
    clicks = np.array([[[xs[0], ys[0]], [5, 5]]], np.float32)
    prompts = Prompts(
        point_coords=preprocess.transform_coords(clicks, mask[z].shape, eager.spec.input_size),
        point_labels=np.array([[1.0, 0.0]], np.float32),
    )
    state = fast.backend.image_state(embedding)
    from samfast.backends.cpu import native_bf16

    bf16 = None
    if native_bf16():
        bf16 = Predictor("litemedsam", backend="openvino", precision="bf16", threads=2)
        bf16_state = bf16.backend.image_state(embedding)
    calls_of = {
        "torch eager": lambda: eager.backend.decode(embedding, prompts),
        "onnxruntime": lambda: fast.backend.decode_full(embedding, prompts),
        "onnxruntime split": lambda: fast.backend.decode_state(state, prompts),
        "image state (once a slice)": lambda: fast.backend.image_state(embedding),
    }
    if bf16 is not None:
        calls_of["openvino bf16 split"] = lambda: bf16.backend.decode_state(bf16_state, prompts)
    times: dict[str, list[float]] = {name: [] for name in calls_of}
    for _ in range(blocks):
        for name, call in calls_of.items():
            for _ in range(3):
                call()
            start = time.perf_counter()
            for _ in range(calls):
                call()
            times[name].append((time.perf_counter() - start) / calls)
    eager_ms = np.median(times["torch eager"]) * 1e3
    for name, values in times.items():
        ms = np.median(values) * 1e3
        print(f"{name:>28}: {ms:7.2f} ms  ({100 * ms / eager_ms:5.1f} % of torch eager)")


if __name__ == "__main__":
    main()
