"""Importing FLAIR-layout weights (docs/reference.md#flair-released-weights): strict renaming, same outputs,
clear errors."""
from __future__ import annotations

import pytest
import torch

from fundus_vlp.cli.main import main
from fundus_vlp.convert import flair_to_fundus_vlp, import_flair
from fundus_vlp.factory import create_model
from fundus_vlp.factory import from_pretrained
from fundus_vlp.hub import CheckpointError


def _flair_state(model) -> dict:
    """Our weights under FLAIR's key names, plus what real FLAIR/KeepFIT files also carry."""
    rename = [("visual.head.", "vision_model.projection_head_vision."), ("visual.trunk.", "vision_model.model."),
              ("text.head.", "text_model.projection_head_text."), ("text.transformer.", "text_model.model.")]
    state = {}
    for key, value in model.state_dict().items():
        for ours, theirs in rename:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        state[key] = value.clone()
    width = model.text.width
    state["text_model.model.embeddings.position_ids"] = torch.arange(128)[None]  # transformers < 4.31
    state["text_model.model.pooler.dense.weight"] = torch.zeros(width, width)  # unused BERT pooler
    state["attention.W_q.weight"] = torch.zeros(model.cfg.embed_dim, model.cfg.embed_dim)  # KeepFIT revision
    return state


def test_imported_flair_weights_give_the_same_outputs(tiny_overrides, tmp_path):
    torch.manual_seed(3)
    flair_like = create_model("tiny", **{**tiny_overrides, "text.pooling": "flair_compat", "text.padding": "longest"})
    flair_like.eval()
    torch.save(_flair_state(flair_like), tmp_path / "flair_resnet.pth")
    # (the CLI path is the same function; here the fixture vocabulary is passed as a model override)
    import_flair(tmp_path / "flair_resnet.pth", tmp_path / "m", "tiny", **tiny_overrides)
    imported = from_pretrained(tmp_path / "m")
    assert imported.cfg.text.pooling == "flair_compat" and imported.cfg.text.padding == "longest"
    images = torch.rand(2, 3, 64, 64)
    ids = flair_like.tokenizer(["glaucoma", "a fundus photograph of mild diabetic retinopathy"])
    assert torch.equal(imported.encode_image(images), flair_like.encode_image(images))
    assert torch.equal(imported.encode_text(ids), flair_like.encode_text(ids))
    assert torch.equal(imported.logit_scale.detach(), flair_like.logit_scale.detach())


def test_foreign_layouts_are_rejected(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="unexpected key 'vision_model.classifier.weight'"):
        flair_to_fundus_vlp({"logit_scale": torch.tensor(1.0), "vision_model.classifier.weight": torch.zeros(2)})
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "resnet.pth")
    assert main(["import-flair", "--weights", str(tmp_path / "resnet.pth"), "--out", str(tmp_path / "x"),
                 "--model", "tiny"]) == 1
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="unreadable"):
        import_flair(tmp_path / "trunc.pth", tmp_path / "y", "tiny")
