"""Per-pixel support vector regression: cross-validation folds, training backends and the
fitted kernel expansion shared by all backends (paper Section 2.2)."""

from slamlib.svr.folds import kfold_indices
from slamlib.svr.kernel import KernelExpansion

__all__ = ["kfold_indices", "KernelExpansion"]
