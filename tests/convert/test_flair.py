"""FLAIR and KeepFIT v1 imports against the official FLAIR code's outputs on seeded weights (fixture from
make_references.py; docs/reference.md#imported-models). KeepFIT v1 checkpoints are FLAIR's dual encoder plus
a training-only revision attention, so they share the reference."""
from __future__ import annotations

import pytest
import torch

from fundus_vlp.cli.main import main
from fundus_vlp.data.images import load_image
from fundus_vlp.data.transforms import build_transform
from fundus_vlp.factory import from_pretrained
from official_layout import (assert_close, english_vocab, fixed_input, load_fixture, predict_probs, save_container,
                             seeded_state)


def _tokenizer_folder(path):
    from transformers import BertTokenizerFast

    BertTokenizerFast(vocab={t: i for i, t in enumerate(english_vocab())}, do_lower_case=True).save_pretrained(path)
    return path


@pytest.mark.parametrize("fmt", ["flair", "keepfit"])
def test_flair_layout_import_matches_official_code(fmt, tmp_path, official_images, capsys):
    ref = load_fixture("flair_rn50")
    state = seeded_state(ref["shapes"], ref["seed"])
    if fmt == "keepfit":  # KeepFIT v1's revision attention: trained, never used by the released dual encoder
        state.update({f"attention.{n}.weight": torch.zeros(512, 512) for n in ("W_q", "W_k", "W_v")})
    save_container(state, ref["container"], tmp_path / "weights.pth")
    tokenizer = _tokenizer_folder(tmp_path / "tok") if fmt == "flair" else tmp_path / "vocab.txt"
    if fmt == "keepfit":  # a bare vocabulary file is enough: the text architecture comes from the checkpoint
        tokenizer.write_text("\n".join(english_vocab()) + "\n")
    assert main(["import", fmt, "--weights", str(tmp_path / "weights.pth"), "--out", str(tmp_path / "m"),
                 "--tokenizer", str(tokenizer)]) == 0
    model = from_pretrained(tmp_path / "m")
    assert model.cfg.preprocess.mean is None

    transform = build_transform(model.cfg.preprocess)
    batch = torch.stack([transform(load_image(p)) for p in official_images])
    assert "d6652d53" in (tmp_path / "m" / "README.md").read_text()
    for x, stats, path in zip(batch, ref["pixels"], official_images):
        assert_close(x.mean(dim=2), stats["row_means"], f"{path.name} row means")
        assert_close(x.mean(dim=1), stats["col_means"], f"{path.name} column means")
    assert model.tokenizer(ref["prompts"], padding="longest").tolist() == ref["token_ids"]
    with torch.no_grad():
        assert_close(model.encode_image(fixed_input(ref["size"]).abs().clamp(0, 1)), ref["tensor_embedding"],
                     "fixed-input embedding")
        assert_close(model.embed_texts(ref["prompts"]), ref["text_embeddings"], "text embeddings")
        if fmt == "keepfit":  # same dual encoder as FLAIR: the weights are in place, the rest is FLAIR's test
            return
        features = model.visual.pool(model.visual.forward_features(batch))
        assert_close(features, ref["image_features"], "transfer features", relative=True)
        assert_close(model.visual.head(features), ref["image_embeddings"], "image embeddings")
    # from the files: classify decodes, preprocesses and embeds the images itself
    probs = model.classify(official_images, ref["classes"], domain_knowledge=False, templates=ref["templates"])
    assert_close(probs.to_numpy(), ref["probs"], "zero-shot probabilities")
    # `fundus-vlp predict` with FLAIR's prompt gives the official probabilities too
    assert_close(predict_probs(tmp_path / "m", official_images, ref["classes"], ref["templates"][0], capsys),
                 ref["probs"], "predict probabilities")
