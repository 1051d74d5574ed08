"""The one config loader: every typed config dataclass is built here, from any mix of layers.

``from_dict(Schema, layer, ...)`` merges layers over the schema's defaults (a layer is a dict, possibly with
dotted keys such as ``{"text.pooling": "cls"}``, or an instance of the schema); ``build_config`` does the same
at the CLI edge with YAML files and ``key=value`` overrides. OmegaConf structured configs give type checks
(``train.epochs=abc`` fails) and typo detection (``train.epoch=3`` fails); fields declared with
:func:`bounded` are refused outside their plausible range, so a hostile ``config.json`` (``embed_dim:
10000000``) fails with the field named before anything is allocated. A schema may add sections at load time
(``config_sections()``: the pretraining config adds one per registered method with options). Library code
only ever sees the resulting dataclasses.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

BOUNDS = "bounds"  # field metadata key: (lowest, highest) plausible value


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message says which key."""


def bounded(default: Any, low: float, high: float) -> Any:
    """A numeric field whose values outside ``[low, high]`` are refused by the loader (implausible sizes)."""
    return dataclasses.field(default=default, metadata={BOUNDS: (low, high)})


def to_dict(obj: Any) -> Dict[str, Any]:
    return dataclasses.asdict(obj)


# -- schemas that grow at load time ------------------------------------------------------------------------

_EXTENDED: Dict[Tuple[type, Tuple[Tuple[str, type], ...]], type] = {}


def resolve_schema(schema: Type[T]) -> Type[T]:
    """`schema` with the sections its ``config_sections()`` adds (a subclass, one per set of sections)."""
    hook = getattr(schema, "config_sections", None)
    if hook is None:
        return schema
    own = {f.name: f.type for f in dataclasses.fields(schema)}
    clash = sorted(name for name, cls in hook().items() if name in own and own[name] is not cls)
    if clash:
        raise ConfigError(f"{schema.__name__}: section(s) {clash} would replace fields of the same name")
    sections = tuple((name, cls) for name, cls in hook().items() if name not in own)
    if not sections:
        return schema
    key = (schema, sections)
    if key not in _EXTENDED:
        _EXTENDED[key] = dataclasses.make_dataclass(
            schema.__name__, [(name, cls, dataclasses.field(default_factory=cls)) for name, cls in sections],
            bases=(schema,), namespace={"__reduce__": _reduce, "__doc__": schema.__doc__, "__module__": schema.__module__})
    return _EXTENDED[key]


def _reduce(self):
    """Pickle a config of an extended schema by value (the generated class has no importable name)."""
    return from_dict, (type(self).__mro__[1], to_dict(self))


# -- building ----------------------------------------------------------------------------------------------

def nest_dotted(data: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"text.context_length": 16}`` -> ``{"text": {"context_length": 16}}`` (nested dicts are merged)."""
    out: Dict[str, Any] = {}
    for key, value in data.items():
        node = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out


def _layer(layer: Any) -> Any:
    if dataclasses.is_dataclass(layer) and not isinstance(layer, type):
        return OmegaConf.structured(layer)
    if isinstance(layer, Mapping) and not OmegaConf.is_config(layer):
        return OmegaConf.create(nest_dotted(layer))
    return layer


def from_dict(schema: Type[T], *layers: Any, where: str = "") -> T:
    """A validated `schema` instance: its defaults <- each layer in turn (dicts, dotted keys, instances).

    Unknown keys, wrong types, values refused by the schema and implausible sizes are a ``ConfigError``
    that names the key (and `where` the layers came from, e.g. a file)."""
    if len(layers) == 1 and isinstance(layers[0], schema):
        return check_bounds(layers[0], where)
    prefix = f"{where}: " if where else ""
    for layer in layers:
        if not isinstance(layer, Mapping) and not dataclasses.is_dataclass(layer) and not OmegaConf.is_config(layer):
            raise ConfigError(f"{prefix}expected a mapping for {schema.__name__}, got {type(layer).__name__}")
    return _to_object(lambda: OmegaConf.merge(OmegaConf.structured(resolve_schema(schema)), *map(_layer, layers)),
                      where)


def _to_object(merged: Any, where: str = "") -> Any:
    """The dataclass of a merged config (or of a callable that merges), errors led by `where` and the key."""
    prefix = f"{where}: " if where else ""
    try:
        obj = OmegaConf.to_object(merged() if callable(merged) else merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(prefix + _message(exc)) from exc
    except (KeyError, ValueError, TypeError) as exc:  # raised by a schema's __post_init__
        raise ConfigError(prefix + (str(exc.args[0]) if exc.args else str(exc))) from exc
    return check_bounds(obj, where)


def check_bounds(obj: Any, where: str = "", path: str = "") -> Any:
    """Refuse values outside the plausible range of every :func:`bounded` field (nested configs included)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{path}{f.name}"
        low_high = f.metadata.get(BOUNDS)
        if low_high is not None and isinstance(value, (int, float)) and not low_high[0] <= value <= low_high[1]:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}{key}: {value} is outside the plausible range {low_high[0]}..{low_high[1]}")
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if dataclasses.is_dataclass(item):
                check_bounds(item, where, f"{key}.{i}." if isinstance(value, list) else f"{key}.")
    return obj


