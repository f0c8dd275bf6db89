"""The typed config of every app: one dataclass per model, objective, data source, split,
evaluation, index, run and trainer, registered with Hydra's ConfigStore.

Each dataclass is read from the library code that takes the options, so a default is written
once, there: a model's constructor (``CollaborativeFiltering(rank=64)``), an objective's own
defaults, a split function, a data reader, `cfrec.evaluate.evaluate`, `cfrec.index.HNSWIndex`,
`cfrec.train.TrainConfig`. Only the run's own switches (`RunConfig`, `CompareConfig`,
`AppConfig`) are written here. The yaml files of ``conf/`` are presets over these schemas
(``conf/model/cf_weighted.yaml`` sets only where it differs) and every app composes them the
same way: composition refuses a value of the wrong type naming its full key
(``model.rank=abc``), and `typed` checks a plain mapping (a composed group, or a dict from
Python) against the same schema: unknown keys (``+train.bogus=1``) and wrong types are a
`ConfigError` naming ``train.bogus``. Value ranges are checked by the code that takes them.

| group | schema from |
| --- | --- |
| ``model/<name>`` | the model's constructor (``device`` is the run's; ``w0`` deprecated) |
| ``model/objective/<name>`` | the objective's ``config()`` |
| ``data/<source>`` | the source's reader (``cfrec.data.sources.SOURCES`` lists its keys) |
| ``split/<name>`` | the split function (``kfold`` adds ``fold``) |
| ``eval``, ``index``, ``train`` | `evaluate`, `HNSWIndex`, `TrainConfig` (+ ``resume``) |
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cfrec.data import read_ratings, synthetic
from cfrec.data.sources import SOURCES, load
from cfrec.errors import ConfigError
from cfrec.evaluate import EVAL_OPTIONS, evaluate
from cfrec.experiment import SPLITS, split_defaults
from cfrec.index import HNSWIndex
from cfrec.models.registry import MODELS
from cfrec.objectives import OBJECTIVES
from cfrec.train.config import TrainConfig
from cfrec.tune import TUNABLE

DEPRECATED_MODEL_ARGS = ("w0",)  # +model.w0=0.3 still works (the constructor warns): objective=weighted
SKIPPED_MODEL_ARGS = ("device", *DEPRECATED_MODEL_ARGS)  # device: the run's top-level device


# -- the run's own switches: the only defaults written here -----------------------------------------
@dataclasses.dataclass
class RunConfig:
    """What a run writes besides metrics.json."""

    save_model: bool = True  # model.pt + model.json, loadable by cfrec.load(run_dir)
    build_index: bool = True  # HNSW index over the model's user/item vectors, where it has them
    plots: bool = True  # PNG plots in the run folder
    tensorboard: bool = True  # events under tb/
    progress: bool = True  # progress bars on the console


@dataclasses.dataclass
class CompareConfig:
    """``cfrec-compare``'s own section (its entries are in ``conf/compare.yaml``)."""

    head: int = 1000  # also report accuracy / RMSE on the first `head` test pairs (0: off)
    only: Optional[List[str]] = None  # entry names to run; None runs them all
    save_models: bool = False  # a checkpoint per model under models/<name>/
    models: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class AppConfig:
    """The top level of every app: the groups (chosen by the defaults list) and three keys."""

    data: Any = MISSING
    split: Any = MISSING
    model: Any = MISSING
    train: Any = MISSING
    eval: Any = MISSING
    index: Any = MISSING
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    seed: int = 42  # torch's global RNG only: training draws from train.seed, the split from split.seed
    device: str = "auto"  # auto | cpu | cuda | cuda:N (cfrec.device.resolve_device)
    threads: Any = None  # torch CPU threads (a count, 0 or "all": every CPU); None: $CFREC_THREADS, else 1


@dataclasses.dataclass
class CompareAppConfig(AppConfig):
    compare: CompareConfig = dataclasses.field(default_factory=CompareConfig)


