"""samfast: fast, verifiable Segment Anything inference for medical imaging.

``samfast.Predictor`` is the entry point; heavy modules load only when first used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__", "available_models", "build_model"]


def __getattr__(name: str):
    # Lazy, so `samfast --version` and `import samfast` stay quick and need no torch.
    if name == "Predictor":
        from samfast.runtime.predictor import Predictor

        return Predictor
    if name in ("available_models", "build_model"):
        from samfast import models

        return getattr(models, name)
    raise AttributeError(f"module 'samfast' has no attribute {name!r}")
