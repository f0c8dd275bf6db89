"""cfrec: learned factor models and SVD-KNN baselines for movie ratings, in PyTorch."""

from cfrec.errors import CfrecError

__version__ = "0.1.0"
__all__ = ["CfrecError", "__version__"]
