"""The WordPiece vocabulary learnt by stage 0: ids that depend on the vocabulary alone."""
from fundus_vlp.models.wordpiece import SPECIAL_TOKENS, _renumbered, train_wordpiece_tokenizer

CORPUS = ["microaneurysms and haemorrhages in the macula", "hard exudates near the macula",
          "haemorrhages and exudates", "视网膜出血 and macula", "microaneurysms"] * 3


def test_renumbering_puts_special_tokens_first_then_sorted_tokens():
    vocab = {"##b": 0, "[SEP]": 1, "a": 2, "[PAD]": 3, "[UNK]": 4, "[CLS]": 5, "[MASK]": 6, "##a": 7}
    assert list(_renumbered(vocab)) == [*SPECIAL_TOKENS, "##a", "##b", "a"]
    assert list(_renumbered(vocab).values()) == list(range(8))


def test_trained_vocabulary_is_numbered_by_its_tokens_and_still_splits_words():
    tok = train_wordpiece_tokenizer(CORPUS, vocab_size=200, min_frequency=2)
    vocab = tok.get_vocab()
    assert vocab == _renumbered(vocab)
    ids = tok("haemorrhages near 视网膜")["input_ids"]
    assert ids[0] == vocab["[CLS]"] and ids[-1] == vocab["[SEP]"] and vocab["[UNK]"] not in ids
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "haemorrhagesnear视网膜"
