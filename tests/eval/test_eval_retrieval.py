"""Retrieval recall@K on constructed features; caption metrics against pycocoevalcap."""
from __future__ import annotations

import contextlib
import io
import shutil

import pytest
import torch
import torch.nn.functional as F

from fundus_vlp.eval.captioning import caption_metrics, simple_tokenize
from fundus_vlp.eval.recall import recall_at_k


def test_perfect_and_known_ranks():
    img = torch.eye(4)
    # texts 0..3 match images 0..3; text 4 is a second caption of image 0
    txt = torch.eye(4)[[0, 1, 2, 3, 0]]
    r = recall_at_k(img, txt, [0, 1, 2, 3, 0], ks=(1, 2))
    assert r["i2t_r@1"] == 1.0 and r["t2i_r@1"] == 1.0

    # hand-computed: image 1 ranks text 2 (0.82) above its own text 1 (0.80); image 2 is orthogonal to all
    # texts (ties keep text order, so its caption is 3rd); text 2 ranks its image 2 (0.0) last
    img = F.normalize(torch.tensor([[1.0, 0, 0], [0.6, 0.8, 0.0], [0, 0, 1.0]]), dim=1)
    txt = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0.0], [0.9, 0.3, 0.0]]), dim=1)
    r = recall_at_k(img, txt, [0, 1, 2], ks=(1, 2, 3))
    assert [r["i2t_r@1"], r["i2t_r@2"], r["i2t_r@3"]] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [r["t2i_r@1"], r["t2i_r@2"], r["t2i_r@3"]] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert r["n_images"] == 3 and r["n_texts"] == 3


def _pycoco_direct(refs, cands):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {k: [simple_tokenize(c) for c in v] for k, v in refs.items()}
    res = {k: [simple_tokenize(cands[k])] for k in refs}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu = Bleu(4).compute_score(gts, res)[0]
        return bleu, Rouge().compute_score(gts, res)[0], Cider().compute_score(gts, res)[0]


REFS = {"a": ["A round hole at the fovea, a macular hole.", "Full-thickness macular hole."],
        "b": ["Many drusen near the macula."], "c": ["An enlarged optic cup (glaucoma)."]}
CANDS = {"a": "a hole at the fovea", "b": "many drusen at the macula", "c": "a normal optic disc"}


def test_caption_metrics_without_java_match_pycocoevalcap():
    out = caption_metrics(REFS, CANDS, use_java=False)
    bleu, rouge, cider = _pycoco_direct(REFS, CANDS)
    assert [out[f"bleu_{i}"] for i in range(1, 5)] == pytest.approx(bleu)
    assert out["rouge_l"] == pytest.approx(rouge) and out["cider"] == pytest.approx(cider)
    assert out["meteor"] is None and "Java" in out["notes"] and out["tokenizer"] == "python"
    assert simple_tokenize("Full-thickness macular hole, (FTMH).") == "full thickness macular hole ftmh"


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")
def test_caption_metrics_with_java_include_meteor():
    out = caption_metrics(REFS, CANDS, use_java=True)
    assert 0.0 < out["meteor"] < 1.0 and out["tokenizer"].startswith("ptb")
    assert out["bleu_1"] > 0


def test_caption_metrics_reject_mismatched_ids():
    with pytest.raises(ValueError):
        caption_metrics({"a": ["x"]}, {"b": "x"}, use_java=False)
