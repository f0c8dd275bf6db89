"""Every option of a run checked before any data is read, and against the data before any fit.

`check_config` walks every section of an app's config (unknown keys refused, values typed and
bounded) and raises a `ConfigError` naming the full key (``train.lr``, ``index.M``);
`check_against_data` then checks what depends on the data (an empty test set, ``eval.ks``
beyond the catalog, ``eval.like_threshold`` above the rating scale, a dense layout too big for
memory) before any model is fitted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from cfrec.apps.schema import AppConfig, CompareAppConfig, EvalConfig, check_section, complete, typed
from cfrec.data import Split
from cfrec.data.sources import check_data as check_data_source
from cfrec.device import resolve_device
from cfrec.errors import ConfigError
from cfrec.evaluate import EVAL_OPTIONS as EVAL_KEYS
from cfrec.evaluate import check_options as check_eval_options
from cfrec.experiment import SPLITS
from cfrec.index import HNSWIndex
from cfrec.threads import resolve_threads
from cfrec.train.config import TrainConfig
from cfrec.validation import check_choice, check_int, check_number

log = logging.getLogger(__name__)

DENSE_LIMIT_BYTES = 4 << 30
"""``train.layout=dense`` holds Y and R (users × movies × 4 bytes each): refused above 4 GiB."""


def check_config(cfg: Mapping[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every section of ``cfg`` against its schema (`cfrec.apps.schema`: unknown keys, types),
    then every value; returns ``cfg`` with every default filled in (`complete`). ``extra``:
    ``("compare",)`` for cfrec-compare's own section."""
    cfg = complete(cfg, CompareAppConfig if "compare" in extra else AppConfig)
    objective = cfg["model"].get("objective")
    if isinstance(objective, Mapping):
        check_section("model.objective", "objective", objective)
    check_int("seed", cfg["seed"], 0)
    resolve_threads(cfg["threads"], "threads")
    resolve_device(cfg["device"])
    check_data_source(cfg["data"])
    check_split(cfg["split"])
    check_eval(cfg["eval"])
    check_index(cfg["index"])
    check_train(cfg["train"])
    if "compare" in extra:
        check_int("compare.head", cfg["compare"]["head"], 0)
    return cfg


def check_split(section: Mapping[str, Any]) -> None:
    """Values of a ``split`` section (``conf/split/``) that its split function checks only once it has the data."""
    name = section.get("name")
    if name not in SPLITS:
        raise ConfigError("split.name", f"unknown split {name!r}; known: {', '.join(SPLITS)}")
    if "test_ratio" in section:
        check_number("split.test_ratio", section["test_ratio"], 0, 1, open_low=True, open_high=True)
    for key, low in (("min_ratings", 1), ("seed", 0), ("n_last", 1), ("n_folds", 2), ("fold", 0)):
        if key in section:
            check_int(f"split.{key}", section[key], low)
    if "method" in section:
        check_choice("split.method", section["method"], ("reference", "vectorized"))
    if name == "kfold" and section["fold"] >= section["n_folds"]:
        raise ConfigError("split.fold", f"must lie in 0..split.n_folds-1 = 0..{section['n_folds'] - 1}, "
                                        f"got {section['fold']}")


def check_eval(section: Mapping[str, Any]) -> None:
    """Evaluation options that cannot work, named before anything runs."""
    options = typed("eval", EvalConfig, section)
    try:
        check_eval_options(**{k: getattr(options, k) for k in EVAL_KEYS})
    except ConfigError as err:
        raise err.under("eval") from None


def check_index(section: Mapping[str, Any]) -> None:
    """The HNSW index options, by building the (empty) index object."""
    check_section("index", "index", section)
    try:
        HNSWIndex(**section)
    except ConfigError as err:
        raise err.under("index") from None


def check_train(section: Mapping[str, Any]) -> None:
    """The ``train`` section as `TrainConfig` reads it, each error named ``train.<key>``."""
    check_section("train", "train", section)
    options = {k: v for k, v in section.items() if k != "resume"}
    try:
        TrainConfig.from_dict({**options, "device": "cpu"})
    except ConfigError as err:
        raise err.under("train") from None
    resume = section.get("resume")
    if resume is not None and not (Path(str(resume)) / "train_state.pt").is_file():
        raise ConfigError("train.resume", f"{resume} holds no train_state.pt to resume from")


def check_against_data(cfg: Mapping[str, Any], split: Split, learned: bool) -> None:
    """What depends on the data, before any fit: test set, ks, like threshold, dense layout."""
    train, test = split
    if cfg["split"].get("name") == "none":  # nothing is evaluated: only the training data must exist
        if len(train) == 0:
            raise ConfigError("data", "holds no ratings to fit on")
        return
    if len(train) == 0 or len(test) == 0:
        part = "training" if len(train) == 0 else "test"
        raise ConfigError("split", f"the {part} set is empty ({len(train) + len(test)} ratings of "
                                   f"{train.n_users} users after the {cfg['split']['name']} split): nothing to "
                                   "evaluate on; use more data or another split (e.g. a lower split.min_ratings)")
    section = cfg["eval"]
    k_max = max(section["ks"])
    if k_max > train.n_items:
        raise ConfigError("eval.ks", f"{k_max} is more than the {train.n_items} movies of the data")
    top = train.scale[1] if train.scale else float(max(train.values.max(), test.values.max()))
    threshold = float(section["like_threshold"])
    if section["ranking"] and threshold > top:
        raise ConfigError("eval.like_threshold", f"{threshold:g} is above the highest rating ({top:g}): no test "
                                                 "rating would count as liked and every ranking metric would be 0")
    layout = cfg["train"]["layout"]
    needed = train.n_users * train.n_items * 8
    if learned and layout == "dense" and needed > DENSE_LIMIT_BYTES:
        raise ConfigError("train.layout", f"dense needs {needed / 2**30:.1f} GiB for {train.n_users} users × "
                                          f"{train.n_items} movies (limit {DENSE_LIMIT_BYTES >> 30} GiB): use "
                                          "train.layout=index or auto")
