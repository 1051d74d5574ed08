"""Segmentation transfer: a segmentation-models-pytorch decoder on the image tower's timm trunk.

The segmenter is ``smp.Unet`` / ``smp.FPN`` (hierarchical CNN trunks) or ``smp.DPT`` (ViT trunks) built with
the ``tu-<timm name>`` encoder of the tower's architecture; its encoder then receives weights from one of:

* ``pretrained``: the fundus-vlp model's image trunk (every trunk tensor must find its place, or it fails);
* ``random``: timm's seeded random initialisation (the offline baseline);
* ``imagenet``: a local timm checkpoint file (``segmentation.imagenet_checkpoint``, .safetensors or .pth;
  nothing is downloaded), loaded into a fresh trunk and transferred as above.

``finetune``: ``frozen`` (encoder fixed, BatchNorm statistics included; only the decoder and head train),
``last_block`` (the trunk's last stage trains as well) or ``full``.

Training, the loss and epoch selection are in ``segmentation_train.py``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .config import SEG_ARCHITECTURES as ARCHITECTURES
from .config import TOWER_FINETUNE
from .config import SEG_INITS as INITS
from ..models.vision import last_stage_name
from ..runtime.extras import require

_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "fc_norm.")  # classifier parts: not used to segment


class WeightTransferError(ValueError):
    """Trunk weights that do not fit the segmentation encoder; the message lists the tensors."""


def _is_vit(trunk: nn.Module) -> bool:
    return hasattr(trunk, "patch_embed") and hasattr(trunk, "blocks")


def build_segmenter(vision_cfg, n_classes: int, architecture: str = "auto", size: Optional[int] = None,
                    decoder_channels: Optional[Sequence[int]] = None) -> nn.Module:
    """An smp model whose encoder is the tower's timm architecture (random weights). ``decoder_channels``:
    5 UNet stage widths, or DPT's 4 reassemble widths + fusion width (default: :func:`dpt_widths`)."""
    import timm

    smp = require("segmentation_models_pytorch", "seg", "segmentation evaluation")

    if architecture not in ARCHITECTURES:
        raise ValueError(f"segmentation.architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    name, kwargs = vision_cfg.timm_model_name, dict(vision_cfg.timm_kwargs)
    probe = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if architecture == "auto":
        architecture = "dpt" if _is_vit(probe) else "unet"
    if architecture == "dpt":
        widths = [int(c) for c in decoder_channels] if decoder_channels else dpt_widths(probe.num_features)
        if size is not None:
            kwargs["img_size"] = size
        return smp.DPT(encoder_name=f"tu-{name}", encoder_weights=None, classes=n_classes, dynamic_img_size=True,
                       decoder_intermediate_channels=tuple(widths[:4]), decoder_fusion_channels=widths[4], **kwargs)
    cls = {"unet": smp.Unet, "fpn": smp.FPN}[architecture]
    if architecture == "unet" and decoder_channels:
        kwargs["decoder_channels"] = tuple(int(c) for c in decoder_channels)
    try:
        return cls(encoder_name=f"tu-{name}", encoder_weights=None, classes=n_classes, **kwargs)
    except ValueError as exc:  # e.g. a ViT asked for a UNet: smp needs a hierarchical (multi-scale) encoder
        raise ValueError(f"{architecture} needs a multi-scale trunk; {name} is not one ({exc}); "
                         f"use segmentation.architecture=dpt for ViT trunks") from exc


def dpt_widths(vit_width: int) -> list:
    """DPT decoder widths sized to the ViT: reassemble stages w/4, w/2, w, w and fusion w/4 (smp's defaults
    256, 512, 1024, 1024 / 256 are these for ViT-L, w = 1024), at least 8 each."""
    w = int(vit_width)
    return [max(8, w // 4), max(8, w // 2), max(8, w), max(8, w), max(8, w // 4)]


def encoder_timm(seg: nn.Module) -> nn.Module:
    return seg.encoder.model  # smp's TimmUniversalEncoder / TimmViTEncoder keep the timm model here


def _trunk_key_for(enc_key: str, trunk_keys: set) -> Optional[str]:
    """The trunk name of an encoder tensor: timm's ``features_only`` wrapper flattens the first level of
    nested modules with "_" (``stages.0`` -> ``stages_0``), so both spellings are tried."""
    if enc_key in trunk_keys:
        return enc_key
    head, _, rest = enc_key.partition(".")
    for i in range(head.count("_"), 0, -1):
        cand = head.replace("_", ".", i) + ("." + rest if rest else "")
        if cand in trunk_keys:
            return cand
    return None


def transfer_trunk_weights(seg: nn.Module, trunk_state: Dict[str, torch.Tensor], source: str = "trunk") -> Dict:
    """Copy a timm trunk's state dict into the segmenter's encoder.

    Every trunk tensor must be used, except classifier parts (``head.``/``fc.``/``classifier.``); every
    encoder tensor must be filled, except the encoder's own unused classifier. Anything else is an error.
    """
    enc = encoder_timm(seg)
    enc_state = enc.state_dict()
    trunk_keys = set(trunk_state)
    mapping = {k: _trunk_key_for(k, trunk_keys) for k in enc_state}
    unfilled = [k for k, t in mapping.items() if t is None and not k.startswith(_HEAD_PREFIXES)]
    used = {t for t in mapping.values() if t is not None}
    unused = [k for k in trunk_state if k not in used and not k.startswith(_HEAD_PREFIXES)]
    shape = [k for k, t in mapping.items() if t is not None and enc_state[k].shape != trunk_state[t].shape]
    if unfilled or unused or shape:
        raise WeightTransferError(f"{source} does not fit the segmentation encoder: encoder tensors without a "
                                  f"source {unfilled[:5]}, unused {source} tensors {unused[:5]}, shape mismatches "
                                  f"{shape[:5]}")
    new = {k: trunk_state[t].detach().clone() for k, t in mapping.items() if t is not None}
    enc.load_state_dict({**enc_state, **new})
    return {"loaded": len(new), "trunk_tensors": len(trunk_state),
            "skipped_classifier": sorted(set(trunk_state) - used)}


def load_encoder_init(seg: nn.Module, model, init: str, imagenet_checkpoint: Optional[str] = None) -> Dict:
    """Initialise the encoder for ``init`` (see the module docstring); returns a transfer summary."""
    if init not in INITS:
        raise ValueError(f"segmentation init must be one of {INITS}, got {init!r}")
    if init == "random":
        return {"loaded": 0}
    if init == "pretrained":
        return transfer_trunk_weights(seg, model.visual.trunk.state_dict(), "the model's image trunk")
    if not imagenet_checkpoint:
        raise ValueError("init 'imagenet' needs segmentation.imagenet_checkpoint=FILE (a local timm checkpoint of "
                         f"{model.cfg.vision.timm_model_name}; weights are never downloaded)")
    import timm

    from ..models.vision import _load_local_trunk_weights

    trunk = timm.create_model(model.cfg.vision.timm_model_name, pretrained=False, num_classes=0,
                              **model.cfg.vision.timm_kwargs)
    _load_local_trunk_weights(trunk, imagenet_checkpoint)
    return transfer_trunk_weights(seg, trunk.state_dict(), imagenet_checkpoint)


def configure_encoder(seg: nn.Module, finetune: str, trunk: nn.Module) -> int:
    """``requires_grad`` for a fine-tuning mode; returns the number of trainable encoder tensors."""
    if finetune not in TOWER_FINETUNE:
        raise ValueError(f"segmentation.finetune must be one of {TOWER_FINETUNE}, got {finetune!r}")
    enc = encoder_timm(seg)
    for p in seg.parameters():
        p.requires_grad_(True)
    if finetune == "full":
        return sum(1 for _ in enc.parameters())
    last = last_stage_name(trunk) if finetune == "last_block" else None
    trunk_keys = {n for n, _ in trunk.named_parameters()}
    n = 0
    for name, p in enc.named_parameters():
        t = _trunk_key_for(name, trunk_keys) or name
        train = last is not None and (t == last or t.startswith(last + "."))
        p.requires_grad_(train)
        n += int(train)
    if finetune == "last_block" and n == 0:
        raise ValueError(f"cannot find the trunk's last block {last!r} in the segmentation encoder")
    return n