def check_size_keys(mapping: Optional[Mapping[str, Any]], key: str, bounds: Mapping[str, Tuple[int, int]]) -> None:
    """Plausible bounds for the size entries of a free-form dict (a Hugging Face config, timm keyword arguments),
    which the schema cannot type; raises ``ValueError`` naming ``key.entry``."""
    for name, (low, high) in bounds.items():
        value = (mapping or {}).get(name)
        items = value if isinstance(value, (list, tuple)) else [value]  # timm's img_size may be (H, W)
        if value is not None and not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                                         for v in items):
            raise ValueError(f"{key}.{name}: {value!r} is not a plausible size ({low}..{high})")


# -- the CLI edge: YAML files and key=value overrides ------------------------------------------------------

RECIPE_PREFIX = "recipe:"


def recipe_dir() -> Path:
    """The packaged example recipes (``src/fundus_vlp/configs/recipes``), installed with the package."""
    return Path(__file__).resolve().parents[1] / "configs" / "recipes"


def recipe_names() -> List[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def resolve_config_path(spec: str | Path) -> Path:
    """A YAML path, or ``recipe:NAME`` for a packaged recipe (works from any folder and any install)."""
    text = str(spec)
    if not text.startswith(RECIPE_PREFIX):
        return Path(spec)
    name = text[len(RECIPE_PREFIX):].removesuffix(".yaml")
    path = recipe_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; packaged recipes: {', '.join(recipe_names())} "
                          f"(in {recipe_dir()})")
    return path


def _load_yaml(path: str | Path):
    path = resolve_config_path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc


def _dotlist(overrides: Sequence[str], has_model: bool):
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    if has_model:  # `model=NAME` is shorthand for `model.name=NAME` (and must not clobber other model.* overrides)
        overrides = [f"model.name={o[len('model='):]}" if o.startswith("model=") else o for o in overrides]
    return OmegaConf.from_dotlist(list(overrides))


def _is_indexed(override: str) -> bool:
    """``data.public.0.root=...``: a key that addresses a list item by index."""
    return any(part.isdigit() for part in override.split("=", 1)[0].split("."))


def _apply_indexed(merged, overrides: Sequence[str]) -> None:
    """Set list items by index on the merged config (a dotlist layer would turn the list into a dict and
    fail to merge). The item must exist; the error names the key and the list's length."""
    for override in overrides:
        key, text = override.split("=", 1)
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]))["value"]
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not part.isdigit():
                continue
            parent = ".".join(parts[:i])
            node = OmegaConf.select(merged, parent, default=None) if parent else merged
            if not OmegaConf.is_list(node):
                raise ConfigError(f"{key}: {parent or 'the config'} is not a list, so it has no item {part}")
            if int(part) >= len(node):
                raise ConfigError(f"{key}: {parent} has {len(node)} item(s), so there is no item {part}; set the "
                                  f"whole list first, e.g. {parent}=[{{...}}] (in a config file or on the command line)")
        try:
            OmegaConf.update(merged, key, value, merge=False)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{key}: {str(exc).strip().splitlines()[0]}") from exc


def _model_name(layers: List[Any]) -> Optional[str]:
    """The `model.name` chosen by the files/overrides (the last layer that sets it), if any."""
    names = [OmegaConf.select(layer, "model.name", default=None) for layer in layers]
    return next((n for n in reversed(names) if n is not None), None)


def _expand_model_shorthand(layer) -> Any:
    """Allow ``model=rn18-minilm`` as a shorthand for ``model.name=rn18-minilm``."""
    node = OmegaConf.select(layer, "model", default=None)
    if isinstance(node, str):
        container = OmegaConf.to_container(layer)
        container["model"] = {"name": node}
        return OmegaConf.create(container)
    return layer


def build_config(schema: Type[T], config_files: Sequence[str | Path] = (), overrides: Sequence[str] = (),
                 has_model: bool = False, defaults: Optional[dict] = None) -> T:
    """Merge and validate; returns a real dataclass instance of `schema`.

    With ``has_model`` (schemas whose ``model`` is a ``ModelCfg``), the architecture chosen by ``model.name``
    (or ``model=NAME``) is taken from the registry first, so files and overrides only state what differs
    from it. Elsewhere ``model`` is a plain field (e.g. a model folder for ``eval``).
    """
    from .registry import get_model_config  # the registry builds its entries with this loader

    indexed = [o for o in overrides if "=" in o and _is_indexed(o)]
    overrides = [o for o in overrides if o not in indexed]
    try:
        layers = [OmegaConf.create(defaults or {})] + [_load_yaml(f) for f in config_files]
        layers.append(_dotlist(overrides, has_model))
        base = OmegaConf.structured(resolve_schema(schema))
        if has_model:
            layers = [_expand_model_shorthand(layer) for layer in layers]
            name = _model_name(layers)
            if name:
                base = OmegaConf.merge(base, {"model": to_dict(get_model_config(name))})
        merged = OmegaConf.merge(base, *layers)
        _apply_indexed(merged, indexed)
    except OmegaConfBaseException as exc:
        raise ConfigError(_message(exc)) from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(str(exc.args[0]) if exc.args else str(exc)) from exc
    return _to_object(merged)


def _message(exc: OmegaConfBaseException) -> str:
    """OmegaConf's first line, led by the full key it concerns."""
    key = getattr(exc, "full_key", None)
    line = str(exc).strip().splitlines()[0]
    return f"{key}: {line}" if key else line


def save_resolved(cfg: Any, path: str | Path) -> None:
    """Write the resolved config into the run directory (every run records exactly what it ran)."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def load_resolved(schema: Type[T], path: str | Path) -> T:
    return build_config(schema, [path], has_model=True)
