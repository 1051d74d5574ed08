"""How much a generated caption rests on its image, and how the page shows a caption that does not.

A caption decoder is a language model that looks at the image through cross-attention; a weak one learns to
write the most common report whatever the image (the same caption for every upload). Such text reads like a
finding but says nothing about the image. The check: the caption's mean log-probability per token given the
image, minus the same given a flat image (all pixels at the normalisation mean, i.e. no content). A decoder
that ignores its image scores 0; a caption below ``GROUNDING_MIN`` is shown as "caption (low confidence)".
"""
from __future__ import annotations

import html
from typing import List, Optional, Sequence

import torch

# nats per token: the caption must be at least this much more likely with its image than without any
GROUNDING_MIN = 0.1


def _mean_token_logprob(model, batch: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of each caption's tokens after the start token (teacher forcing), B."""
    logits = model.caption_logits(batch, ids[:, :-1]).float()
    target = ids[:, 1:]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target[..., None]).squeeze(-1)
    scored = (target != model.tokenizer.pad_token_id).float()
    return (logp * scored).sum(1) / scored.sum(1).clamp(min=1)


@torch.no_grad()
def caption_grounding(model, images: Sequence[torch.Tensor], captions: Sequence[str],
                      device: str = "cpu") -> List[float]:
    """Per caption: how much more likely (nats per token) it is given its image than given a flat image."""
    from ..data.transforms import build_transform

    preprocess = build_transform(model.cfg.preprocess, train=False)
    batch = torch.stack([preprocess(x) for x in images]).to(device)
    ids = model.tokenizer(list(captions)).to(device)
    with_image = _mean_token_logprob(model, batch, ids)
    without = _mean_token_logprob(model, torch.zeros_like(batch), ids)
    return (with_image - without).tolist()


def low_confidence(grounding: float) -> bool:
    return grounding < GROUNDING_MIN


def captions_html(names: Sequence[str], captions: Optional[Sequence[str]],
                  grounding: Optional[Sequence[float]] = None) -> str:
    """The generated captions; one that does not rest on its image is marked "caption (low confidence)"."""
    if not captions:
        return ""
    esc = html.escape
    items = []
    for i, (name, caption) in enumerate(zip(names, captions)):
        text = esc(caption) or "(empty)"
        if grounding is not None and low_confidence(grounding[i]):
            items.append(f'<li data-image="{esc(name)}" data-confidence="low" class="low-confidence"><b>{esc(name)}'
                         f'</b>: caption (low confidence): <i>{text}</i> <small>(the decoder writes nearly the same '
                         f'text without the image: {grounding[i]:+.2f} nats per token; not a finding)</small></li>')
        else:
            items.append(f'<li data-image="{esc(name)}"><b>{esc(name)}</b>: {text}</li>')
    return f'<div id="captions"><h3>Generated captions</h3><ul>{"".join(items)}</ul></div>'
