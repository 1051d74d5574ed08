"""Image-conditioned caption decoder (KeepFIT V2 generative branch, inferred:
docs/reference.md#keepfit-v2-inferred).

A BERT-style causal decoder (transformers ``BertLMHeadModel`` with cross-attention) that attends to
the image tower's grid/patch tokens, projected to the decoder width. It uses the text tower's
tokenizer: [CLS] starts a caption and [SEP] ends it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config import DecoderCfg


def _decoder_config(cfg: DecoderCfg, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        max_position_embeddings=max(cfg.max_length, 64),
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=True,
    )


class CaptionDecoder(nn.Module):
    def __init__(self, cfg: DecoderCfg, image_width: int, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
        super().__init__()
        from transformers import BertLMHeadModel

        self.cfg = cfg
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.image_proj = nn.Sequential(nn.Linear(image_width, cfg.hidden_size), nn.LayerNorm(cfg.hidden_size))
        self.lm = BertLMHeadModel(_decoder_config(cfg, vocab_size, pad_id, bos_id, eos_id))

    def init_from_text_encoder(self, text_encoder: nn.Module) -> None:
        """Copy embeddings and self-attention/FFN weights from a BERT text encoder (e.g. the stage-0 MLM model).

        Cross-attention and the LM head transform stay freshly initialised. Position and token tables of other
        lengths share their leading rows: the decoder's position table may be shorter or longer, and its
        vocabulary may extend the encoder's with tokens added at the end
        (``Tokenizer.with_characters_of``).
        """
        src = text_encoder.state_dict()
        dst = self.lm.bert.state_dict()
        copied = 0
        for key, value in src.items():
            if key in dst and dst[key].shape == value.shape:
                dst[key] = value.clone()
                copied += 1
            elif (key in dst and key.endswith(("position_embeddings.weight", "word_embeddings.weight"))
                  and dst[key].shape[1] == value.shape[1]):
                rows = min(dst[key].shape[0], value.shape[0])
                dst[key][:rows] = value[:rows]
                copied += 1
        if copied == 0:
            raise ValueError("decoder.init_from_text: no weights matched; hidden sizes must agree")
        self.lm.bert.load_state_dict(dst)

    def hidden_states(self, image_tokens: torch.Tensor, input_ids: torch.Tensor,
                      image_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Decoder hidden states B×L×H (causal self-attention + cross-attention to the image tokens).

        ``image_mask`` (B×N, 1 = attend) hides padding tokens, e.g. the empty image slots of a case with
        fewer images than the batch's largest case."""
        memory = self.image_proj(image_tokens)
        attention_mask = (input_ids != self.pad_id).long()
        return self.lm.bert(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=memory,
                            encoder_attention_mask=image_mask).last_hidden_state

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.cls(hidden)

    def forward(self, image_tokens: torch.Tensor, input_ids: torch.Tensor,
                image_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher-forced logits B×L×V; the loss shifts them (``losses.caption.caption_loss``)."""
        return self.lm_head(self.hidden_states(image_tokens, input_ids, image_mask))

    def scored_logits(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, scored: torch.Tensor,
                      image_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [N, V] only where a next token is scored (``scored``: B×(L-1) from ``target_positions``)."""
        return self.lm_head(self.hidden_states(image_tokens, input_ids, image_mask)[:, :-1][scored])

    @torch.no_grad()
    def generate(self, image_tokens: torch.Tensor, max_length: Optional[int] = None, num_beams: int = 1,
                 no_repeat_ngram_size: int = 0, image_mask: Optional[torch.Tensor] = None,
                 use_cache: bool = True, length_penalty: float = 1.0, early_stopping="never",
                 min_new_tokens: int = 0) -> torch.Tensor:
        """Greedy (num_beams=1) or beam-search decoding with transformers' ``generate`` (key/value cached).

        Beam scores are summed log-probabilities / generated length ** ``length_penalty``; ``early_stopping``
        "never" searches until no unfinished beam can still win at ``max_length``. The end token is
        forbidden before ``min_new_tokens`` tokens."""
        memory = self.image_proj(image_tokens)
        extra = {} if image_mask is None else {"encoder_attention_mask": image_mask}
        start = torch.full((memory.shape[0], 1), self.bos_id, dtype=torch.long, device=memory.device)
        return self.lm.generate(
            input_ids=start,
            encoder_hidden_states=memory,
            max_length=max_length or self.cfg.max_length,
            num_beams=num_beams,
            do_sample=False,
            min_new_tokens=min_new_tokens or None,
            no_repeat_ngram_size=no_repeat_ngram_size,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            use_cache=use_cache,
            # Each new token attends to cached keys/values instead of re-running the whole prefix. A BERT
            # decoder with cross-attention needs an encoder-decoder cache; transformers' default cache for
            # it lacks the cross-attention half.
            **({"cache": _encoder_decoder_cache()} if use_cache else {}),
            **({"length_penalty": length_penalty, "early_stopping": early_stopping} if num_beams > 1 else {}),
            **extra,
        )


def _encoder_decoder_cache():
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    return EncoderDecoderCache(DynamicCache(), DynamicCache())
