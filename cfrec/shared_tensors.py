"""One copy of a tensor on disk: a nested state refers to the bit-identical tensors of a flat file.

`share_tensors` replaces every tensor of a nested state (dicts, lists, tuples) that equals one
of a flat ``{name: tensor}`` mapping — same dtype, shape and bits — by ``{MARK: name}``;
`resolve_shared` puts copies back. The training state uses it to refer to the final (and best)
parameters that ``model.pt`` already holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cfrec.errors import CheckpointError

MARK = "__cfrec_shared__"
MIN_NUMEL = 64  # scalars and tiny tensors are not worth a reference


def share_tensors(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """``tree`` with each large tensor equal to one of ``tensors`` replaced by ``{MARK: its name}``."""
    by_shape: dict[tuple, list[str]] = {}
    for name, tensor in tensors.items():
        if tensor.numel() >= MIN_NUMEL:
            by_shape.setdefault((tensor.dtype, tuple(tensor.shape)), []).append(name)

    def walk(node: Any) -> Any:
        if isinstance(node, Tensor):
            for name in by_shape.get((node.dtype, tuple(node.shape)), []):
                if torch.equal(node.detach().cpu(), tensors[name]):
                    return {MARK: name}
            return node
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(walk(value) for value in node)
        return node

    return walk(tree)


def resolve_shared(tree: Any, tensors: dict[str, Tensor], path: str | Path) -> Any:
    """Inverse of `share_tensors`: each ``{MARK: name}`` becomes a copy of ``tensors[name]``."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {MARK}:
                name = node[MARK]
                if not isinstance(name, str) or not isinstance(tensors.get(name), Tensor):
                    raise CheckpointError(f"{path}: refers to tensor {name!r}, which the model file lacks")
                return tensors[name].clone()
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(walk(value) for value in node)
        return node

    return walk(tree)
