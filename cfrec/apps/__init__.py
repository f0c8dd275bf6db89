"""Command-line applications (Hydra): cfrec-train, cfrec-compare.

Importing the package registers the config resolvers the apps' configs use:
``${cfrec.rank_zero:VALUE,OTHER}`` is VALUE in a plain run and in rank 0 of a torchrun job,
OTHER in the other ranks (``conf/config.yaml`` keeps them from writing a run folder or log);
``${cfrec.devnull:}`` is the null device.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

from cfrec.train.distributed import launched_rank


def _rank_zero(value: Any, other: Any) -> Any:
    return value if launched_rank() == 0 else other


OmegaConf.register_new_resolver("cfrec.rank_zero", _rank_zero, replace=True)
OmegaConf.register_new_resolver("cfrec.devnull", lambda: os.devnull, replace=True)

from cfrec.apps.schema import store  # noqa: E402 (after the resolvers: the schemas import the library)

store()  # the typed configs every app composes (cfrec.apps.schema)
