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


def write(name: str, record: dict) -> None:
    FIXTURES.mkdir(exist_ok=True)
    path = FIXTURES / f"{name}.json"
    path.write_text(json.dumps(record, separators=(",", ":")))
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
    }
    for name, job in jobs.items():
        if args.only is None or name in args.only:
            job()


if __name__ == "__main__":
    main()
