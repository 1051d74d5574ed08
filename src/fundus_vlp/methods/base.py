"""Training task base class: a method = the shared model + the losses and modules of one recipe.

Like open_clip's ``TrainingTask``, the whole task is what DDP and ``torch.compile`` wrap, so the loop
does not know which objective runs. Every method splits its step into

* ``encode(batch)``: the towers' features of one (micro-)batch, and
* ``compute_losses(features, batch)``: the losses from features of the whole batch,

which lets gradient accumulation keep the negatives of the full batch (a feature cache, as open_clip's
``--accum-freq``): ``forward(batch, cache=..., slot=j, full_batch=...)`` splices the live features of
micro-batch ``j`` into the cached features of all micro-batches (``train/accumulate.py`` drives it).
Parameters used only inside ``compute_losses`` (``loss_side_parameters``: logit scale, revision
attention, caption decoder) then receive the full gradient once per micro-batch.

The main ``Trainer`` runs every method the same way; what a run builds (model, data) and writes (the exported
model, final metrics) comes from the method's hooks: ``setup``, ``samples_in``, ``log_scalars``,
``final_metrics`` and ``export``. Their defaults are those of image-text pretraining; stage 0 (``mlm.py``)
overrides them for a text encoder on a corpus.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from ..config import BugCompatCfg
from ..data.config import DataNeeds
from ..models.clip import FundusCLIP

Features = Dict[str, Tensor]
Batch = Dict[str, Any]


def splice_features(cache: List[Features], live: Features, slot: int) -> Features:
    """The cached features of every micro-batch, with micro-batch `slot` replaced by live (grad) ones."""
    return {k: torch.cat([c[k] for c in cache[:slot]] + [live[k]] + [c[k] for c in cache[slot + 1:]])
            for k in live}


def combine_losses(terms: Dict[str, Tuple[float, Tensor]]) -> Dict[str, Tensor]:
    """``{"loss": Σ weight·term, name: term}`` — parts are logged unweighted; the loop detaches them.

    The parts are not detached here: under ``torch.compile`` (inductor) a total that simplifies to one
    term (``0 + 1.0 * t``) becomes the same graph output as ``t.detach()`` and loses its ``grad_fn``, so
    the first backward fails with "element 0 of tensors does not require grad".
    """
    total = sum(weight * value for weight, value in terms.values())
    return {"loss": total, **{name: value for name, (_, value) in terms.items()}}


class Method(nn.Module):
    """One pretraining recipe. Subclasses set ``name`` and register with :func:`register_method`. A method
    with options declares ``options_class`` (a dataclass defined next to it): the config loader then adds the
    section ``<name>.*`` to the run config, typed and validated, and the method receives that section as
    ``options`` together with the run's ``bug_compat`` switches (never the whole run config)."""

    name = "base"
    options_class: Optional[type] = None  # e.g. KeepFITCfg: `keepfit.lambda_mm=0.5` on the command line
    needs_decoder = False  # the model must carry the caption decoder
    feature_cache = True  # gradient accumulation splices cached features (contrastive negatives of the full batch)
    data = DataNeeds()  # what every batch must carry; data_needs() may refine it from the options

    @classmethod
    def data_needs(cls, options: Any = None) -> DataNeeds:
        """What the data pipeline must provide; decided before the method is built (ViLReF needs the vocab)."""
        return cls.data

    @classmethod
    def build(cls, model: FundusCLIP, options: Any = None, bug_compat: Optional[BugCompatCfg] = None,
              vocab=None) -> "Method":
        """The task for a run; methods that need more than the model and options (the vocabulary) override it."""
        return cls(model, options, bug_compat)

    @classmethod
    def setup(cls, cfg, plan, env, run_dir: Path, pin_memory: bool = False) -> Tuple[nn.Module, Any, "Method"]:
        """The model, training data and task of a run: a dual encoder (``plan.init``: a saved folder or a config)
        on the image-text pipeline. The data object offers ``sampler`` (``set_epoch(epoch, start_batch)``),
        ``loader`` and ``summary``; with ``state_dict``/``load_state_dict`` its random state travels in checkpoints."""
        from ..config import ModelCfg
        from ..data.loader import build_train_data
        from ..factory import create_model

        model = create_model(plan.init)
        if not isinstance(plan.init, ModelCfg):  # a saved release folder (e.g. a FLAIR-style model to continue)
            model.train()
        if cfg.train.lock_text_layers >= 0:
            model.lock_text_tower(cfg.train.lock_text_layers)
        if cfg.train.grad_checkpointing:
            model.set_grad_checkpointing(True)
        data = build_train_data(cfg, model.cfg, model.tokenizer, plan.needs, plan.batches, env.rank, env.world_size,
                                run_dir if env.is_main else None, pin_memory=pin_memory)
        return model, data, cls.build(model, cfg.method_options, cfg.bug_compat, data.vocab)

    @classmethod
    def default_options(cls) -> Any:
        return cls.options_class() if cls.options_class is not None else None

    def __init__(self, model: FundusCLIP, options: Any = None, bug_compat: Optional[BugCompatCfg] = None):
        super().__init__()
        self.model = model
        self.options = options if options is not None else self.default_options()
        self.bug_compat = bug_compat or BugCompatCfg()

    # -- to implement ---------------------------------------------------------------------------
    def encode(self, batch: Batch) -> Features:
        raise NotImplementedError

    def compute_losses(self, feats: Features, batch: Batch) -> Dict[str, Tensor]:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------------
    def forward(self, batch: Batch, cache: Optional[List[Features]] = None, slot: int = 0,
                full_batch: Optional[Batch] = None, encode_only: bool = False) -> Dict[str, Tensor]:
        feats = self.encode(batch)
        if encode_only:
            return feats
        if cache is not None:
            feats = splice_features(cache, feats, slot)
            batch = full_batch
        return self.compute_losses(feats, batch)

    def loss_side_modules(self) -> List[nn.Module]:
        """Modules used only inside ``compute_losses`` (revision attention, caption decoder)."""
        return []

    def loss_side_parameters(self) -> List[nn.Parameter]:
        return [self.model.logit_scale] + [p for m in self.loss_side_modules() for p in m.parameters()]

    @torch.no_grad()
    def after_step(self) -> None:
        """Called once after every optimiser step."""
        self.model.clamp_logit_scale()

    # -- what the training loop asks of a run ---------------------------------------------------------------
    def samples_in(self, batch: Batch) -> int:
        """Samples in one micro-batch (throughput logging)."""
        return batch["main"]["images"].shape[0] + (batch["elite"]["images"].shape[0] if "elite" in batch else 0)

    def log_scalars(self) -> Dict[str, float]:
        """Values logged with every train row besides the losses (one device wait, logging steps only)."""
        return {"logit_scale": float(self.model.scale().detach())}

    def final_metrics(self) -> Dict[str, float]:
        """Scores of the trained task written as a ``val`` metrics row at the end of a run; none by default."""
        return {}

    def export(self, run_dir: Path, steps: int, data_source: str) -> Path:
        """Write the trained model where users load it from; returns the folder."""
        out = run_dir / "model"
        data = "the fundus-vlp demo world" if data_source == "demo" else "user dataframes"
        self.model.save_pretrained(out, card={
            "method": self.name, "data": data,
            "description": f"Pretrained with fundus-vlp method `{self.name}` for {steps} steps.",
        })
        return out

    def encode_pair(self, sub: Batch, prefix: str) -> Features:
        return {f"{prefix}_image": self.model.encode_image(sub["images"]),
                f"{prefix}_text": self.model.encode_text(sub["text"])}


_METHODS: Dict[str, Type[Method]] = {}


def register_method(cls: Type[Method]) -> Type[Method]:
    """Class decorator: make a method selectable with ``method=NAME`` (one registry for the whole package)."""
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by {_METHODS[cls.name].__name__}")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> Type[Method]:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(_METHODS)}")
    return _METHODS[name]


def method_names() -> List[str]:
    return list(_METHODS)


def method_options_classes() -> Dict[str, type]:
    """``{name: options dataclass}`` of every registered method with options: the sections of a run config."""
    return {name: cls.options_class for name, cls in _METHODS.items() if cls.options_class is not None}
