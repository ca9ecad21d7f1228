"""Parity check of a freshly written set against the PyTorch fp32 reference on real MRI slices.

Slices come from the shipped BraTS demo cases; prompts and tolerances are samfast.eval.parity's.
`samfast export` hands verify_set to the exporter (export sits below eval and cannot import it).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from samfast.artifacts.formats import EXPORT_FORMATS
from samfast.errors import InputError

SLICES_PER_CASE = 2


@cache
def parity_slices(per_case: int = SLICES_PER_CASE) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(Putz-normalised slice, tumour-core mask) pairs: the largest and a mid-sized tumour slice."""
    from samfast.eval.datasets import find_brats_cases, load_case
    from samfast.io import find_demo_data
    from samfast.preprocess import normalize_mr_putz

    try:
        cases, _ = find_brats_cases(find_demo_data())
    except InputError as error:
        raise InputError(f"the parity check needs the demo data ({error}); or pass --no-verify") from None
    slices = []
    for case in cases:
        volume, mask, _ = load_case(case)
        areas = mask.sum(axis=(1, 2))
        order = np.argsort(areas)[::-1]
        picks = [order[0], order[np.count_nonzero(areas) // 2]][:per_case]
        scaled = normalize_mr_putz(volume)
        slices += [(scaled[z], mask[z]) for z in picks]
    return tuple(slices)


def verify_set(model, fmt: str, precision: str, folder: Path) -> dict:
    """Parity summary (with "passed") of the set in ``folder`` against ``model`` in fp32 eager."""
    from samfast.backends import open_set
    from samfast.backends.torch_backend import TorchBackend
    from samfast.eval.parity import compare_predictors
    from samfast.runtime.predictor import Predictor

    spec, weights = model.samfast_spec, model.samfast_weights
    reference = Predictor.from_backend(spec.name, weights, TorchBackend(model))
    candidate = Predictor.from_backend(spec.name, weights, open_set(fmt, folder, spec, "cpu", precision))
    report = compare_predictors(reference, candidate, parity_slices(), EXPORT_FORMATS[fmt].backend, precision)
    data = "shipped BraTS demo cases, tumour core"
    return report.summary() | {"slices": len(parity_slices()), "data": data}
