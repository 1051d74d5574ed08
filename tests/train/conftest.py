"""Fixtures of the training tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A 2-layer, 32-wide BERT masked-LM folder on the tiny test vocabulary (a stand-in for a hub encoder;
    dropout 0.1, so a run's random state matters)."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(tiny_tokenizer_dir))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    d = tmp_path_factory.mktemp("tiny_mlm")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d
