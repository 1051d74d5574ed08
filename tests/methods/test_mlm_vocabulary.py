"""Stage-0 vocabulary coverage: a WordPiece vocabulary learnt from the corpus plus the knowledge bases and
prompt templates leaves none of their tokens [UNK] (English and Chinese); the share is measured and reported."""
from __future__ import annotations

import json

import pytest

from fundus_vlp.cli.main import main
from fundus_vlp.methods.mlm import (MLMCfg, TokenizerTrainCfg, corpus_texts, knowledge_texts, trained_tokenizer,
                                    unk_share, vocabulary_coverage)

CORPUS = [
    "A macular hole is a round defect at the fovea.",
    "黄斑裂孔是黄斑中心视网膜全层的圆形裂孔。",
    "Cataract makes the fundus photograph hazy.",
    "白内障使整个眼底朦胧模糊。",
] * 5


def _options(include_knowledge: bool, **kw) -> MLMCfg:
    return MLMCfg(text_model="bert-from-scratch", caption_language="both",
                  tokenizer=TokenizerTrainCfg(train=True, vocab_size=8000, min_frequency=2,
                                              include_knowledge=include_knowledge), **kw)


def test_unk_share_counts_unknown_tokens_by_hand():
    from fundus_vlp.models.wordpiece import train_wordpiece_tokenizer

    tok = train_wordpiece_tokenizer(["glaucoma cup"] * 3, vocab_size=200, min_frequency=1)
    assert tok.tokenize("glaucoma 青光") == ["glaucoma", "[UNK]", "[UNK]"]  # unseen characters
    c = unk_share(tok, ["glaucoma 青光", "cup"])
    assert (c["unk_tokens"], c["tokens"], c["texts"]) == (2, 4, 2) and c["unk_share"] == 0.5


def test_knowledge_and_prompts_are_in_the_vocabulary_only_when_learnt_from(tmp_path):
    texts = knowledge_texts(["en", "zh"])
    assert {"knowledge", "prompts"} == set(texts["zh"]) and any("眼底照片" in p for p in texts["zh"]["prompts"])
    before = trained_tokenizer(_options(False), CORPUS, tmp_path / "before", True)
    after = trained_tokenizer(_options(True), CORPUS, tmp_path / "after", True)
    cov_before, cov_after = vocabulary_coverage(before, "both"), vocabulary_coverage(after, "both")
    assert cov_before["zh"]["knowledge"]["unk_share"] > 0.2 and cov_before["zh"]["prompts"]["unk_share"] > 0.2
    for lang in ("en", "zh"):
        for part in ("knowledge", "prompts"):
            assert cov_after[lang][part]["unk_tokens"] == 0 and cov_after[lang][part]["tokens"] > 1000, (lang, part)


@pytest.mark.slow
def test_stage0_on_the_bilingual_tiny_world_reports_full_coverage(tmp_path, capsys):
    args = ["text-pretrain", "demo=true", "demo_size=tiny", "caption_language=both", "text_model=bert-from-scratch",
            "tokenizer.train=true", "tokenizer.vocab_size=8000", "scratch.hidden_size=32", "scratch.num_layers=1",
            "scratch.num_heads=2", "scratch.intermediate_size=64", "scratch.max_position=64", "context_length=32",
            "max_steps=1", "batch_size=8", f"output_dir={tmp_path}", "run_name=s0", "device=cpu"]
    assert main(args) == 0
    assert "zh knowledge 0.0 % [UNK]" in capsys.readouterr().out
    coverage = json.loads((tmp_path / "s0" / "vocabulary_coverage.json").read_text())
    assert all(coverage[lang][part]["unk_tokens"] == 0 for lang in ("en", "zh") for part in ("knowledge", "prompts"))
    # the same world's corpus alone (the vocabulary stage 0 learnt before) leaves Chinese knowledge [UNK]
    texts = corpus_texts(_options(False, demo=True, demo_size="tiny"), exact_ban=False)
    alone = vocabulary_coverage(trained_tokenizer(_options(False), texts, tmp_path / "alone", True), "both")
    assert alone["zh"]["knowledge"]["unk_share"] > 0.05 and alone["zh"]["prompts"]["unk_share"] > 0.05
