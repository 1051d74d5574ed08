"""The typed core of the config loader: every config dataclass is built by :func:`from_dict`.

``from_dict(Schema, layer, ...)`` merges layers over the schema's defaults (a layer is a dict, possibly with
dotted keys such as ``{"text.pooling": "cls"}``, or an instance of the schema). OmegaConf structured configs
give type checks and typo detection; fields declared with :func:`bounded` are refused outside their plausible
range, so a hostile ``config.json`` (``embed_dim: 10000000``) fails with the field named before anything is
allocated. A schema may add sections at load time (``config_sections()``: the pretraining config adds one per
registered method with options). ``loading`` adds YAML files and ``key=value`` overrides on top of it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message says which key."""


BOUNDS = "bounds"  # field metadata key: (lowest, highest) plausible value

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


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    """A field whose value must be one of an enumeration (defined once, next to its meaning)."""
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_size_keys(mapping: Optional[Mapping[str, Any]], key: str, bounds: Mapping[str, Tuple[int, int]]) -> None:
    """Plausible bounds for the size entries of a free-form dict (a Hugging Face config, timm keyword arguments),
    which the schema cannot type; raises ``ValueError`` naming ``key.entry``."""
    for name, (low, high) in bounds.items():
        value = (mapping or {}).get(name)
        items = value if isinstance(value, (list, tuple)) else [value]  # timm's img_size may be (H, W)
        if value is not None and not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                                         for v in items):
            raise ValueError(f"{key}.{name}: {value!r} is not a plausible size ({low}..{high})")


def _message(exc: OmegaConfBaseException) -> str:
    """OmegaConf's first line, led by the full key it concerns."""
    key = getattr(exc, "full_key", None)
    line = str(exc).strip().splitlines()[0]
    return f"{key}: {line}" if key else line
