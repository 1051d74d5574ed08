"""Text tower: a Hugging Face encoder (``AutoModel``), a pooler and a projection head."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from ..config import TextCfg
from ..hub import require_safe_weights
from ..runtime.sources import has_weights, load_from_hf
from .heads import ProjectionHead


def _without_pooler(factory, *args, **kwargs):
    """BERT's pooler is never used by our poolers; leaving it out keeps DDP free of unused parameters."""
    try:
        return factory(*args, add_pooling_layer=False, **kwargs)
    except TypeError:  # architectures without a pooler argument
        return factory(*args, **kwargs)


def build_hf_text_model(cfg: TextCfg, vocab_size: Optional[int] = None) -> nn.Module:
    """Build the encoder from (in order): a saved full config, a pretrained name, a name's config, or overrides."""
    from transformers.utils import logging as hf_logging

    # The pooler we leave out shows up as "unexpected keys" in transformers' load report; keep the console clean.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return _build_hf_text_model(cfg, vocab_size)
    finally:
        hf_logging.set_verbosity(verbosity)


def _build_hf_text_model(cfg: TextCfg, vocab_size: Optional[int]) -> nn.Module:
    from transformers import AutoConfig, AutoModel, BertConfig

    overrides: Dict[str, Any] = dict(cfg.config_overrides)
    if cfg.hf_config is not None:  # a saved model: architecture known, weights come from model.safetensors
        config = AutoConfig.for_model(**cfg.hf_config)
        return _without_pooler(AutoModel.from_config, config)
    if cfg.hf_model_name is not None:
        name = cfg.hf_model_name
        if cfg.pretrained:
            if overrides:
                raise ValueError(
                    f"model.text.config_overrides ({', '.join(sorted(overrides))}) cannot change the pretrained "
                    f"encoder model.text.hf_model_name={name}: its architecture comes from there. To use a trained "
                    f"folder as the text tower of a config-built model (model=tiny), pass model.text.tower_dir={name} "
                    f"instead; for a randomly initialised encoder built from the overrides, model.text.pretrained=false")
            require_safe_weights(name)
            encoder = load_from_hf(lambda src: _without_pooler(AutoModel.from_pretrained, src), name,
                                   "text model (model.text.hf_model_name)")
            if vocab_size is not None and vocab_size > encoder.config.vocab_size:
                raise ValueError(
                    f"the tokenizer ({cfg.hf_tokenizer_name}) has {vocab_size} tokens but the encoder {name} embeds "
                    f"{encoder.config.vocab_size}: use the encoder's own tokenizer (model.text.tower_dir={name} "
                    f"does, for a trained folder)")
            return encoder
        if has_weights(name):  # e.g. a stage-0 text_model folder: building from its config alone would drop them
            raise ValueError(
                f"model.text.hf_model_name={name} is a folder with trained weights, but model.text.pretrained=false "
                f"builds a randomly initialised text tower from its config only. To use the folder as the text "
                f"tower (its architecture, weights and tokenizer), pass model.text.tower_dir={name} instead")
        config = load_from_hf(AutoConfig.from_pretrained, name, "text model config (model.text.hf_model_name)")
        for key, value in overrides.items():
            setattr(config, key, value)
    else:
        config = BertConfig(**overrides)
    if vocab_size is not None:
        config.vocab_size = vocab_size
    return _without_pooler(AutoModel.from_config, config)


_POOLED_CACHE_SIZE = 200_000  # texts; pooled features of a locked encoder kept for re-use (see TextTower.pool)


