"""Config merging at the CLI edge: dataclass defaults <- YAML file(s) <- ``key=value`` overrides.

The one config loader: ``build_config`` (files and overrides) and ``from_dict`` (dicts and instances, in
``schema``) build every typed config dataclass with the same type checks, typo detection (``train.epoch=3``
fails), choices and plausible bounds. Library code only ever sees the resulting dataclasses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Type, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .registry import get_model_config
from .schema import (ConfigError, _message, _to_object, bounded, check_bounds, check_choice, check_size_keys,
                     from_dict, nest_dotted, resolve_schema, to_dict)

__all__ = ["ConfigError", "bounded", "build_config", "check_bounds", "check_choice", "check_size_keys", "from_dict",
           "load_resolved", "nest_dotted", "recipe_dir", "recipe_names", "resolve_config_path", "resolve_schema",
           "save_resolved", "to_dict"]

T = TypeVar("T")


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


def save_resolved(cfg: Any, path: str | Path) -> None:
    """Write the resolved config into the run directory (every run records exactly what it ran)."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def load_resolved(schema: Type[T], path: str | Path) -> T:
    return build_config(schema, [path], has_model=True)
