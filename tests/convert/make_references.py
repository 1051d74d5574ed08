"""Record the official code's outputs on seeded weights: the fixtures of the import parity tests.

Run at development time, outside the test suite, against the official repositories exported (``git archive``)
into one folder; nothing of theirs is copied into fundus-vlp, only the numbers are written:

    python tests/convert/make_references.py --official /tmp/off [--only NAME ...]

``--official`` holds ``rmaphoh+RETFound_MAE``, ``facebookresearch+mae``, ``T6Yang+ViLReF``, ``sStonemason+RET-CLIP``,
``jusiro+FLAIR`` at the commits named in docs/reference.md#imported-models. For each fixture the official
model is built, every tensor replaced by ``seeded_state`` (same keys and shapes, strict load), the official
preprocessing, tokenizer and forward run on the test images and prompts, and the results written to
``fixtures/NAME.json`` with the key list of the official checkpoint layout.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from official_layout import (CLASSES_EN, CLASSES_ZH, FIXTURES, PROMPTS_EN, PROMPTS_ZH, TEMPLATES_EN,  # noqa: E402
                             TEMPLATES_ZH, chinese_vocab, english_vocab, fixed_input, seeded_state, write_test_images,
                             write_vocab)

SEED = 20240611
WORK = Path("/tmp/fundus_vlp_refs")


@contextlib.contextmanager
def official_path(root: Path, *drop_modules: str):
    """Import the official code from ``root``, forgetting same-named modules of another repository."""
    for name in list(sys.modules):
        if name.split(".")[0] in drop_modules:
            del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))


def fill(model: nn.Module, seed: int, skip=()) -> dict:
    """Replace every tensor of ``model`` by its seeded value (strict load); returns the key -> shape layout."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items() if k not in skip}
    state = seeded_state(shapes, seed)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= set(skip), (missing, unexpected)
    return shapes