# -- schemas read from the library's signatures ------------------------------------------------------
def config_type(hint: Any) -> Any:
    """The OmegaConf type of an annotation: bool/int/float/str, Optional of one, a list, a dict, or Any."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (bool, int, float, str):
        return hint
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        inner = config_type(kinds[0]) if len(kinds) == 1 else Any
        return Optional[inner] if inner is not Any and len(kinds) < len(args) else inner
    if origin is typing.Literal and all(isinstance(a, str) for a in args):
        return str
    if origin in (list, tuple, collections.abc.Sequence) and args:
        kinds = {config_type(a) for a in args if a is not Ellipsis}
        return List[kinds.pop()] if len(kinds) == 1 else List[Any]
    if origin in (dict, collections.abc.Mapping):
        return Dict[str, Any]
    return Any


def _hints(fn: Callable) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except NameError:  # an annotation only imported for type checkers: those arguments are Any
        return {}


def _field(kind: Any, default: Any) -> tuple[Any, dataclasses.Field]:
    if isinstance(default, (list, tuple, dict)):
        value = list(default) if isinstance(default, tuple) else default
        return kind, dataclasses.field(default_factory=lambda: OmegaConf.to_container(OmegaConf.create(value)))
    return kind, dataclasses.field(default=default)


def schema_of(name: str, fn: Callable, *, keys: Any = None, skip: tuple[str, ...] = (), untyped: tuple[str, ...] = (),
              first: Mapping[str, Any] | None = None, extra: Mapping[str, tuple[Any, Any]] | None = None) -> type:
    """A dataclass of ``fn``'s keyword arguments (only ``keys`` if given, less ``skip``): their
    annotations as types (``untyped``: Any, e.g. options that also take ``auto``) and their
    defaults (MISSING where there is none); ``first``: string fields ahead of them (``name``),
    ``extra``: fields fn does not take, ``{key: (type, default)}``."""
    hints = _hints(fn)
    specs = [(key, str, dataclasses.field(default=value)) for key, value in (first or {}).items()]
    for key, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or key in skip or (keys is not None and key not in keys):
            continue
        kind = Any if key in untyped else config_type(hints.get(key, Any))
        default = MISSING if param.default is param.empty else param.default
        specs.append((key, *_field(kind, default)))
    for key, (kind, default) in (extra or {}).items():
        specs.append((key, *_field(kind, default)))
    return dataclasses.make_dataclass(name, specs)


def _objective_schema(name: str) -> type:
    """An objective's options (its ``config()``: name first, then each option's default)."""
    specs = []
    for key, value in OBJECTIVES[name]().config().items():
        kind = Any if f"objective.{key}" in TUNABLE else config_type(type(value))
        specs.append((key, *_field(kind, value)))
    return dataclasses.make_dataclass(f"{name.title()}ObjectiveConfig", specs)


def _data_schemas() -> dict[str, type]:
    """One per data source: its keys those of the registry, its defaults those of its reader."""
    readers: dict[str, Callable] = {"csv": read_ratings, "synthetic": synthetic}  # the releases: `load`
    required = {"movielens": "root", "csv": "path"}  # a folder, a file: no default
    schemas = {}
    for name, source in SOURCES.items():
        extra = {required[name]: (str, MISSING)} if name in required else {}
        schemas[name] = schema_of(f"Data_{name}", readers.get(name, load), keys=source.keys - set(extra),
                                  first={"name": name}, extra=extra, untyped=("columns",))
    return schemas


def _split_schema(name: str) -> type:
    extra = {"fold": (int, split_defaults(name)["fold"])} if name == "kfold" else {}  # the test fold
    return schema_of(f"Split_{name}", SPLITS[name], skip=("ratings",), first={"name": name}, extra=extra)


TrainSection = schema_of("TrainSection", TrainConfig, skip=("device",), untyped=("threads",),  # threads: also "all"
                         extra={"resume": (Optional[str], None)})
"""The ``train`` group: `TrainConfig` (its device is the run's top-level ``device``) and ``resume``."""
EvalConfig = schema_of("EvalConfig", evaluate, keys=EVAL_OPTIONS)
IndexConfig = schema_of("IndexConfig", HNSWIndex)
MODEL_SCHEMAS = {name: schema_of(f"{cls.__name__}Config", cls, skip=SKIPPED_MODEL_ARGS, first={"name": name},
                                 untyped=tuple(k for k in TUNABLE if "." not in k))
                 for name, cls in MODELS.items()}
OBJECTIVE_SCHEMAS = {name: _objective_schema(name) for name in OBJECTIVES}
DATA_SCHEMAS = _data_schemas()
SPLIT_SCHEMAS = {name: _split_schema(name) for name in SPLITS}
GROUP_SCHEMAS = {"train": TrainSection, "eval": EvalConfig, "index": IndexConfig, "run": RunConfig,
                 "compare": CompareConfig}


def store() -> None:
    """Register every schema with Hydra's ConfigStore: ``schema/<group>/<name>``, which the presets
    of ``conf/`` name first in their defaults list, and ``base_config`` / ``base_compare``."""
    from hydra.core.config_store import ConfigStore  # noqa: PLC0415 (Hydra only for the apps)

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=AppConfig)
    cs.store(name="base_compare", node=CompareAppConfig)
    for group, schemas in (("model", MODEL_SCHEMAS), ("model/objective", OBJECTIVE_SCHEMAS), ("data", DATA_SCHEMAS),
                           ("split", SPLIT_SCHEMAS)):
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    for group in ("train", "eval", "index"):
        cs.store(group=f"schema/{group}", name="default", node=GROUP_SCHEMAS[group])


