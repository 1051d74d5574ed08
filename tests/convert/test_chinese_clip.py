"""ViLReF (ViT-B/16, RN50) and RET-CLIP imports against the official code's outputs on seeded weights
(fixtures from make_references.py; docs/reference.md#imported-models)."""
from __future__ import annotations

import pytest
import torch

from fundus_vlp.cli.main import main
from fundus_vlp.data.images import load_image
from fundus_vlp.data.transforms import build_transform
from fundus_vlp.factory import from_pretrained
from fundus_vlp.hub import CheckpointError
from official_layout import (assert_close, chinese_vocab, fixed_input, load_fixture, predict_probs, save_container,
                             seeded_state, write_vocab)


def import_fixture(name: str, tmp_path, variant=None):
    ref = load_fixture(name)
    weights = save_container(seeded_state(ref["shapes"], ref["seed"]), ref["container"], tmp_path / "release.pt")
    vocab = write_vocab(chinese_vocab(), tmp_path / "vocab.txt")
    argv = ["import", ref["format"], "--weights", str(weights), "--out", str(tmp_path / "model"),
            "--tokenizer", str(vocab)] + (["--variant", variant] if variant else [])
    assert main(argv) == 0
    return ref, from_pretrained(tmp_path / "model")


def check_parity(model, ref, out, paths) -> None:
    """Preprocessing, image and text embeddings and zero-shot probabilities against one recorded view ``out``."""
    transform = build_transform(model.cfg.preprocess)
    batch = torch.stack([transform(load_image(p)) for p in paths])
    for x, stats, path in zip(batch, ref["pixels"], paths):
        assert_close(x.mean(dim=2), stats["row_means"], f"{path.name} row means")
        assert_close(x.mean(dim=1), stats["col_means"], f"{path.name} column means")
    assert model.tokenizer(ref["prompts"]).tolist() == ref["token_ids"]
    with torch.no_grad():
        assert_close(model.encode_image(fixed_input(ref["size"])), out["tensor_embedding"], "fixed-input embedding")
        features = model.visual.pool(model.visual.forward_features(batch))  # = encode_image(project=False)
        assert_close(model.visual.head(features, normalize=False), out["image_projected"],
                     "projected image features", relative=True)
        if ref.get("image_features"):
            assert_close(features, ref["image_features"], "transfer features", relative=True)
        assert_close(model.visual.head(features), out["image_embeddings"], "image embeddings")
    assert_close(model.embed_texts(ref["prompts"]), out["text_embeddings"], "text embeddings")
    # from the files: classify decodes, preprocesses and embeds the images itself
    probs = model.classify(paths, ref["classes"], domain_knowledge=False, templates=ref["templates"])
    assert_close(probs.to_numpy(), out["probs"], "zero-shot probabilities")


# the ViT-B/16 image tower at its real size: about a minute on two busy cores, hence slow
@pytest.mark.parametrize("name", ["vilref_vit_small", pytest.param("vilref_vit_b16", marks=pytest.mark.heavy),
                                  "vilref_rn50"])
def test_vilref_import_matches_official_code(name, tmp_path, official_images, capsys):
    ref, model = import_fixture(name, tmp_path)
    expected_trunk = "resnet50_clip" if name.endswith("rn50") else "vit_base_patch16_clip_quickgelu_224"
    assert model.cfg.vision.timm_model_name == expected_trunk
    assert model.cfg.zero_shot_scale == 100.0
    check_parity(model, ref, ref, official_images)
    emb = torch.tensor(ref["image_embeddings"])
    assert 1 - float(emb[0] @ emb[1]) > 1e-3  # the two images are told apart (the CLIP ResNet's signal is alive)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "3a01b908" in card and "arXiv 2408.10894" in card
    if name == "vilref_vit_small":  # `fundus-vlp predict` gives the official single-template probabilities
        probs = predict_probs(tmp_path / "model", official_images, ref["classes"], ref["templates"][0], capsys)
        single = model.classify(official_images, ref["classes"], domain_knowledge=False,
                                templates=ref["templates"][:1]).to_numpy()
        assert_close(probs, single, "predict vs classify")
        assert abs(probs.sum(axis=1) - 1).max() < 1e-6 and (probs.max(axis=1) < 1).all()


@pytest.mark.parametrize("name,view", [("ret_clip_vit_small", "patient"), ("ret_clip_vit_small", "left"),
                                       pytest.param("ret_clip_vit_b16", "patient", marks=pytest.mark.heavy)])
def test_ret_clip_import_matches_official_code(name, view, tmp_path, official_images):
    ref, model = import_fixture(name, tmp_path, variant=view)
    assert model.cfg.text.projection == "mlp"
    check_parity(model, ref, ref["views"][view], official_images)
    assert "1ddb9a1d" in (tmp_path / "model" / "README.md").read_text()


def test_chinese_clip_import_needs_the_vocabulary_and_refuses_foreign_tensors(tmp_path):
    ref = load_fixture("vilref_vit_small")
    state = seeded_state(ref["shapes"], ref["seed"])
    save_container(state, ref["container"], tmp_path / "ok.pt")
    assert main(["import", "vilref", "--weights", str(tmp_path / "ok.pt"), "--out", str(tmp_path / "m")]) == 1
    state["visual.extra_head.weight"] = torch.zeros(2, 2)
    save_container(state, ref["container"], tmp_path / "bad.pt")
    from fundus_vlp.convert import import_weights

    vocab = write_vocab(chinese_vocab(), tmp_path / "vocab.txt")
    with pytest.raises(CheckpointError, match="visual.extra_head.weight"):
        import_weights("vilref", tmp_path / "bad.pt", tmp_path / "m", tokenizer=vocab)
