"""Segmentation transfer: a segmentation-models-pytorch decoder on the image tower's timm trunk.

The segmenter is ``smp.Unet`` / ``smp.FPN`` (hierarchical CNN trunks) or ``smp.DPT`` (ViT trunks) built with
the ``tu-<timm name>`` encoder of the tower's architecture; its encoder then receives weights from one of:

* ``pretrained``: the fundus-vlp model's image trunk (every trunk tensor must find its place, or it fails);
* ``random``: timm's seeded random initialisation (the offline baseline);
* ``imagenet``: a local timm checkpoint file (``segmentation.imagenet_checkpoint``, .safetensors or .pth;
  nothing is downloaded), loaded into a fresh trunk and transferred as above.

``finetune``: ``frozen`` (encoder fixed, BatchNorm statistics included; only the decoder and head train),
``last_block`` (the trunk's last stage trains as well) or ``full``.

Training uses cross-entropy + soft Dice (``smp.losses``); after every epoch the validation split is
predicted and the epoch with the best mean foreground Dice is kept (early stopping on it). The caller
predicts the test split once, with the selected weights.
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import SEG_ARCHITECTURES as ARCHITECTURES
from .config import TOWER_FINETUNE, SegmentationCfg
from .config import SEG_INITS as INITS
from ..models.vision import last_stage_name
from ..runtime.extras import require
from .finetune import set_train_mode
from .segmentation_metrics import confusion_counts, metrics_from_counts

_logger = logging.getLogger(__name__)

_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "fc_norm.")  # classifier parts: not used to segment


class WeightTransferError(ValueError):
    """Trunk weights that do not fit the segmentation encoder; the message lists the tensors."""


def _is_vit(trunk: nn.Module) -> bool:
    return hasattr(trunk, "patch_embed") and hasattr(trunk, "blocks")


def build_segmenter(vision_cfg, n_classes: int, architecture: str = "auto", size: Optional[int] = None,
                    decoder_channels: Optional[Sequence[int]] = None) -> nn.Module:
    """An smp model whose encoder is the tower's timm architecture (random weights)."""
    import timm

    smp = require("segmentation_models_pytorch", "seg", "segmentation evaluation")

    if architecture not in ARCHITECTURES:
        raise ValueError(f"segmentation.architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    name, kwargs = vision_cfg.timm_model_name, dict(vision_cfg.timm_kwargs)
    if architecture == "auto":
        probe = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        architecture = "dpt" if _is_vit(probe) else "unet"
    if architecture == "dpt":
        if size is not None:
            kwargs["img_size"] = size
        return smp.DPT(encoder_name=f"tu-{name}", encoder_weights=None, classes=n_classes, dynamic_img_size=True,
                       **kwargs)
    cls = {"unet": smp.Unet, "fpn": smp.FPN}[architecture]
    if architecture == "unet" and decoder_channels:
        kwargs["decoder_channels"] = tuple(int(c) for c in decoder_channels)
    try:
        return cls(encoder_name=f"tu-{name}", encoder_weights=None, classes=n_classes, **kwargs)
    except ValueError as exc:  # e.g. a ViT asked for a UNet: smp needs a hierarchical (multi-scale) encoder
        raise ValueError(f"{architecture} needs a multi-scale trunk; {name} is not one ({exc}); "
                         f"use segmentation.architecture=dpt for ViT trunks") from exc


def _encoder_timm(seg: nn.Module) -> nn.Module:
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
    enc = _encoder_timm(seg)
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
    enc = _encoder_timm(seg)
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


class _Normalise(nn.Module):
    def __init__(self, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean or [0.0, 0.0, 0.0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0, 1.0, 1.0]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return (images_u8.float() / 255.0 - self.mean) / self.std


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


@torch.no_grad()
def predict_masks(seg: nn.Module, norm: _Normalise, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Label maps (N, S, S) uint8 of uint8 images (N, 3, S, S)."""
    seg.eval()
    out = [seg(norm(images[s].to(device))).argmax(1).to(torch.uint8).cpu() for s in _batches(len(images), batch_size)]
    return torch.cat(out) if out else torch.empty((0,) + tuple(images.shape[2:]), dtype=torch.uint8)


def score(pred: torch.Tensor, target: torch.Tensor, classes: Sequence[str]) -> Dict[str, float]:
    return metrics_from_counts(confusion_counts(pred, target, len(classes)), classes)


def train_segmenter(model, images: torch.Tensor, masks: torch.Tensor, train_idx: np.ndarray, val_idx: np.ndarray,
                    classes: Sequence[str], cfg: SegmentationCfg, init: str, seed: int, device,
                    progress: bool = True) -> Tuple[nn.Module, _Normalise, Dict]:
    """Train on ``train_idx`` and keep the epoch with the best validation mean Dice.

    Test data is not an argument: the caller predicts the test split once with the returned model.
    """
    smp = require("segmentation_models_pytorch", "seg", "segmentation evaluation")

    if len(val_idx) == 0:
        raise ValueError("segmentation needs a validation split for model selection")
    torch.manual_seed(seed)
    seg = build_segmenter(model.cfg.vision, len(classes), cfg.architecture, images.shape[-1], cfg.decoder_channels)
    transfer = load_encoder_init(seg, model, init, cfg.imagenet_checkpoint)
    n_trainable = configure_encoder(seg, cfg.finetune, model.visual.trunk)
    pre = model.cfg.preprocess
    norm = _Normalise(pre.mean, pre.std).to(device)
    seg.to(device)
    enc_params = [p for p in _encoder_timm(seg).parameters() if p.requires_grad]
    enc_ids = {id(p) for p in _encoder_timm(seg).parameters()}
    other = [p for p in seg.parameters() if p.requires_grad and id(p) not in enc_ids]
    groups = [{"params": other, "lr": cfg.lr}] + ([{"params": enc_params, "lr": cfg.encoder_lr}] if enc_params else [])
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    dice_loss = smp.losses.DiceLoss(mode="multiclass", from_logits=True)
    gen = torch.Generator().manual_seed(seed)
    x_val, y_val = images[val_idx], masks[val_idx]
    best = {"dice": -1.0, "epoch": -1, "state": copy.deepcopy(seg.state_dict()), "val": {}}
    history: List[Dict] = []
    bad = 0
    bar = tqdm(range(cfg.epochs), desc=f"segmentation ({init}, {cfg.finetune})", disable=None if progress else True,
               leave=False)
    for epoch in bar:
        set_train_mode(seg, cfg.finetune)  # fully frozen parts run in eval mode: BN statistics fixed
        order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        total, seen = 0.0, 0
        for s in _batches(len(order), cfg.batch_size):
            idx = order[s]
            x, y = images[idx], masks[idx].long()
            if cfg.augment:  # seeded horizontal flips (left and right eyes mirror each other)
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y = torch.where(flip[:, None, None], y.flip(-1), y)
            x, y = x.to(device), y.to(device)
            logits = seg(norm(x))
            loss = F.cross_entropy(logits, y) + dice_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        val = score(predict_masks(seg, norm, x_val, cfg.batch_size, device), y_val, classes)
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_dice_mean": val["dice_mean"]})
        if val["dice_mean"] > best["dice"]:
            best, bad = {"dice": val["dice_mean"], "epoch": epoch, "state": copy.deepcopy(seg.state_dict()),
                         "val": val}, 0
        else:
            bad += 1
            if bad >= cfg.patience:
                _logger.info("early stop at epoch %d (best %d, val Dice %.3f)", epoch, best["epoch"], best["dice"])
                break
    seg.load_state_dict(best["state"])
    seg.eval()
    return seg, norm, {"best_epoch": best["epoch"], "best_val_dice_mean": best["dice"], "history": history,
                       "trainable_encoder_tensors": n_trainable, "transfer": {k: v for k, v in transfer.items()
                                                                                if k != "skipped_classifier"}}
