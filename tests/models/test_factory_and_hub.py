"""Model factory, towers, poolers and the safetensors release format."""
from __future__ import annotations

import json

import pytest
import torch

from fundus_vlp.factory import create_model, create_model_and_transforms, get_tokenizer
from fundus_vlp.factory import from_pretrained
from fundus_vlp.config import ConfigError
from fundus_vlp.hub import CheckpointError
from fundus_vlp.config.registry import get_model_config, list_models


def test_registry_lists_required_architectures():
    names = list_models()
    for required in ("tiny", "rn50-bioclinicalbert", "vitb16-bioclinicalbert", "rn50-minilm", "rn18-minilm"):
        assert required in names
    cfg = get_model_config("rn50-bioclinicalbert")
    assert cfg.vision.timm_model_name == "resnet50" and cfg.embed_dim == 512
    assert cfg.text.hf_model_name == "emilyalsentzer/Bio_ClinicalBERT"
    assert cfg.preprocess.mean is None and cfg.preprocess.resize_mode == "pad"


def test_unknown_model_and_override_typo_raise():
    with pytest.raises(KeyError, match="unknown model"):
        get_model_config("resnet-9000")
    with pytest.raises(ConfigError, match="text.poolnig: Key 'poolnig' not in 'TextCfg'"):
        get_model_config("tiny", {"text": {"poolnig": "cls"}})


def test_encoders_shapes_norms_and_grads(tiny_model):
    ids = tiny_model.tokenizer(["a fundus photograph of glaucoma", "normal"])
    images = torch.rand(2, 3, 64, 64)
    out = tiny_model(images, ids)
    assert out["image_features"].shape == (2, 32) and out["text_features"].shape == (2, 32)
    assert torch.allclose(out["image_features"].norm(dim=-1), torch.ones(2), atol=1e-5)
    loss = (out["image_features"] @ out["text_features"].T).sum() * out["logit_scale"]
    loss.backward()
    no_grad = [n for n, p in tiny_model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == [], f"parameters without gradient: {no_grad}"
    raw = tiny_model.encode_image(images, project=False)
    assert raw.shape == (2, tiny_model.visual.width)


def test_logit_scale_is_clamped(tiny_model):
    with torch.no_grad():
        tiny_model.logit_scale.fill_(10.0)
    assert float(tiny_model.scale().detach()) == pytest.approx(100.0)
    tiny_model.clamp_logit_scale()
    assert float(tiny_model.logit_scale.detach()) == pytest.approx(torch.log(torch.tensor(100.0)).item())


def test_masked_mean_pooling_ignores_padding(tiny_overrides):
    model = create_model("tiny", **tiny_overrides).eval()
    tok = model.tokenizer
    short = tok(["glaucoma"], context_length=8)
    long = tok(["glaucoma"], context_length=24)
    assert torch.allclose(model.encode_text(short), model.encode_text(long), atol=1e-5)


def test_flair_compat_pooling_includes_padding(tiny_overrides):
    model = create_model("tiny", **{**tiny_overrides, "text.pooling": "flair_compat"}).eval()
    tok = model.tokenizer
    ids = tok(["glaucoma"], context_length=12)
    hs = model.text.transformer(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(),
                                output_hidden_states=True).hidden_states
    manual = torch.stack([hs[1], hs[2], hs[-1]]).mean(dim=2).mean(dim=0)  # all positions, pads included
    assert torch.allclose(model.text.pool(ids), manual, atol=1e-6)
    assert not torch.allclose(model.text.pool(ids), model.text.pool(tok(["glaucoma"], context_length=6)), atol=1e-4)


def test_cls_pooling_takes_first_token(tiny_overrides):
    model = create_model("tiny", **{**tiny_overrides, "text.pooling": "cls"}).eval()
    ids = model.tokenizer(["optic disc"])
    last = model.text.hidden_states(ids)
    assert torch.allclose(model.text.pool(ids), last[:, 0])


def test_save_load_round_trip_is_exact(tiny_overrides, tmp_path):
    torch.manual_seed(1)
    model = create_model("tiny", **{**tiny_overrides, "decoder.enabled": True}).eval()
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= files
    loaded = from_pretrained(tmp_path / "m")
    images, ids = torch.rand(3, 3, 64, 64), model.tokenizer(["glaucoma", "normal fundus", "drusen"])
    assert torch.equal(model.encode_image(images), loaded.encode_image(images))
    assert torch.equal(model.encode_text(ids), loaded.encode_text(ids))
    assert torch.equal(model.caption_logits(images, ids), loaded.caption_logits(images, ids))
    assert torch.equal(loaded.tokenizer(["glaucoma"]), model.tokenizer(["glaucoma"]))
    # also through the factory and the classmethod
    assert torch.equal(create_model(tmp_path / "m").encode_image(images), model.encode_image(images))
    assert torch.equal(from_pretrained(tmp_path / "m").encode_text(ids), model.encode_text(ids))


def test_save_load_minilm_text_tower_offline(tmp_path):
    model = create_model("rn18-minilm", **{"preprocess.size": 64}).eval()
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())["model_cfg"]
    assert cfg["text"]["hf_config"]["hidden_size"] == 384 and cfg["text"]["pretrained"] is False
    loaded = from_pretrained(tmp_path / "m")
    ids = model.tokenizer(["macular hole"])
    assert torch.equal(model.encode_text(ids), loaded.encode_text(ids))


