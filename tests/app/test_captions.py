"""A decoder that writes the same caption whatever the image is shown as "caption (low confidence)", not as a
finding: its caption is no more likely with the image than with a flat one."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fundus_vlp.app.analysis import Analyzer
from fundus_vlp.app.captions import GROUNDING_MIN, caption_grounding, captions_html
from fundus_vlp.app.uploads import check_uploads
from fundus_vlp.factory import create_model


def _uploads(tmp_path, n=3):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"eye{i}.png")
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), np.uint8)).save(paths[-1])
    return check_uploads(paths)


def test_a_decoder_that_ignores_the_image_is_shown_as_low_confidence(tiny_overrides, tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides, **{"decoder.enabled": True}).eval()
    uploads = _uploads(tmp_path)
    norm = model.decoder.image_proj[1]  # the image reaches the decoder only through this projection
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.zero_()
    result = Analyzer(model, tmp_path).run(uploads, ["normal", "glaucoma"])
    assert len(set(result.captions)) == 1  # the same caption for every image
    grounding = caption_grounding(model, uploads.images, result.captions)
    assert all(abs(g) < 1e-4 for g in grounding)
    page = captions_html(result.names, result.captions, grounding)
    assert page.count('data-confidence="low"') == 3 and page.count("caption (low confidence)") == 3


def test_a_caption_that_rests_on_its_image_is_shown_plainly():
    page = captions_html(["a.png", "b.png"], ["cup enlarged", "drusen"], [GROUNDING_MIN + 0.5, GROUNDING_MIN - 0.05])
    assert '<li data-image="a.png"><b>a.png</b>: cup enlarged</li>' in page
    assert 'data-image="b.png" data-confidence="low"' in page and "-0.05" not in page and "+0.05" in page
    assert captions_html(["a.png"], None) == ""
