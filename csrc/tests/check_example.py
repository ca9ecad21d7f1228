"""ctest: the mask the example program wrote (examples/segment_slice.c) is the Python predictor's.

Reads <fixtures>/demo/mask.pgm (from the ONNX set), runs samfast.Predictor("litemedsam",
backend="openvino") on the same slice and box, and requires Dice >= 0.999; also prints the Dice
against the BraTS tumour core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dice, load_case  # noqa: E402

from samfast import Predictor  # noqa: E402

BOX = [54, 134, 98, 194]  # the box CMakeLists.txt gives the example


def read_pgm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    fields = data.split(maxsplit=4)
    if fields[0] != b"P5" or int(fields[3]) != 255:
        raise ValueError(f"{path} is not an 8-bit binary PGM")
    width, height = int(fields[1]), int(fields[2])
    return np.frombuffer(fields[4][: width * height], np.uint8).reshape(height, width) > 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixtures", type=Path, required=True)
    args = parser.parse_args()
    image = np.load(args.fixtures / "demo" / "slice.npy")
    from_c = read_pgm(args.fixtures / "demo" / "mask.pgm")
    predictor = Predictor("litemedsam", backend="openvino", log=lambda _: None)
    predictor.set_image(image)
    masks, iou, _ = predictor.predict(box=BOX, multimask_output=False)
    agreement = dice(masks[0], from_c)
    _, truth = load_case("BraTS20_Demo_001")
    print(
        f"example mask: {int(from_c.sum())} pixels; Python predictor: {int(masks[0].sum())} pixels "
        f"(predicted IoU {iou[0]:.4f}); Dice between them {agreement:.5f}"
    )
    print(f"Dice of the example mask with the BraTS tumour core: {dice(from_c, truth[94]):.3f}")
    ok = agreement >= 0.999
    print(f"{int(ok)} passed, {int(not ok)} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