class TextTower(nn.Module):
    def __init__(self, cfg: TextCfg, embed_dim: int, pad_token_id: int, vocab_size: Optional[int] = None,
                 projection_bias: bool = False):
        super().__init__()
        self.pooling = cfg.pooling
        self.pad_token_id = pad_token_id
        self.transformer = build_hf_text_model(cfg, vocab_size)
        self.width = self.transformer.config.hidden_size
        bias = projection_bias if cfg.projection_bias is None else cfg.projection_bias
        self.head = ProjectionHead(self.width, embed_dim, bias=bias, kind=cfg.projection,
                                   prenorm=cfg.projection_prenorm)
        self._pooled_cache: Optional[Dict[tuple, torch.Tensor]] = None  # while fully locked: see pool()
        self._cached_weights_version = -1

    def attention_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return (input_ids != self.pad_token_id).long()

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Last hidden states B×L×W (used by MLM heads and poolers)."""
        return self.transformer(input_ids=input_ids, attention_mask=self.attention_mask(input_ids)).last_hidden_state

    def pool(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self._pooled_cache is not None and not input_ids.is_cuda:
            return self._pool_through_cache(input_ids)
        return self._pool(input_ids)

    def _pool_through_cache(self, input_ids: torch.Tensor) -> torch.Tensor:
        """A fully locked encoder (eval mode, no gradients) is a fixed function of the text: training re-reads
        the same prompts and captions every epoch, so each text's pooled features are computed once. Keyed by
        the ids without padding (masked pooling ignores it; ``flair_compat`` averages over the padding too, so
        there the whole row is the key). On CUDA this is skipped: the key would need the ids back on the host
        every step."""
        # any in-place change of the encoder's weights (load_state_dict, a momentum update) bumps their version
        version = sum(p._version for p in self.transformer.parameters())
        if version != self._cached_weights_version:
            self._pooled_cache.clear()
            self._cached_weights_version = version
        lengths = (self.attention_mask(input_ids).sum(1).tolist() if self.pooling != "flair_compat"
                   else [input_ids.shape[1]] * input_ids.shape[0])
        keys = [tuple(row[:n]) for row, n in zip(input_ids.tolist(), lengths)]
        missing = [i for i, k in enumerate(keys) if k not in self._pooled_cache]
        if missing:
            with torch.no_grad():
                fresh = self._pool(input_ids[missing])
            if len(self._pooled_cache) + len(missing) > _POOLED_CACHE_SIZE:
                self._pooled_cache.clear()
            for i, row in zip(missing, fresh):
                self._pooled_cache[keys[i]] = row
        return torch.stack([self._pooled_cache[k] for k in keys])

    def _pool(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = self.attention_mask(input_ids)
        if self.pooling == "flair_compat":
            # FLAIR: mean over ALL positions (padding included) of hidden states 1, 2 and last,
            # then mean over the three layers. Kept for loading/reproducing FLAIR checkpoints.
            out = self.transformer(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            hs = out.hidden_states
            return torch.stack([hs[1], hs[2], hs[-1]]).mean(dim=2).mean(dim=0)
        last = self.transformer(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return last[:, 0]
        m = mask.unsqueeze(-1).to(last.dtype)  # masked mean: independent of the batch's padding
        return (last * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, project: bool = True, normalize: bool = True) -> torch.Tensor:
        pooled = self.pool(input_ids)
        return self.head(pooled, normalize=normalize) if project else pooled

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.transformer.gradient_checkpointing_disable()

    def lock(self, unlocked_layers: int = 0) -> None:
        """Freeze embeddings and all but the last `unlocked_layers` encoder layers (open_clip lock_text_tower)."""
        layers = getattr(getattr(self.transformer, "encoder", None), "layer", None)
        if layers is None:
            raise ValueError(f"cannot lock {type(self.transformer).__name__}: no encoder.layer list")
        for p in self.transformer.parameters():
            p.requires_grad_(False)
        if unlocked_layers > 0:
            for layer in layers[-unlocked_layers:]:
                for p in layer.parameters():
                    p.requires_grad_(True)
        # The locked part is a fixed feature extractor (as in LiT): it runs in eval mode, so no dropout
        # noise, and the attention can use the fused kernels (dropout forces the slow path on CPU).
        self._locked = [m for m in self.transformer.modules()
                        if not any(p.requires_grad for p in m.parameters()) and next(m.parameters(), None) is not None]
        self._pooled_cache = {} if unlocked_layers <= 0 else None
        self.train(self.training)

    def train(self, mode: bool = True) -> "TextTower":
        super().train(mode)
        for module in getattr(self, "_locked", ()):
            module.eval()
        return self
