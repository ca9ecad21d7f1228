"""The naive whole-volume baseline: segment-anything-style predict, torch eager, one call per point.

    PYTHONPATH=. python bench/naive_putz.py --case BraTS20_Demo_001 --out naive.json

For every target slice of the case (the same slices ``samfast bench brats --protocol points-putz``
takes: axial, tumour core, >= 100 px), set_image then up to 9 Putz points, each a separate
``predict`` on the people tier of a torch Predictor; the next point follows the oracle mask. No
batching, no streaming, no cache. Writes {slice: [[points, ious], ...]} for bench/cli_volume.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from samfast import Predictor
from samfast.eval.datasets import find_brats_cases, load_case
from samfast.eval.metrics import iou
from samfast.eval.prompts import putz_first_point, putz_next_point
from samfast.eval.slicing import target_slices
from samfast.io import find_demo_data
from samfast.preprocess import normalize


def putz_slice(predictor: Predictor, image: np.ndarray, gt: np.ndarray, max_points: int = 9) -> list:
    predictor.set_image(image)
    points, steps = [putz_first_point(gt)], []
    while True:
        coords = np.array([p[:2] for p in points], np.float32)
        labels = np.array([p[2] for p in points], np.float32)
        masks, _, _ = predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)
        ious = [iou(mask, gt) for mask in masks]
        steps.append([[list(map(int, p)) for p in points], ious])
        point = None if len(points) == max_points else putz_next_point(gt, masks[int(np.argmax(ious))])
        if point is None:
            return steps
        points.append(point)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="BraTS20_Demo_001")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cases, _ = find_brats_cases(find_demo_data(), "t1ce")
    case = next(c for c in cases if c.case_id == args.case)
    volume, truth, _ = load_case(case, "tc")
    scaled = normalize(volume, "putz")
    predictor = Predictor("litemedsam", backend="torch")
    out = {int(z): putz_slice(predictor, scaled[z], truth[z]) for z in target_slices(truth, 100)}
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
