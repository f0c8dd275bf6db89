"""cfrec: learned factor models and SVD-KNN baselines for movie ratings, in PyTorch.

``cfrec.load(run_dir)`` returns a trained model that speaks raw MovieLens ids (see
`cfrec.serving`); ``cfrec.data.load(source)`` reads ratings.
"""

from typing import Any

from cfrec.errors import CfrecError

__version__ = "0.1.0"
__all__ = ["CfrecError", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name == "load":  # imported on first use: `import cfrec.data` stays light
        from cfrec.serving import load

        return load
    raise AttributeError(f"module 'cfrec' has no attribute {name!r}")
