"""ctest fixture: the exported sets and the demo slice the C tests use.

Exports (or reuses, when the cache's manifest and hashes still match) the LiteMedSAM and the
tiny_vit_test sets of each format asked for (onnx: OpenVINO; torchscript: LibTorch) with samfast's
own export code into $SAMFAST_ENGINES (ctest points it at build/csrc/engines), links them as
<out>/sets/<format>/<model>, and writes <out>/demo/slice.npy: axial slice 94 of BraTS20_Demo_001's
t1ce, Putz-normalised over the volume (the README's example slice).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEMO, load_case  # noqa: E402

from samfast.export.cache import ensure_set  # noqa: E402
from samfast.models import resolve_weights  # noqa: E402
from samfast.preprocess import normalize_mr_putz  # noqa: E402

SETS = {"litemedsam": False, "tiny_vit_test": True}  # model -> random weights


def link(target: Path, name: Path) -> None:
    name.parent.mkdir(parents=True, exist_ok=True)
    tmp = name.with_name(name.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target.resolve(), target_is_directory=True)
    os.replace(tmp, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--formats", default="onnx,torchscript", help="comma-separated export formats")
    args = parser.parse_args()
    if not os.environ.get("SAMFAST_ENGINES"):
        os.environ["SAMFAST_ENGINES"] = str(args.out.parent / "engines")
    for fmt in args.formats.split(","):
        for model, random_weights in SETS.items():
            weights = resolve_weights(model, None, random_weights)
            folder = ensure_set(model, weights, fmt)
            link(folder, args.out / "sets" / fmt / model)
            print(f"{fmt} {model}: {folder}")
    volume, _ = load_case("BraTS20_Demo_001")
    demo = args.out / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    np.save(demo / "slice.npy", normalize_mr_putz(volume)[94])
    print(f"demo slice: {demo / 'slice.npy'} (from {DEMO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
