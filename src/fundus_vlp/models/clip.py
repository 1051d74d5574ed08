"""FundusCLIP: the dual encoder shared by every method, with an optional caption decoder (CoCa-like)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..config import ModelCfg
from ..hub import save_pretrained
from .decoder import CaptionDecoder
from .errors import image_only_error
from .text import TextTower
from .vision import ImageTower


class FundusCLIP(nn.Module):
    """Image tower + text tower + learnable temperature (+ caption decoder when ``cfg.decoder.enabled``).

    Embeddings are unit vectors of size ``cfg.embed_dim``; ``logit_scale`` stores log(1/τ) and is
    clamped to [0, ln 100] (multiplier at most 100, as FLAIR). With ``cfg.text = None`` the model is
    image-only (e.g. RETFound): ``text`` and ``logit_scale`` are None and text-needing calls raise.
    """

    def __init__(self, cfg: ModelCfg, pad_token_id: Optional[int] = None, vocab_size: Optional[int] = None,
                 bos_token_id: int = 101, eos_token_id: int = 102):
        super().__init__()
        self.cfg = cfg
        self.visual = ImageTower(cfg.vision, cfg.embed_dim, cfg.projection_bias)
        self.text: Optional[TextTower] = None
        self.logit_scale: Optional[nn.Parameter] = None
        if cfg.text is not None:
            if pad_token_id is None:
                raise ValueError("a model with a text tower needs the tokenizer's pad_token_id")
            self.text = TextTower(cfg.text, cfg.embed_dim, pad_token_id, vocab_size, cfg.projection_bias)
            self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        self.decoder: Optional[CaptionDecoder] = None
        if cfg.decoder.enabled:
            if vocab_size is None or pad_token_id is None:
                raise ValueError("the caption decoder needs a tokenizer (vocab_size, pad_token_id)")
            self.decoder = CaptionDecoder(cfg.decoder, self.visual.width, vocab_size, pad_token_id, bos_token_id,
                                          eos_token_id)
            if cfg.decoder.init_from_text:
                if self.text is None:
                    raise ValueError("decoder.init_from_text needs a text tower; this model is image-only")
                self.decoder.init_from_text_encoder(self.text.transformer)

    @property
    def is_image_only(self) -> bool:
        return self.text is None

    # -- encoders (open_clip surface) -------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, normalize: bool = True, project: bool = True) -> torch.Tensor:
        """Projected unit embeddings; ``project=False`` gives the raw pooled trunk features (linear probes)."""
        return self.visual(images, project=project, normalize=normalize)

    def encode_text(self, input_ids: torch.Tensor, normalize: bool = True, project: bool = True) -> torch.Tensor:
        if self.text is None:
            raise image_only_error("encode_text")
        return self.text(input_ids, project=project, normalize=normalize)

    def encode_image_with_tokens(self, images: torch.Tensor):
        """(embedding, grid tokens) from a single trunk pass — the generative branch needs both."""
        return self.visual.forward_with_tokens(images)

    def scale(self) -> torch.Tensor:
        """The logit multiplier exp(clamp(logit_scale)) used by every contrastive loss."""
        if self.logit_scale is None:
            raise image_only_error("an image-text logit scale")
        return self.logit_scale.clamp(0.0, self.cfg.logit_scale_max).exp()

    def zero_shot_scale(self) -> torch.Tensor:
        """The multiplier of zero-shot logits: the learned one, or the fixed ``cfg.zero_shot_scale`` of an
        imported model whose official evaluation uses a constant (ViLReF: 100)."""
        learned = self.scale()
        if self.cfg.zero_shot_scale is None:
            return learned
        return torch.tensor(float(self.cfg.zero_shot_scale), dtype=learned.dtype, device=learned.device)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Called after each optimiser step (clamps the logit scale)."""
        if self.logit_scale is not None:
            self.logit_scale.clamp_(0.0, self.cfg.logit_scale_max)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {
            "image_features": self.encode_image(images),
            "text_features": self.encode_text(input_ids),
            "logit_scale": self.scale(),
        }

    # -- inference on images and texts (the inference unit, fundus_vlp/inference/) ----------------------
    def classify(self, images, labels, domain_knowledge=True, multilabel: bool = False, batch_size: int = 32,
                 device=None, progress=None, templates=None, calibration=None):
        """Zero-shot probabilities, a pandas DataFrame: rows = images (index: path or ``image_<i>``), columns = labels.

        ``images``: a folder, image paths, PIL images, uint8 H×W×3 arrays or 3×H×W float tensors (or a list).
        ``domain_knowledge``: True = prompt ensembles with the shipped knowledge base's descriptions, False =
        bare label names, or a knowledge-base name/object. ``multilabel``: each label scored on its own
        (positive vs "no <label>" prompt), so a row does not sum to 1. ``device``: None keeps the model where
        it is; "auto"/"cpu"/"cuda" moves it. ``progress``: None = a bar from 64 images on, True/False, or a
        callable ``(done, total)``. ``calibration``: a ``Calibration`` or its JSON file. This is
        ``fundus_vlp.predict(...).probabilities``.
        """
        from ..inference.pipeline import classify

        if self.is_image_only:
            raise image_only_error("zero-shot classification (classify)")
        return classify(self, images, labels, domain_knowledge=domain_knowledge, multilabel=multilabel,
                        batch_size=batch_size, device=device, progress=progress, templates=templates,
                        calibration=calibration)

    def embed_images(self, images, batch_size: int = 32, device=None, progress=None) -> torch.Tensor:
        """N×D unit-norm float32 embeddings on the CPU; the inputs of ``classify``, in the same order."""
        from ..inference.embedding import embed_images

        return embed_images(self, images, batch_size=batch_size, device=device, progress=progress)

    def embed_texts(self, texts, device=None) -> torch.Tensor:
        """P×D unit-norm float32 embeddings on the CPU of a string or a list of strings."""
        from ..inference.embedding import embed_texts

        if self.is_image_only:
            raise image_only_error("embed_texts")
        return embed_texts(self, texts, device=device)

    # -- captioning --------------------------------------------------------------------------------
    def caption_logits(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError("this model has no caption decoder (model.decoder.enabled=false)")
        _, tokens = self.visual.forward_with_tokens(images)
        return self.decoder(tokens, input_ids)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_length: Optional[int] = None, num_beams: int = 1) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError("this model has no caption decoder; train it with method=keepfit_v2")
        _, tokens = self.visual.forward_with_tokens(images)
        return self.decoder.generate(tokens, max_length=max_length, num_beams=num_beams)

    # -- training utilities --------------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        if self.text is not None:
            self.text.set_grad_checkpointing(enable)

    def lock_text_tower(self, unlocked_layers: int = 0) -> None:
        if self.text is None:
            raise image_only_error("lock_text_tower")
        self.text.lock(unlocked_layers)

    # -- release format (hub.py; loading is fundus_vlp.from_pretrained) --------------------------------
    def save_pretrained(self, directory, card: Optional[dict] = None):
        return save_pretrained(self, directory, card=card)