def pixel_stats(x: torch.Tensor) -> dict:
    """Per-channel row and column means of a preprocessed 3×H×W input."""
    return {"row_means": x.mean(dim=2).tolist(), "col_means": x.mean(dim=1).tolist()}


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _rounded(value):
    """Floats to 9 significant digits (float32 carries about 7): small files, no loss at a 1e-5 check."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def write(name: str, record: dict) -> None:
    FIXTURES.mkdir(exist_ok=True)
    path = FIXTURES / f"{name}.json"
    path.write_text(json.dumps(_rounded(record), separators=(",", ":")))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


def images_through(transform):
    from PIL import Image

    paths = write_test_images(WORK / "images")
    return [transform(Image.open(p).convert("RGB")) for p in paths]


# -- RETFound ------------------------------------------------------------------------------------------------
def retfound_mae(official: Path, small: bool) -> None:
    root = official / "rmaphoh+RETFound_MAE"
    np.float = float  # the MAE repository's sin-cos helper still uses np.float (removed in numpy 1.24)
    with official_path(official / "facebookresearch+mae", "util", "models_mae"):
        import timm.models.vision_transformer as tvit

        models_mae = importlib.import_module("models_mae")

        def block(*args, qk_scale=None, **kwargs):  # timm >= 0.6 dropped qk_scale (always None in MAE)
            return tvit.Block(*args, **kwargs)

        models_mae.Block = block
        arch = dict(img_size=64, embed_dim=128, depth=2, num_heads=2) if small else {}
        mae = models_mae.MaskedAutoencoderViT(patch_size=16, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                              decoder_embed_dim=64 if small else 512,
                                              decoder_depth=1 if small else 8, decoder_num_heads=2 if small else 16,
                                              **({**arch} if small else dict(embed_dim=1024, depth=24, num_heads=16)))
    pretrain_shapes = fill(mae, SEED)
    checkpoint = {"model": mae.state_dict()}  # what MAE pre-training saves (encoder + norm + decoder)
    with official_path(root, "util", "models_vit"):
        models_vit = importlib.import_module("models_vit")
        from timm.models.layers import trunc_normal_
        from util.datasets import build_transform
        from util.pos_embed import interpolate_pos_embed

        kwargs = dict(img_size=64, embed_dim=128, depth=2, num_heads=2, patch_size=16, mlp_ratio=4, qkv_bias=True,
                      norm_layer=partial(nn.LayerNorm, eps=1e-6)) if small else {}
        model = (models_vit.VisionTransformer(global_pool=True, num_classes=5, **kwargs) if small
                 else models_vit.RETFound_mae(global_pool=True, num_classes=5, img_size=224))
        # main_finetune.py's loading of a pre-trained checkpoint, step by step
        checkpoint_model = checkpoint["model"]
        checkpoint_model = {k.replace("backbone.", ""): v for k, v in checkpoint_model.items()}
        checkpoint_model = {k.replace("mlp.w12.", "mlp.fc1."): v for k, v in checkpoint_model.items()}
        checkpoint_model = {k.replace("mlp.w3.", "mlp.fc2."): v for k, v in checkpoint_model.items()}
        state_dict = model.state_dict()
        for k in ["head.weight", "head.bias"]:
            if k in checkpoint_model and checkpoint_model[k].shape != state_dict[k].shape:
                del checkpoint_model[k]
        interpolate_pos_embed(model, checkpoint_model)
        msg = model.load_state_dict(checkpoint_model, strict=False)
        trunc_normal_(model.head.weight, std=2e-5)
        assert set(msg.missing_keys) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}, msg
        size = 64 if small else 224
        transform = build_transform("test", SimpleNamespace(input_size=size))
    model.eval()
    record = {"format": "retfound", "variant": "mae", "seed": SEED, "container": "mae", "shapes": pretrain_shapes,
              "size": size}
    _image_outputs(record, model, transform, size, lambda x: model.forward_features(x)[:, 0])
    write("retfound_mae_small" if small else "retfound_mae_vitl", record)


def retfound_dinov2(official: Path, small: bool) -> None:
    """RETFound_dinov2 is timm's DINOv2 ViT-L/14 at 224 px (downloaded pretrained, then the teacher loaded over it)."""
    import timm

    kwargs = dict(embed_dim=128, depth=2, num_heads=2, img_size=56) if small else dict(img_size=224)
    with official_path(official / "rmaphoh+RETFound_MAE", "util", "models_vit"):
        from util.datasets import build_transform

        models_vit = importlib.import_module("models_vit")
        # models_vit.RETFound_dinov2 with pretrained=False (offline); the released teacher overwrites all of it
        model = timm.create_model("vit_large_patch14_dinov2.lvd142m", pretrained=False, num_classes=5, **kwargs)
        assert "RETFound_dinov2" in dir(models_vit)
        size = kwargs["img_size"]
        transform = build_transform("test", SimpleNamespace(input_size=size))
    shapes = {k: list(v.shape) for k, v in model.state_dict().items() if not k.startswith("head.")}
    shapes["mask_token"] = [1, shapes["cls_token"][-1]]
    shapes["dino_head.last_layer.weight"] = [16, shapes["cls_token"][-1]]  # a training head beside the backbone
    teacher = seeded_state(shapes, SEED)
    checkpoint_model = {f"backbone.{k}" if not k.startswith("dino_head.") else k: v for k, v in teacher.items()}
    checkpoint_model = {k.replace("backbone.", ""): v for k, v in checkpoint_model.items()}  # main_finetune.py
    msg = model.load_state_dict(checkpoint_model, strict=False)
    assert set(msg.missing_keys) == {"head.weight", "head.bias"}, msg
    assert set(msg.unexpected_keys) == {"mask_token", "dino_head.last_layer.weight"}, msg
    model.eval()
    record = {"format": "retfound", "variant": "dinov2", "seed": SEED, "container": "dinov2", "shapes": shapes,
              "size": size}
    _image_outputs(record, model, transform, size, lambda x: model.forward_head(model.forward_features(x),
                                                                                pre_logits=True))
    write("retfound_dinov2_small" if small else "retfound_dinov2_vitl", record)


def _image_outputs(record: dict, model, transform, size: int, features) -> None:
    inputs = images_through(transform)
    with torch.no_grad():
        feats = features(torch.stack(inputs))
        tensor_feat = features(fixed_input(size))
    record["pixels"] = [pixel_stats(x) for x in inputs]
    record["image_features"] = feats.tolist()
    record["image_embeddings"] = unit(feats).tolist()
    record["tensor_embedding"] = unit(tensor_feat).tolist()


# -- ViLReF and RET-CLIP (Chinese-CLIP layout) --------------------------------------------------------------
SMALL_TEXT = dict(text_attention_probs_dropout_prob=0.1, text_hidden_act="gelu", text_hidden_dropout_prob=0.1,
                  text_hidden_size=128, text_initializer_range=0.02, text_intermediate_size=256,
                  text_max_position_embeddings=64, text_num_attention_heads=2, text_num_hidden_layers=2,
                  text_type_vocab_size=2)
VISION = {"vit_small": dict(embed_dim=32, image_resolution=64, vision_layers=2, vision_width=128, vision_patch_size=16),
          "vit_b16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                          vision_patch_size=16),
          "rn50": dict(embed_dim=1024, image_resolution=224, vision_layers=[3, 4, 6, 3], vision_width=64,
                       vision_patch_size=None)}


