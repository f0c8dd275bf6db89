"""Every option of a run checked before any data is read, and against the data before any fit.

`check_config` walks every section of an app's config (unknown keys refused, values typed and
bounded) and raises a `ConfigError` naming the full key (``train.lr``, ``index.M``);
`check_against_data` then checks what depends on the data (an empty test set, ``eval.ks``
beyond the catalog, ``eval.like_threshold`` above the rating scale, a dense layout too big for
memory) before any model is fitted.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

from cfrec.data import Split
from cfrec.errors import ConfigError
from cfrec.index import HNSWIndex
from cfrec.train.config import TrainConfig
from cfrec.validation import check_choice, check_int, check_number

log = logging.getLogger(__name__)

TOP_KEYS = {"data", "split", "model", "train", "eval", "index", "seed", "device", "run", "threads", "hparams_search"}
RUN_KEYS = ("save_model", "build_index", "plots", "tensorboard", "progress")
EVAL_KEYS = ("ks", "like_threshold", "tolerance", "limit", "ranking", "memory_budget_mb")
COMPARE_KEYS = ("head", "only", "save_models", "models")
SPLIT_KEYS = {
    "per_user": ("test_ratio", "min_ratings", "seed", "method"),
    "random": ("test_ratio", "seed"),
    "temporal": ("n_last", "min_ratings"),
    "kfold": ("n_folds", "fold", "seed", "min_ratings"),
    "none": (),  # no test set: fitted on every rating, nothing evaluated
}
SYNTHETIC_INTS = {"n_users": 1, "n_items": 1, "n_ratings": 1, "rank": 1, "seed": 0}
SYNTHETIC_MIN_RATINGS = 5  # cfrec.data.synthetic gives every user at least this many ratings
DENSE_LIMIT_BYTES = 4 << 30
"""``train.layout=dense`` holds Y and R (users × movies × 4 bytes each): refused above 4 GiB."""


def known_keys(section: Mapping[str, Any], allowed, key: str) -> None:
    """Refuse keys of ``section`` outside ``allowed``, naming the first as ``key.option``."""
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}" if key else unknown[0],
                          f"unknown option; options: {', '.join(sorted(allowed))}")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")


def check_config(cfg: Mapping[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Every section of ``cfg`` (``extra``: top-level keys an app adds, e.g. ``compare``)."""
    known_keys(cfg, TOP_KEYS | set(extra), "")
    check_int("seed", cfg.get("seed", 42), 0)
    from cfrec.threads import resolve_threads  # noqa: PLC0415

    resolve_threads(cfg.get("threads"), "threads")
    from cfrec.experiment import check_data_source, resolve_device  # noqa: PLC0415 (moving module)

    resolve_device(str(cfg.get("device", "auto")))
    check_run(cfg.get("run") or {})
    check_model_types(cfg["model"])
    check_data_source(cfg["data"])
    check_data_values(cfg["data"])
    check_split(cfg["split"])
    check_eval(cfg["eval"])
    check_index(cfg.get("index") or {})
    check_train(cfg.get("train") or {})


def check_type(key: str, value: Any, annotation: str, default: Any) -> None:
    """``value`` of the kind an argument's annotation (or its default) names: bool, int, float, str."""
    if value is None and ("None" in annotation or default is None):
        return
    kinds = [k for k in ("bool", "int", "float", "str") if k in annotation.replace("Literal", "")]
    if not kinds and default is not None:
        kinds = [type(default).__name__]
    if not kinds or any(k not in ("bool", "int", "float", "str") for k in kinds) or "Any" in annotation:
        return  # an argument of another kind (a preset or a dict, a matrix): the model checks it
    ok = (("bool" in kinds and isinstance(value, bool))
          or ("int" in kinds and isinstance(value, int) and not isinstance(value, bool))
          or ("float" in kinds and isinstance(value, (int, float)) and not isinstance(value, bool))
          or ("str" in kinds and isinstance(value, str)))
    if not ok:
        raise ConfigError(key, f"must be {' or '.join(kinds)}{' or null' if 'None' in annotation else ''}, got {value!r}")


def check_model_types(section: Mapping[str, Any], key: str = "model") -> None:
    """Each option of a ``model`` section of the kind its constructor argument takes."""
    import inspect

    from cfrec.models.registry import MODELS

    cls = MODELS.get(str(section.get("name")))
    if cls is None:
        return  # the registry names the unknown model
    params = inspect.signature(cls).parameters
    from cfrec.tune import AUTO

    for option, value in section.items():
        if option in params and value != AUTO:  # auto: chosen on validation (cfrec.tune)
            param = params[option]
            check_type(f"{key}.{option}", value, str(param.annotation), param.default)


def check_run(section: Mapping[str, Any]) -> None:
    known_keys(section, RUN_KEYS, "run")
    for key, value in section.items():
        check_bool(f"run.{key}", value)


def check_data_values(section: Mapping[str, Any]) -> None:
    """Numbers of the synthetic generator (the readers check their own options before reading)."""
    if section.get("name") != "synthetic":
        return
    for key, low in SYNTHETIC_INTS.items():
        if key in section:
            check_int(f"data.{key}", section[key], low)
    for key in ("noise", "step"):
        if key in section:
            check_number(f"data.{key}", section[key], 0.0)
    users, items, n = (section.get(key) for key in ("n_users", "n_items", "n_ratings"))
    if None not in (users, items, n):
        if n > users * items:
            raise ConfigError("data.n_ratings", f"{n} exceeds the {users} × {items} possible pairs")
        if SYNTHETIC_MIN_RATINGS * users > n:
            raise ConfigError("data.n_ratings", f"{n} is fewer than {SYNTHETIC_MIN_RATINGS} per user "
                                                f"(data.n_users={users})")
        if items < SYNTHETIC_MIN_RATINGS:
            raise ConfigError("data.n_items", f"must be at least {SYNTHETIC_MIN_RATINGS}, got {items}")