# -- checking a plain mapping against its schema -----------------------------------------------------
def schema_for(group: str, section: Mapping[str, Any]) -> type | None:
    """The schema of a group's section (by its ``name`` where the group has several); None for an
    unknown name (the registry that reads the name says which are known)."""
    if group in GROUP_SCHEMAS:
        return GROUP_SCHEMAS[group]
    table = {"model": MODEL_SCHEMAS, "data": DATA_SCHEMAS, "split": SPLIT_SCHEMAS, "objective": OBJECTIVE_SCHEMAS}
    return table[group].get(str(section.get("name")))


def _merged(key: str, schema: type, values: Mapping[str, Any] | None) -> Any:
    """``values`` over ``schema``'s defaults (an OmegaConf node); an unknown key or a value of the
    wrong type is a `ConfigError` naming ``key.<option>``."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), dict(values or {}))
    except OmegaConfBaseException as err:
        full_key = getattr(err, "full_key", None)
        where = ".".join(part for part in (key, full_key) if part) or "config"
        message = str(err).split("\n")[0]
        if "not in" in message or "Key '" in message:
            message = f"unknown option; options: {', '.join(f.name for f in dataclasses.fields(schema))}"
        raise ConfigError(where, message) from None


def typed(key: str, schema: type, values: Mapping[str, Any] | None) -> Any:
    """``values`` over ``schema``'s defaults as a schema instance (`_merged` checks them)."""
    return OmegaConf.to_object(_merged(key, schema, values))


def _current(group: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``values`` without the deprecated model arguments, which pass the schema unchecked."""
    skip = DEPRECATED_MODEL_ARGS if group == "model" else ()
    return {k: v for k, v in (values or {}).items() if k not in skip}


def check_section(key: str, group: str, values: Mapping[str, Any] | None) -> None:
    """``values`` against the schema of ``group`` (by the section's ``name`` where the group has several)."""
    schema = schema_for(group, values or {})
    if schema is not None:
        _merged(key, schema, _current(group, values))


GROUPS = ("data", "split", "model", "train", "eval", "index")


def complete(cfg: Mapping[str, Any], app: type | None = None) -> dict[str, Any]:
    """``cfg`` as plain containers with every default of its schemas filled in (a Python caller may
    leave out keys, or the train, eval, index and run sections), each section checked by `_merged`:
    the apps read options from it directly, never with a default of their own."""
    app = app or (CompareAppConfig if "compare" in cfg else AppConfig)  # (check_config names the app)
    top = {k: v for k, v in cfg.items() if k not in GROUPS and k != "hparams_search"}
    out = OmegaConf.to_container(_merged("", app, top))
    for group in GROUPS:
        values = cfg.get(group)
        schema = schema_for(group, values or {})
        if schema is None:  # an unknown name: the registry that reads it says which are known
            out[group] = dict(values or {})
        else:
            deprecated = {k: v for k, v in (values or {}).items() if k not in _current(group, values)}
            out[group] = {**OmegaConf.to_container(_merged(group, schema, _current(group, values))), **deprecated}
    return out


def _compose(key: str, config_name: str | None, overrides: list[str]) -> Any:
    """A config composed by Hydra's compose API, as every app composes it (inside an app, with its
    Hydra; else with cfrec.conf); a preset that does not exist is a `ConfigError` naming ``key``."""
    from hydra import compose, initialize_config_module  # noqa: PLC0415 (Hydra only for the apps)
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415
    from hydra.errors import MissingConfigException  # noqa: PLC0415

    try:
        if GlobalHydra.instance().is_initialized():  # inside an app
            return compose(config_name, overrides=overrides)
        with initialize_config_module("cfrec.conf", version_base="1.3"):
            return compose(config_name, overrides=overrides)
    except MissingConfigException:
        raise ConfigError(key, f"no such preset ({' '.join(overrides)}; conf/)") from None


def preset(group: str, name: Any, key: str | None = None) -> dict[str, Any]:
    """The section ``<group>=<name>`` composes to (schema, preset and its own defaults list); an
    unknown preset is a `ConfigError` naming ``key`` (default: ``group``)."""
    cfg = _compose(key or group, None, [f"+{group}={name}"])
    return OmegaConf.to_container(OmegaConf.select(cfg, group.replace("/", ".")))


def model_preset(name: Any, key: str = "model") -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ``model`` section ``model=<name>`` composes to, the ``train`` keys that preset changes:
    a model preset may choose a train preset, ``override /train@_global_.train: als``)."""
    chosen = _compose(key, "config", [f"model={name}"])
    default = OmegaConf.to_container(_compose(key, "config", ["train=default"]).train)
    train = {k: v for k, v in OmegaConf.to_container(chosen.train).items() if default.get(k) != v}
    return OmegaConf.to_container(chosen.model), train