def functions_from(path: Path, names, namespace: dict) -> dict:
    """Run only the named top-level functions of an official script whose module cannot be imported
    (ViLReF's eval/zeroshot_evaluation.py imports a training module missing from the repository)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    picked = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    assert {n.name for n in picked} == set(names), names
    exec(compile(ast.Module(body=picked, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def chinese_clip(official: Path, repo: str, package: str, vision: str):
    """The official CLIP class of ``package`` (ViLReF / RET_CLIP) with the test vocabulary, seeded; its preprocess
    and tokenize functions."""
    root = official / repo
    vocab = write_vocab(chinese_vocab(), WORK / "vocab_zh.txt")
    with official_path(root, package):
        bert_tokenizer = importlib.import_module(f"{package}.clip.bert_tokenizer")
        clip_model = importlib.import_module(f"{package}.clip.model")
        clip_utils = importlib.import_module(f"{package}.clip.utils")
    tokenizer = bert_tokenizer.FullTokenizer(vocab_file=str(vocab))
    clip_utils._tokenizer = tokenizer  # tokenize() reads the module's tokenizer: give it the test vocabulary
    model = clip_model.CLIP(**VISION[vision], vocab_size=len(chinese_vocab()), tokenizer=tokenizer, **SMALL_TEXT)
    shapes = fill(model, SEED)
    model.eval()
    return model, shapes, clip_utils


def _preprocess_text(official: Path, repo: str, package: str):
    return functions_from(official / repo / package / "eval" / "data.py", ["_preprocess_text"], {})["_preprocess_text"]


def vilref(official: Path, vision: str) -> None:
    repo = "T6Yang+ViLReF"
    model, shapes, clip_utils = chinese_clip(official, repo, "ViLReF", vision)
    size = VISION[vision]["image_resolution"]
    preprocess_text = _preprocess_text(official, repo, "ViLReF")
    from tqdm import tqdm

    zs = functions_from(official / repo / "ViLReF" / "eval" / "zeroshot_evaluation.py", ["zero_shot_classifier", "run"],
                        # its accuracy() fails on numpy >= 2 (a known quirk); the probabilities do not use it
                        {"accuracy": lambda logits, target, topk: [0.0 for _ in topk], "torch": torch,
                         "tqdm": tqdm, "json": json, "tokenize": clip_utils.tokenize,
                         "_preprocess_text": preprocess_text})
    args = SimpleNamespace(context_length=52, gpu="cpu")
    inputs = images_through(clip_utils.image_transform(size))
    batch = torch.stack(inputs)
    ids = clip_utils.tokenize([preprocess_text(p) for p in PROMPTS_ZH], context_length=52)
    with torch.no_grad():
        projected = model(batch, None)
        feats = model.encode_image_featExt(batch)
        tensor_emb = model(fixed_input(size), None)
        text = model(None, ids)
        templates = [lambda c, t=t: t.format(c) for t in TEMPLATES_ZH]
        classifier = zs["zero_shot_classifier"](model, CLASSES_ZH, templates, args)
        _, probs = zs["run"](model, classifier, [(batch, torch.zeros(len(batch), dtype=torch.long))], args)
    record = {"format": "vilref", "seed": SEED, "container": "chinese_clip_train", "shapes": shapes, "size": size,
              "pixels": [pixel_stats(x) for x in inputs], "image_projected": projected.tolist(),
              "image_embeddings": unit(projected).tolist(), "tensor_embedding": unit(tensor_emb).tolist(),
              "image_features": None if vision == "rn50" else feats.tolist(),
              "prompts": PROMPTS_ZH, "token_ids": ids.tolist(), "text_embeddings": unit(text).tolist(),
              "classes": CLASSES_ZH, "templates": TEMPLATES_ZH, "probs": probs.tolist()}
    write(f"vilref_{vision}", record)


def ret_clip(official: Path, vision: str) -> None:
    repo = "sStonemason+RET-CLIP"
    model, shapes, clip_utils = chinese_clip(official, repo, "RET_CLIP", vision)
    size = VISION[vision]["image_resolution"]
    preprocess_text = _preprocess_text(official, repo, "RET_CLIP")
    inputs = images_through(clip_utils.image_transform(size))
    batch = torch.stack(inputs)
    ids = clip_utils.tokenize([preprocess_text(p) for p in PROMPTS_ZH], context_length=52)
    record = {"format": "ret-clip", "seed": SEED, "container": "module_state_dict", "shapes": shapes, "size": size,
              "pixels": [pixel_stats(x) for x in inputs], "prompts": PROMPTS_ZH, "token_ids": ids.tolist(),
              "classes": CLASSES_ZH, "templates": TEMPLATES_ZH, "views": {}}
    with torch.no_grad():
        views = {"patient": 0, "left": 1, "right": 2}
        images = model(batch, batch, None)  # binocular: (patient, left, right) with the image as both eyes
        fixed = model(fixed_input(size), fixed_input(size), None)
        texts = model(None, None, ids)
        scales = [model.logit_scale, model.logit_scale_left, model.logit_scale_right]
        for view, i in views.items():
            # no zero-shot script of RET-CLIP runs; the classifier follows ViLReF's (normalised template
            # ensemble per class) with this view's text head and learned logit scale
            prototypes = []
            for c in CLASSES_ZH:
                t = clip_utils.tokenize([preprocess_text(t.format(c)) for t in TEMPLATES_ZH], context_length=52)
                emb = unit(model(None, None, t)[i]).mean(dim=0)
                prototypes.append(emb / emb.norm())
            probs = (scales[i].exp() * unit(images[i]) @ torch.stack(prototypes).T).softmax(dim=-1)
            record["views"][view] = {"image_projected": images[i].tolist(),
                                     "image_embeddings": unit(images[i]).tolist(),
                                     "tensor_embedding": unit(fixed[i]).tolist(),
                                     "text_embeddings": unit(texts[i]).tolist(), "probs": probs.tolist()}
        record["image_features"] = model.visual.for_linear_probing(batch).tolist() if hasattr(
            model.visual, "for_linear_probing") else None
    write(f"ret_clip_{vision}", record)


# -- FLAIR ---------------------------------------------------------------------------------------------------
def flair(official: Path) -> None:
    """FLAIRModel with a 2-layer BERT of FLAIR's width (its text projection is fixed at 768 inputs) saved as a
    local folder with the test vocabulary, and the torchvision ResNet-50 without ImageNet weights."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = WORK / "flair_bert"
    vocab = english_vocab()
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                         intermediate_size=256, max_position_embeddings=128)).save_pretrained(folder)
    with official_path(official / "jusiro+FLAIR", "flair"):
        from flair.modeling.model import FLAIRModel

        model = FLAIRModel(vision_type="resnet_v1", bert_type=str(folder), vision_pretrained=False,
                           from_checkpoint=False, image_size=512)
    shapes = fill(model, SEED)
    model.eval()
    from PIL import Image

    paths = write_test_images(WORK / "images")
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    with torch.no_grad():
        inputs = [model.preprocess_image(a)[0] for a in arrays]
        batch = torch.stack(inputs)
        images = model.vision_model(batch)
        features = model.vision_model.model(batch)
        tensor_emb = model.vision_model(fixed_input(512).abs().clamp(0, 1))
        ids = model.text_model.tokenize(PROMPTS_EN)["input_ids"]
        text = model.text_model(ids, model.text_model.tokenize(PROMPTS_EN)["attention_mask"])
        _, prototypes = model.compute_text_embeddings(CLASSES_EN, domain_knowledge=False)
        probs = model.compute_logits(images, prototypes).softmax(dim=-1)
    record = {"format": "flair", "seed": SEED, "container": "flair", "shapes": shapes, "size": 512,
              "fixed_input": "abs_clamp", "pixels": [pixel_stats(x) for x in inputs],
              "image_projected": images.tolist(), "image_embeddings": images.tolist(),
              "tensor_embedding": tensor_emb.tolist(), "image_features": features.tolist(),
              "prompts": PROMPTS_EN, "token_ids": ids.tolist(), "text_embeddings": text.tolist(),
              "classes": CLASSES_EN, "templates": TEMPLATES_EN, "probs": probs.tolist(),
              "logit_scale": float(model.logit_scale.detach())}
    write("flair_rn50", record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, type=Path)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    jobs = {
        "retfound_mae_small": lambda: retfound_mae(args.official, small=True),
        "retfound_mae_vitl": lambda: retfound_mae(args.official, small=False),
        "retfound_dinov2_small": lambda: retfound_dinov2(args.official, small=True),
        "vilref_vit_small": lambda: vilref(args.official, "vit_small"),
        "vilref_vit_b16": lambda: vilref(args.official, "vit_b16"),
        "vilref_rn50": lambda: vilref(args.official, "rn50"),
        "ret_clip_vit_small": lambda: ret_clip(args.official, "vit_small"),
        "ret_clip_vit_b16": lambda: ret_clip(args.official, "vit_b16"),
        "flair_rn50": lambda: flair(args.official),
    }
    for name, job in jobs.items():
        if args.only is None or name in args.only:
            job()


if __name__ == "__main__":
    main()
