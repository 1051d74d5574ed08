"""Reading released checkpoints safely and placing their tensors strictly.

Files are read without unpickling Python objects (safetensors, or ``torch.load(weights_only=True)``); the
only object allowed besides tensors and containers is ``argparse.Namespace``, which RETFound's fine-tuned
files carry as ``args`` and which holds plain values. Placement is strict: every tensor of the checkpoint
goes to exactly one parameter of the same shape, or is named on an explicit list of tensors a format
leaves out on purpose (optimiser state, MAE decoder, ...); anything else is an error naming the key.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from ..hub import CheckpointError, load_torch_file

State = Dict[str, torch.Tensor]


def read_checkpoint(path: str | Path) -> Any:
    """The file's content: a dict of tensors (safetensors) or the plain containers of a torch file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: unreadable safetensors file ({type(exc).__name__}: {exc})") from None
    with torch.serialization.safe_globals([argparse.Namespace]):
        return load_torch_file(path)


def tensors_only(state: Any, path: Path, where: str) -> State:
    """``state`` as a flat name -> tensor dict; anything else is reported with its location in the file."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: {where} is not a non-empty dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {where} holds non-tensor entries, e.g. {bad[:3]}")
    return dict(state)


def unwrap(content: Any, path: Path, keys: Sequence[str]) -> Tuple[State, str]:
    """The state dict inside a training container: the first of ``keys`` present, else the file itself."""
    if isinstance(content, dict):
        for key in keys:
            if isinstance(content.get(key), dict):
                return tensors_only(content[key], path, f"[{key!r}]"), key
    return tensors_only(content, path, "the file"), ""


def strip_prefix(state: State, prefix: str) -> State:
    """Remove ``prefix`` (e.g. DDP's ``module.``) from every key that has it."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


@dataclass
class Placement:
    """Which checkpoint tensor went where; ``dropped`` are the tensors a format leaves out on purpose."""

    source: Path
    state: State = field(default_factory=dict)  # our key -> tensor
    origin: Dict[str, str] = field(default_factory=dict)  # our key -> checkpoint key
    dropped: List[str] = field(default_factory=list)

    def put(self, ours: str, tensor: torch.Tensor, theirs: str) -> None:
        if ours in self.state:
            raise CheckpointError(f"{self.source}: {theirs!r} and {self.origin[ours]!r} both map to {ours!r}")
        self.state[ours] = tensor
        self.origin[ours] = theirs


def place(state: State, source: Path, rules: Iterable[Tuple[str, str]],
          dropped: Callable[[str], bool] = lambda key: False, placement: Optional[Placement] = None) -> Placement:
    """Rename by prefix rules ``(theirs, ours)``, first match wins; unmatched keys must be ``dropped``."""
    placement = placement or Placement(source)
    rules = list(rules)
    unplaced = []
    for key, value in state.items():
        for theirs, ours in rules:
            if key == theirs or (theirs.endswith(".") and key.startswith(theirs)):
                placement.put(ours + key[len(theirs):] if theirs.endswith(".") else ours, value, key)
                break
        else:
            if dropped(key):
                placement.dropped.append(key)
            else:
                unplaced.append(key)
    if unplaced:
        raise CheckpointError(f"{source}: {len(unplaced)} tensor(s) of the checkpoint have no place in the model, "
                              f"e.g. {sorted(unplaced)[:5]}: not the layout this format expects")
    return placement


def load_strict(model: torch.nn.Module, placement: Placement, fresh: Iterable[str] = ()) -> None:
    """Load ``placement.state`` into ``model``: every parameter and buffer filled with the same shape, except the
    ``fresh`` ones the official loader also leaves at their initial value (named in the docs)."""
    own = model.state_dict()
    fresh = set(fresh)
    mismatched = [f"{placement.origin.get(k, k)} {tuple(v.shape)} -> {k} {tuple(own[k].shape)}"
                  for k, v in placement.state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise CheckpointError(f"{placement.source}: shapes do not match the architecture: {mismatched[:4]}")
    unexpected = sorted(set(placement.state) - set(own))
    missing = sorted(set(own) - set(placement.state) - fresh)
    if unexpected or missing:
        raise CheckpointError(f"{placement.source}: does not fill the model: tensors without a parameter "
                              f"{[placement.origin[k] for k in unexpected][:5]}, parameters without a tensor "
                              f"{missing[:5]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in placement.state.items()}, strict=False)


def count_layers(state: State, prefix: str) -> int:
    """Number of numbered sub-modules ``prefix{i}.`` (e.g. transformer blocks) in a state dict."""
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in state
               if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    if not indices:
        return 0
    if indices != set(range(max(indices) + 1)):
        raise CheckpointError(f"layers {prefix}N are not numbered 0..{max(indices)}: {sorted(indices)}")
    return max(indices) + 1


def require(state: State, key: str, source: Path) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{source}: no {key!r}: not the layout this format expects")
    return state[key]
