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
