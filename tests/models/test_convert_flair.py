"""Importing FLAIR-layout weights (flair.md §4): strict renaming, same outputs, clear errors."""
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


def _official_flair_input(path, size):
    """FLAIR's own preprocessing, written out: RGB in [0, 1] as float64, s = max(H, W)/size, torchvision Resize
    (antialiased) to (int(H/s), int(W/s)), zero padding at the bottom and right."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import Resize

    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    img = torch.from_numpy(img / 255.0 if img.max() > 1 else img).permute(2, 0, 1)
    h, w = img.shape[1:]
    scale = max(h, w) / size
    img = Resize((int(h / scale), int(w / scale)), antialias=True)(img)
    img = torch.nn.functional.pad(img, (0, size - img.shape[2], 0, size - img.shape[1]))
    return img.float()


def test_import_cli_with_local_tokenizer_matches_flair_forward_on_non_square_image(tiny_overrides,
                                                                                  tiny_tokenizer_dir, tmp_path):
    import numpy as np
    from PIL import Image

    torch.manual_seed(5)
    tok = create_model("tiny", **tiny_overrides).tokenizer
    rows = len(tok) + 7  # the checkpoint's table is larger than this tokenizer (as 28,996 rows vs a compatible vocab)
    flair_like = create_model("tiny", vocab_size=rows,
                              **{**tiny_overrides, "text.pooling": "flair_compat", "text.padding": "longest"}).eval()
    torch.save(_flair_state(flair_like), tmp_path / "flair_resnet.pth")
    assert main(["import-flair", "--weights", str(tmp_path / "flair_resnet.pth"), "--out", str(tmp_path / "m"),
                 "--model", "tiny", "--tokenizer", str(tiny_tokenizer_dir)]) == 0
    imported = from_pretrained(tmp_path / "m")
    assert imported.text.transformer.embeddings.word_embeddings.weight.shape[0] == rows
    assert imported.cfg.preprocess.resize_mode == "pad" and imported.cfg.preprocess.mean is None

    # 100×150 at size 64: s = 2.34375, H/s = 42.67 -> FLAIR keeps 42 rows (rounding would give 43)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    size = imported.cfg.preprocess.size
    with torch.no_grad():
        ref_image = flair_like.encode_image(_official_flair_input(tmp_path / "wide.png", size)[None])
        prompts = ["A fundus photograph of glaucoma", "A fundus photograph of mild diabetic retinopathy"]
        ref_text = flair_like.encode_text(tok(prompts, padding="longest"))
        ref_logits = flair_like.scale() * ref_image @ ref_text.T
    image = imported.embed_images(tmp_path / "wide.png")
    text = imported.embed_texts(prompts)
    torch.testing.assert_close(image, ref_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(imported.scale() * image @ text.T, ref_logits, atol=1e-5, rtol=0)


def test_a_tokenizer_larger_than_the_checkpoint_table_is_refused(tiny_overrides, tiny_tokenizer_dir, tmp_path):
    tok_len = len(create_model("tiny", **tiny_overrides).tokenizer)
    small = create_model("tiny", vocab_size=tok_len - 3, **tiny_overrides)
    torch.save(_flair_state(small), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=f"{tok_len} tokens but .* {tok_len - 3} rows"):
        import_flair(tmp_path / "w.pth", tmp_path / "m", "tiny", tokenizer=tiny_tokenizer_dir)
