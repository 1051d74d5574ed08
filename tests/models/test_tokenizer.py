"""Tokenizer loading: every word of a vocabulary file must reach the tokenizer (never a silent all-[UNK])."""
import json

import pytest

from fundus_vlp.models.tokenizer import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "glaucoma", "optic", "disc", "cup", "##s"]


def _word_ids(tok: Tokenizer, text: str) -> list:
    ids = tok(text, context_length=16, padding="longest")[0].tolist()
    return ids[1:ids.index(tok.eos_token_id)]


@pytest.mark.parametrize("config", [None, {"name": "tiny"}, {"model_type": "bert"}],
                         ids=["vocab-only", "with-our-config", "with-hf-bert-config"])
def test_folder_with_only_vocab_txt_loads_every_word(tmp_path, config):
    # released BERT-style text towers often ship vocab.txt (and an HF config.json) but no tokenizer files
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_pretrained(str(tmp_path))
    assert len(tok) == len(VOCAB)
    assert _word_ids(tok, "Glaucoma: optic cups") == [5, 1, 6, 8, 9]  # lower-cased, ':' unknown, 'cups' = cup ##s
    assert tok.pad_token_id == 0 and tok.bos_token_id == 2 and tok.mask_token_id == 4


def test_tiny_test_tokenizer_knows_its_words(tiny_tokenizer_dir):
    # the fixture every tiny model uses: texts that differ must give different ids
    tok = Tokenizer.from_pretrained(str(tiny_tokenizer_dir))
    vocab = (tiny_tokenizer_dir / "vocab.txt").read_text().split("\n")
    assert len(tok) == len(vocab) - 1  # the file ends with a newline
    assert _word_ids(tok, "glaucoma near the macula") == [vocab.index(w) for w in ("glaucoma", "near", "the", "macula")]
    assert tok.hf.unk_token_id not in _word_ids(tok, "normal fundus photograph")


def test_with_characters_of_adds_each_unknown_character_once(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = Tokenizer.from_pretrained(str(tmp_path))
    reports = ["双眼视盘 cups", "视盘: glaucoma"]
    assert tok.unknown_share(reports) > 0.5
    wider, added = tok.with_characters_of(reports)
    assert added == sorted(set("双眼视盘:"))  # 'cups' and 'glaucoma' split into known pieces
    assert len(wider) == len(tok) + len(added) and len(tok) == len(VOCAB)  # the original is left as it was
    assert wider.unknown_share(reports) == 0.0
    ids = wider(reports[0], context_length=16)[0]
    assert wider.decode(ids) == "双眼视盘 cups"
    assert max(ids.tolist()) >= len(VOCAB) and _word_ids(wider, "glaucoma") == [5]  # new ids come last
    assert wider.with_characters_of(reports) == (wider, [])
