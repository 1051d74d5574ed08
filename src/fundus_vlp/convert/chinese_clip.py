"""ViLReF and RET-CLIP: checkpoints in the Chinese-CLIP layout (CLIP image tower + Chinese RoBERTa = BERT).

See docs/reference.md#vilref-and-ret-clip. Layout after the DDP ``module.`` prefix: ``visual.*`` (an OpenAI-CLIP
ViT, or the CLIP ResNet-50 with attention pooling), ``bert.*`` (a BERT without pooler), ``text_projection`` and
``logit_scale``. The image tower becomes timm's ``vit_base_patch16_clip_quickgelu_224`` (QuickGELU, as the
official ViT) or ``resnet50_clip``, renamed by timm's own OpenAI-CLIP converters; the text tower is a Hugging
Face ``BertModel`` whose [CLS] state is projected. Sizes (width, depth, patch, input size, vocabulary rows)
are read off the tensors, so any model of the family imports.

RET-CLIP adds binocular heads: every image goes through the shared ``visual`` encoder, then a patient-level
mapping of (left, right) or a per-eye mapping, each with its own text projection (an MLP) and logit scale.
A single image is embedded as one of these views (``--variant``): ``patient`` (default) treats it as both
eyes of a patient and uses the patient-level mapping and text head; ``left``/``right`` use that eye's. The
view's linear maps are folded into one projection; the other views' tensors are left out.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from ..config import LOGIT_SCALE_MAX, ModelCfg, PreprocessCfg, TextCfg, VisionCfg
from ..hub import CheckpointError
from .checkpoint import Placement, State, count_layers, load_strict, read_checkpoint, require, strip_prefix, unwrap
from .towers import HEAD_WIDTH, bert_config_from_state, build, check_vocabulary, load_tokenizer, save_release

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
CONTEXT_LENGTH = 52  # the evaluation scripts' and tokenize()'s length; with [CLS] pooling it only truncates
VILREF_ZERO_SHOT_SCALE = 100.0  # ViLReF's zero-shot evaluation multiplies cosines by a fixed 100
CARDS = {
    "vilref": {"paper": "Yang et al., ViLReF: An Expert Knowledge Enabled Vision-Language Retinal Foundation Model "
                        "(arXiv 2408.10894, 2024)",
               "license": "see the ViLReF release (github.com/T6Yang/ViLReF)",
               "official_code": "github.com/T6Yang/ViLReF @ 3a01b908f72abab04661bba80403989f5271b990",
               "source": "ViLReF release (Google Drive links in its README)"},
    "ret-clip": {"paper": "Du et al., RET-CLIP: A Retinal Image Foundation Model Pre-trained with Clinical "
                          "Diagnostic Reports, MICCAI 2024",
                 "license": "see the RET-CLIP release (github.com/sStonemason/RET-CLIP)",
                 "official_code": "github.com/sStonemason/RET-CLIP @ 1ddb9a1d331eba9e0a2675f3273e7cbcea0914bd",
                 "source": "RET-CLIP release (links in its README)"},
}
_VIT = "vit_base_patch16_clip_quickgelu_224"
_VIT_DEFAULTS = {"embed_dim": 768, "depth": 12, "num_heads": 12, "patch_size": 16, "img_size": 224}
_RETCLIP_VIEWS = {"patient": ("text_projection", "logit_scale"), "left": ("text_projection_left", "logit_scale_left"),
                  "right": ("text_projection_right", "logit_scale_right")}


def read_state(path: Path) -> State:
    """ViLReF's training container ``{'epoch', 'step', 'name', 'state_dict', ...}`` or RET-CLIP's bare state dict."""
    state, _ = unwrap(read_checkpoint(path), path, ("state_dict",))
    state = strip_prefix(state, "module.")
    for key in ("visual.conv1.weight", "bert.embeddings.word_embeddings.weight", "logit_scale"):
        require(state, key, path)
    return state


def is_resnet(state: State) -> bool:
    return "visual.attnpool.positional_embedding" in state


def vision_cfg(state: State, source: Path) -> VisionCfg:
    if is_resnet(state):
        layers = [count_layers(state, f"visual.layer{i}.") for i in range(1, 5)]
        if layers != [3, 4, 6, 3] or tuple(state["visual.conv1.weight"].shape) != (32, 3, 3, 3):
            raise CheckpointError(f"{source}: a CLIP ResNet with blocks {layers}; only the ResNet-50 is supported")
        return VisionCfg(timm_model_name="resnet50_clip", projection="linear", projection_bias=True,
                         projection_prenorm=False)
    conv = state["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = math.isqrt(int(require(state, "visual.positional_embedding", source).shape[0]) - 1)
    arch = {"embed_dim": width, "depth": count_layers(state, "visual.transformer.resblocks."),
            "num_heads": max(1, width // HEAD_WIDTH), "patch_size": patch, "img_size": grid * patch}
    return VisionCfg(timm_model_name=_VIT, timm_kwargs={k: v for k, v in arch.items() if v != _VIT_DEFAULTS[k]},
                     projection="linear", projection_bias=False, projection_prenorm=False)


def input_size(state: State) -> int:
    if is_resnet(state):
        return 32 * math.isqrt(int(state["visual.attnpool.positional_embedding"].shape[0]) - 1)
    grid = math.isqrt(int(state["visual.positional_embedding"].shape[0]) - 1)
    return grid * int(state["visual.conv1.weight"].shape[-1])


def model_cfg(state: State, source: Path, name: str, embed_dim: int, text_mlp: bool, scale: float) -> ModelCfg:
    text = TextCfg(hf_model_name=None, hf_tokenizer_name=None, pretrained=False, pooling="cls",
                   hf_config=bert_config_from_state(state, "bert.", source), context_length=CONTEXT_LENGTH,
                   padding="max_length", projection="mlp" if text_mlp else "linear", projection_bias=text_mlp,
                   projection_prenorm=False, text_normalize=["lower", "ascii_quotes"])
    preprocess = PreprocessCfg(size=input_size(state), resize_mode="squash", interpolation="bicubic",
                               resize_backend="pil", mean=CLIP_MEAN, std=CLIP_STD)
    return ModelCfg(name=name, embed_dim=embed_dim, vision=vision_cfg(state, source), text=text,
                    preprocess=preprocess, logit_scale_max=max(LOGIT_SCALE_MAX, scale))


def place_visual(state: State, model, placement: Placement, projection: Optional[torch.Tensor]) -> None:
    """``visual.*`` through timm's OpenAI-CLIP converter, key by key so each tensor's origin is known.
    ``projection``: the (folded) image projection as a ``Linear`` weight, for the ViT."""
    trunk = model.visual.trunk
    if is_resnet(state):
        from timm.models.byobnet import _convert_openai_clip
    else:
        from timm.models.vision_transformer import _convert_openai_clip
    for key in [k for k in state if k.startswith("visual.") and k != "visual.proj"]:
        converted = _convert_openai_clip({key: state[key]}, trunk)
        if len(converted) != 1:
            raise CheckpointError(f"{placement.source}: {key!r} is not an OpenAI-CLIP image-tower tensor")
        (ours, value), = converted.items()
        if ours.startswith("head.proj."):  # attention pool output projection (c_proj) = our projection head
            placement.put("visual.head.projection." + ours[len("head.proj."):], value, key)
        else:
            placement.put(f"visual.trunk.{ours}", value, key)
    if projection is not None:
        placement.put("visual.head.projection.weight", projection, "visual.proj")


def place_text(state: State, placement: Placement) -> None:
    for key, value in state.items():
        if key.startswith("bert.") and not key.startswith("bert.pooler."):
            placement.put("text.transformer." + key[len("bert."):], value, key)


def _tokenizer(tokenizer, cfg: ModelCfg, rows: int, source: Path):
    tok = load_tokenizer(tokenizer, lowercase=True, context_length=cfg.text.context_length,
                         padding=cfg.text.padding, normalize=cfg.text.text_normalize)
    check_vocabulary(tok, rows, source)
    return tok


def import_vilref(weights: str | Path, out_dir: str | Path, tokenizer=None, variant: Optional[str] = None):
    """ViLReF ViT-B/16 or RN50 -> a fundus-vlp model folder (zero-shot with ViLReF's fixed scale 100)."""
    source = Path(weights)
    state = read_state(source)
    text_projection = require(state, "text_projection", source)
    if text_projection.ndim != 2:
        raise CheckpointError(f"{source}: text_projection of shape {tuple(text_projection.shape)}: not ViLReF's")
    scale = float(state["logit_scale"])
    cfg = model_cfg(state, source, "vilref-rn50" if is_resnet(state) else "vilref-vit", int(text_projection.shape[1]),
                    text_mlp=False, scale=scale)
    cfg.zero_shot_scale = VILREF_ZERO_SHOT_SCALE
    rows = int(state["bert.embeddings.word_embeddings.weight"].shape[0])
    model = build(cfg, _tokenizer(tokenizer, cfg, rows, source), rows)
    placement = Placement(source)
    proj = None if is_resnet(state) else require(state, "visual.proj", source).t()  # stored [in, out]
    place_visual(state, model, placement, proj)
    place_text(state, placement)
    placement.put("text.head.projection.weight", text_projection.t(), "text_projection")
    placement.put("logit_scale", state["logit_scale"].reshape(()), "logit_scale")
    placement.dropped += [k for k in state if k.startswith("bert.pooler.")]
    _check_all_placed(state, placement)
    load_strict(model, placement)
    arch = "RN50" if is_resnet(state) else "ViT-B/16"
    save_release(model, out_dir, placement, {
        **CARDS["vilref"], "title": f"ViLReF {arch} (imported)", "weights_file": source.name,
        "description": f"ViLReF {arch} weights imported from {source.name}. Chinese prompts; zero-shot logits use "
                       "ViLReF's fixed scale 100."})
    return model


def import_ret_clip(weights: str | Path, out_dir: str | Path, tokenizer=None, variant: Optional[str] = None):
    """RET-CLIP (binocular) -> a fundus-vlp model folder embedding single images in one view (see module doc)."""
    source = Path(weights)
    view = variant or "patient"
    state = read_state(source)
    if is_resnet(state):
        raise CheckpointError(f"{source}: a RET-CLIP ResNet: its official code cannot embed images either "
                              "(single_feature_mapping is missing); only the ViT-B/16 is supported")
    text_head, scale_key = _RETCLIP_VIEWS[view]
    for key in (f"{text_head}.0.weight", f"{text_head}.2.weight", "global_feature_mapping.weight", scale_key):
        require(state, key, source)
    proj = require(state, "visual.proj", source)  # [width, D]
    embed_dim = int(proj.shape[1])
    if view == "patient":  # the same image as both eyes: W_g [v; v] = (W_left half + W_right half) v
        mapping = state["global_feature_mapping.weight"]
        folded = (mapping[:, :embed_dim] + mapping[:, embed_dim:]) @ proj.t()
        used = ["global_feature_mapping.weight"]
    else:
        used = [f"{view}_feature_mapping.weight"]
        folded = require(state, used[0], source) @ proj.t()
    scale = float(state[scale_key])
    cfg = model_cfg(state, source, f"ret-clip-{view}", embed_dim, text_mlp=True, scale=scale)
    rows = int(state["bert.embeddings.word_embeddings.weight"].shape[0])
    model = build(cfg, _tokenizer(tokenizer, cfg, rows, source), rows)
    placement = Placement(source)
    place_visual(state, model, placement, folded)
    placement.origin["visual.head.projection.weight"] = f"visual.proj folded with {used[0]}"
    place_text(state, placement)
    for part in ("0.weight", "0.bias", "2.weight", "2.bias"):
        placement.put(f"text.head.projection.{part}", require(state, f"{text_head}.{part}", source),
                      f"{text_head}.{part}")
    placement.put("logit_scale", state[scale_key].reshape(()), scale_key)
    consumed = set(placement.origin.values()) | {"visual.proj", *used}
    other_views = ("text_projection", "logit_scale", "global_feature_mapping.", "left_feature_mapping.",
                   "right_feature_mapping.", "bert.pooler.")
    placement.dropped += [k for k in state if k not in consumed and k.startswith(other_views)]
    _check_all_placed(state, placement, consumed)
    load_strict(model, placement)
    save_release(model, out_dir, placement, {
        **CARDS["ret-clip"], "title": f"RET-CLIP ViT-B/16, {view} view (imported)", "weights_file": source.name,
        "description": f"RET-CLIP weights imported from {source.name}; a single image is embedded in the {view} "
                       "view (fundus-vlp documentation: reference, ViLReF and RET-CLIP). Chinese prompts."})
    return model


def _check_all_placed(state: State, placement: Placement, consumed=None) -> None:
    consumed = consumed if consumed is not None else set(placement.origin.values())
    left = sorted(set(state) - consumed - set(placement.dropped))
    if left:
        raise CheckpointError(f"{placement.source}: {len(left)} tensor(s) have no place in the model, e.g. {left[:5]}")