def test_corrupt_or_missing_release_files_give_clear_errors(tiny_model, tmp_path):
    with pytest.raises(CheckpointError, match="config.json: missing"):
        from_pretrained(tmp_path)
    tiny_model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(CheckpointError, match="model.safetensors"):
        from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        from_pretrained(tmp_path / "m")


def test_create_model_and_transforms_and_tokenizer(tiny_overrides):
    model, train_tf, eval_tf = create_model_and_transforms("tiny", **tiny_overrides)
    img = torch.rand(3, 50, 80)
    assert eval_tf(img).shape == (3, 64, 64) and train_tf(img).shape == (3, 64, 64)
    tok = get_tokenizer("tiny", **tiny_overrides)
    assert tok(["glaucoma"]).shape == (1, 32)
    assert tok.pad_token_id == 0


def test_gradient_checkpointing_keeps_outputs(tiny_overrides):
    torch.manual_seed(0)
    model = create_model("tiny-vit", **tiny_overrides).eval()
    images, ids = torch.rand(2, 3, 64, 64), model.tokenizer(["glaucoma", "normal"])
    before = model(images, ids)
    model.set_grad_checkpointing(True)
    after = model(images, ids)
    assert torch.allclose(before["image_features"], after["image_features"], atol=1e-5)
    assert torch.allclose(before["text_features"], after["text_features"], atol=1e-5)


def test_decoder_greedy_generation_matches_teacher_forced_argmax(tiny_overrides):
    torch.manual_seed(0)
    model = create_model("tiny", **{**tiny_overrides, "decoder.enabled": True}).eval()
    images = torch.rand(2, 3, 64, 64)
    out = model.generate(images, max_length=8)
    assert out.shape[0] == 2 and out[0, 0] == model.tokenizer.bos_token_id
    logits = model.caption_logits(images, out)
    # each generated token is the argmax given its prefix (until EOS/pad)
    for b in range(2):
        for t in range(1, out.shape[1]):
            if out[b, t - 1] in (model.tokenizer.eos_token_id, model.tokenizer.pad_token_id):
                break
            assert out[b, t] == logits[b, t - 1].argmax()
    beams = model.generate(images, max_length=8, num_beams=3)
    assert beams.shape[0] == 2


def test_a_model_folder_without_its_tokenizer_says_so(tiny_model, tmp_path):
    """Without the vocabulary, transformers would build a tokenizer of the 5 special tokens and the model would
    read every word as [UNK]: refused, naming the folder and what is missing."""
    from fundus_vlp.factory import from_pretrained
    from fundus_vlp.hub import CheckpointError

    folder = tiny_model.save_pretrained(tmp_path / "m")
    (folder / "tokenizer.json").unlink()  # tokenizer_config.json (special tokens only) stays
    with pytest.raises(CheckpointError, match=r"m: the tokenizer is missing \(none of tokenizer.json, vocab.txt"):
        from_pretrained(folder)

    other = tiny_model.save_pretrained(tmp_path / "other")  # with the vocabulary of another model
    from transformers import BertTokenizerFast

    (tmp_path / "v.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "eye"]) + "\n")
    BertTokenizerFast(vocab=str(tmp_path / "v.txt")).save_pretrained(str(other))
    with pytest.raises(CheckpointError, match=r"the tokenizer has 6 tokens but the text tower was trained with a "
                                              r"vocabulary of \d+"):
        from_pretrained(other)


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_an_unsafe_pytorch_model_bin_in_a_stage0_folder_is_named_not_safe(tiny_overrides, tmp_path):
    from transformers import BertConfig, BertModel

    from fundus_vlp.factory import create_model
    from fundus_vlp.hub import CheckpointError

    folder = tmp_path / "text_model"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=200)).save_pretrained(folder)
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")  # the same weights as a pickle that carries code too
    (folder / "model.safetensors").unlink()
    torch.save({**state, "extra": _Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        create_model("rn18-minilm", **tiny_overrides, **{"text.hf_model_name": str(folder)})
    assert f"{folder / 'pytorch_model.bin'}: not a safe checkpoint" in str(err.value)