def check_split(section: Mapping[str, Any]) -> None:
    """Keys and values of a ``split`` section (``conf/split/``)."""
    name = section.get("name")
    if name not in SPLIT_KEYS:
        raise ConfigError("split.name", f"unknown split {name!r}; known: {', '.join(SPLIT_KEYS)}")
    options = {k: v for k, v in section.items() if k != "name"}
    known_keys(options, SPLIT_KEYS[name], "split")
    if "test_ratio" in options:
        ratio = options["test_ratio"]
        check_number("split.test_ratio", ratio, 0.0)
        if not 0 < ratio < 1:
            raise ConfigError("split.test_ratio", f"must lie in (0, 1), got {ratio!r}")
    for key, low in (("min_ratings", 1), ("seed", 0), ("n_last", 1), ("n_folds", 2)):
        if key in options:
            check_int(f"split.{key}", options[key], low)
    if "method" in options:
        check_choice("split.method", options["method"], ("reference", "vectorized"))
    if name == "kfold":
        fold, n_folds = options.get("fold", 0), options.get("n_folds", 5)
        check_int("split.fold", fold, 0)
        if fold >= n_folds:
            raise ConfigError("split.fold", f"must lie in 0..split.n_folds-1 = 0..{n_folds - 1}, got {fold}")


def check_eval(section: Mapping[str, Any]) -> None:
    """Evaluation options that cannot work, named before anything runs."""
    known_keys(section, EVAL_KEYS, "eval")
    ks = section.get("ks", [10])
    if not isinstance(ks, (list, tuple)) or not ks:
        raise ConfigError("eval.ks", f"must be a non-empty list of positive integers, got {ks!r}")
    for k in ks:
        check_int("eval.ks", k, 1)
    for key in ("like_threshold", "tolerance", "memory_budget_mb"):
        value = section.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"eval.{key}", f"must be a number, got {value!r}")
    if float(section.get("tolerance", 0.5)) <= 0:
        raise ConfigError("eval.tolerance", f"must be positive, got {section['tolerance']}")
    if float(section.get("memory_budget_mb", 256)) <= 0:
        raise ConfigError("eval.memory_budget_mb", f"must be a positive number of MiB, got {section['memory_budget_mb']}")
    if section.get("limit") is not None:
        check_int("eval.limit", section["limit"], 1)
    if "ranking" in section:
        check_bool("eval.ranking", section["ranking"])


def check_index(section: Mapping[str, Any]) -> None:
    """The HNSW index options, by building the (empty) index object."""
    import inspect

    known_keys(section, inspect.signature(HNSWIndex).parameters, "index")
    try:
        HNSWIndex(**section)
    except ConfigError as err:
        raise err.under("index") from None


def check_train(section: Mapping[str, Any]) -> None:
    """The ``train`` section as `TrainConfig` reads it, each error named ``train.<key>``."""
    options = {k: v for k, v in section.items() if k != "resume"}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    known_keys(options, set(fields) - {"device"}, "train")
    for key, value in options.items():
        kind = str(fields[key].type)
        if value is None and "None" in kind:
            continue
        if "bool" in kind:
            ok = isinstance(value, bool)
        elif "float" in kind:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif "int" in kind:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ConfigError(f"train.{key}", f"must be of type {kind}, got {value!r}")
    if isinstance(options.get("seed"), int):
        check_int("train.seed", options["seed"], 0)
    try:
        TrainConfig.from_dict({**options, "device": "cpu"})
    except ConfigError as err:
        raise err.under("train") from None
    resume = section.get("resume")
    if resume is not None and not (Path(str(resume)) / "train_state.pt").is_file():
        raise ConfigError("train.resume", f"{resume} holds no train_state.pt to resume from")


def check_compare(section: Mapping[str, Any]) -> None:
    known_keys(section, COMPARE_KEYS, "compare")
    check_int("compare.head", section.get("head") or 0, 0)
    check_bool("compare.save_models", section.get("save_models", False))
    only = section.get("only")
    if only is not None and not isinstance(only, (list, tuple)):
        raise ConfigError("compare.only", f"must be a list of entry names or null, got {only!r}")


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
    k_max = max(section.get("ks", [10]))
    if k_max > train.n_items:
        raise ConfigError("eval.ks", f"{k_max} is more than the {train.n_items} movies of the data")
    top = train.scale[1] if train.scale else float(max(train.values.max(), test.values.max()))
    threshold = float(section.get("like_threshold", 4.0))
    if section.get("ranking", True) and threshold > top:
        raise ConfigError("eval.like_threshold", f"{threshold:g} is above the highest rating ({top:g}): no test "
                                                 "rating would count as liked and every ranking metric would be 0")
    layout = (cfg.get("train") or {}).get("layout", "auto")
    needed = train.n_users * train.n_items * 8
    if learned and layout == "dense" and needed > DENSE_LIMIT_BYTES:
        raise ConfigError("train.layout", f"dense needs {needed / 2**30:.1f} GiB for {train.n_users} users × "
                                          f"{train.n_items} movies (limit {DENSE_LIMIT_BYTES >> 30} GiB): use "
                                          "train.layout=index or auto")
