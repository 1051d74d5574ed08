import pytest
import torch

from fundus_vlp.config import DecoderCfg
from fundus_vlp.models.decoder import CaptionDecoder


@pytest.mark.parametrize("num_beams", [1, 3])
def test_key_value_cache_gives_the_uncached_tokens(num_beams):
    torch.manual_seed(0)
    cfg = DecoderCfg(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, max_length=16)
    decoder = CaptionDecoder(cfg, image_width=24, vocab_size=50, pad_id=0, bos_id=1, eos_id=2).eval()
    image_tokens = torch.randn(3, 5, 24)
    image_mask = torch.ones(3, 5, dtype=torch.long)
    image_mask[1, 3:] = 0  # a case with fewer images: padded slots must stay hidden with the cache too
    kwargs = dict(max_length=16, num_beams=num_beams, image_mask=image_mask)
    cached = decoder.generate(image_tokens, use_cache=True, **kwargs)
    uncached = decoder.generate(image_tokens, use_cache=False, **kwargs)
    assert cached.shape[1] > 4
    assert torch.equal(cached, uncached)


def test_init_from_text_encoder_shares_leading_rows_of_larger_tables():
    """A decoder whose vocabulary extends the encoder's (tokens added at the end) and whose position table is
    longer keeps the encoder's rows for what they share; the new rows stay as initialised."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=24), add_pooling_layer=False)
    decoder = CaptionDecoder(DecoderCfg(enabled=True, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                        max_length=40, dropout=0.0), 8, 23, 0, 2, 3)
    new_rows = decoder.lm.bert.embeddings.word_embeddings.weight[20:].detach().clone()
    decoder.init_from_text_encoder(encoder)
    emb, src = decoder.lm.bert.embeddings, encoder.embeddings
    assert torch.equal(emb.word_embeddings.weight[:20], src.word_embeddings.weight)
    assert torch.equal(emb.word_embeddings.weight[20:], new_rows)
    assert torch.equal(emb.position_embeddings.weight[:24], src.position_embeddings.weight)
    assert torch.equal(decoder.lm.bert.encoder.layer[0].attention.self.query.weight,
                       encoder.encoder.layer[0].attention.self.query.weight)
