"""Peak RSS of one process streaming a whole 240×240×155 demo volume through the runtime.

Every slice goes through the slice streamer (OpenVINO fp32 encoder, bounded staging buffers);
the tumour slices' embeddings are kept, the encoder is released, and the embeddings run through
the batched 9-point Putz protocol. Prints one JSON line. Run by bench/test_runtime.py in a fresh
process, so nothing else inflates the peak. Besides the peak (VmHWM) it reports how much of the
resident memory at the end is file-backed (shared libraries: the CUDA build of torch maps
~650 MiB of them even on a CPU-only machine) and how much is the process's own (RssAnon).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from samfast import preprocess
from samfast.eval.protocols import run_slices
from samfast.runtime.predictor import Predictor
from samfast.runtime.streaming import SliceStreamer

CASE = "BraTS20_Demo_001"
CASE_DIR = Path(__file__).resolve().parents[1] / "data" / "brats_demo" / CASE


def status_kib(field: str = "VmHWM") -> int:
    """A memory field of /proc/self/status (VmHWM: peak RSS). Not ru_maxrss: Linux carries that
    over fork + exec, so a child of a large pytest process would report its parent's peak."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    if field == "VmHWM":  # a kernel without it: the peak by the other count
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    raise KeyError(f"/proc/self/status has no {field}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t1ce = sitk.GetArrayFromImage(sitk.ReadImage(str(CASE_DIR / f"{CASE}_t1ce.nii.gz")))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(CASE_DIR / f"{CASE}_seg.nii.gz")))
    volume = preprocess.normalize_mr_putz(t1ce.astype(np.float32))
    mask = np.isin(seg, (1, 4))
    # Backends open their graphs on first use: the encoder predictor holds only OpenVINO's encoder,
    # the decoder predictor only ONNX Runtime's split decoder.
    encoder = Predictor("litemedsam", backend="openvino", threads=args.threads)
    decoder = Predictor("litemedsam", backend="onnxruntime", threads=args.threads)
    start = time.perf_counter()
    tumour = [int(z) for z in np.flatnonzero(mask.any(axis=(1, 2)))]
    row_of = {z: row for row, z in enumerate(tumour)}
    # one array for the kept embeddings, filled as they stream in (no list + concatenated copy)
    kept = np.empty((len(tumour), *encoder.spec.embedding_shape), np.float32)
    streamed = 0
    with SliceStreamer(encoder, volume, max_in_flight=2) as streamer:
        for batch in streamer:
            for row, z in enumerate(batch.indices):
                streamed += 1
                if z in row_of:
                    kept[row_of[z]] = batch.embeddings[row]
    after_stream_kib = status_kib()
    # The encoder is done: its compiled graph (~300 MiB) is not needed by the protocol.
    encoder.backend.release()
    records = run_slices(decoder, kept, [mask[z] for z in tumour], "points-putz")
    peak_kib = status_kib()
    print(
        json.dumps(
            {
                "volume_shape": list(volume.shape),
                "slices_streamed": streamed,
                "tumour_slices": len(tumour),
                "peak_rss_after_streaming_mib": after_stream_kib / 1024,
                "steps": sum(len(r) for r in records),
                "seconds": round(time.perf_counter() - start, 1),
                "peak_rss_mib": peak_kib / 1024,
                "rss_file_backed_mib_at_end": status_kib("RssFile") / 1024,
                "rss_anonymous_mib_at_end": status_kib("RssAnon") / 1024,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
