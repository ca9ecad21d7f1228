"""Runtime: the SamPredictor-compatible Predictor over any backend.

Slice streaming and prompt batching across slices build on this package.
"""

from samfast.runtime.predictor import Predictor

__all__ = ["Predictor"]
