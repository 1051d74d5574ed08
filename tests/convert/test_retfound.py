"""RETFound import (MAE ViT-L/16 and DINOv2 ViT-L/14) against the official code's outputs on seeded weights
(fixtures from make_references.py; docs/reference.md#imported-models)."""
from __future__ import annotations

import pytest
import torch

from fundus_vlp.cli.main import main
from fundus_vlp.factory import from_pretrained
from fundus_vlp.hub import CheckpointError
from official_layout import assert_close, fixed_input, load_fixture, save_container, seeded_state


def import_fixture(name: str, tmp_path, variant_arg: bool = False):
    ref = load_fixture(name)
    weights = save_container(seeded_state(ref["shapes"], ref["seed"]), ref["container"], tmp_path / "release.pth")
    argv = ["import", ref["format"], "--weights", str(weights), "--out", str(tmp_path / "model")]
    assert main(argv + (["--variant", ref["variant"]] if variant_arg else [])) == 0
    return ref, from_pretrained(tmp_path / "model")


def check_image_parity(ref, model, paths) -> None:
    from fundus_vlp.data.images import load_image
    from fundus_vlp.data.transforms import build_transform

    transform = build_transform(model.cfg.preprocess)
    for path, stats in zip(paths, ref["pixels"]):
        x = transform(load_image(path))
        assert_close(x.mean(dim=2), stats["row_means"], f"{path.name} row means")
        assert_close(x.mean(dim=1), stats["col_means"], f"{path.name} column means")
    with torch.no_grad():
        assert_close(model.encode_image(fixed_input(ref["size"])), ref["tensor_embedding"], "fixed-input embedding")
    assert_close(model.embed_images(paths), ref["image_embeddings"], "image embeddings")
    with torch.no_grad():
        batch = torch.stack([transform(load_image(p)) for p in paths])
        assert_close(model.encode_image(batch, normalize=False, project=False), ref["image_features"],
                     "transfer features")


# the real ViT-L/16 (303 M parameters; its MAE checkpoint with decoder is 1.3 GB): slow
@pytest.mark.parametrize("name", ["retfound_mae_small", "retfound_dinov2_small",
                                  pytest.param("retfound_mae_vitl", marks=pytest.mark.heavy)])
def test_retfound_import_matches_official_code(name, tmp_path, official_images):
    ref, model = import_fixture(name, tmp_path)
    assert model.is_image_only and model.cfg.preprocess.resize_mode == "crop"
    assert model.cfg.vision.timm_model_name == {"mae": "vit_large_patch16_224",
                                                "dinov2": "vit_large_patch14_dinov2"}[ref["variant"]]
    check_image_parity(ref, model, official_images)
    emb = model.embed_images(official_images)
    assert (emb[0] - emb[1]).abs().max() > 1e-2  # two different images are told apart
    card = (tmp_path / "model" / "README.md").read_text()
    assert "Nature" in card and "897d71c" in card


def test_mae_decoder_is_left_out_but_a_foreign_tensor_is_refused(tmp_path):
    ref = load_fixture("retfound_mae_small")
    state = seeded_state(ref["shapes"], ref["seed"])
    state["blocks.0.attn.extra.weight"] = torch.zeros(3)
    save_container(state, "mae", tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"tensors without a parameter \[.blocks\.0\.attn\.extra\.weight"):
        from fundus_vlp.convert import import_weights

        import_weights("retfound", tmp_path / "bad.pth", tmp_path / "m")
