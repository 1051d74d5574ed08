"""Zero-shot classification with domain-knowledge prompt ensembles: the prototypes shared by the Python API
(``FundusCLIP.classify``), ``predict``, evaluation and the ONNX runtime.

A class prototype is the mean of the unit text embeddings of its prompt ensemble ([class name] + the
knowledge base's descriptions, each in every template), **re-normalised** to unit length. The official
code does not re-normalise, which down-weights classes whose
descriptions disagree; ``normalize=False`` reproduces it. The knowledge base is never mutated (the
official ``compute_text_embeddings`` appends class names to the global dictionary).

Multi-label mode scores each class independently: p_k = sigmoid(s·(v·t⁺_k − v·t⁻_k)), i.e. the softmax
over a positive/negative prompt pair ("... of glaucoma" vs "... with no glaucoma").
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..data.prompts import NEGATIVE_TEMPLATE, ZERO_SHOT_TEMPLATE, fill_template, zero_shot_prompts

DEFAULT_TEMPLATES: Tuple[str, ...] = (ZERO_SHOT_TEMPLATE,)  # "A fundus photograph of [CLS]"
DEFAULT_NEGATIVE_TEMPLATES: Tuple[str, ...] = (NEGATIVE_TEMPLATE,)  # "A fundus photograph with no [CLS]"


def _slot(template: str) -> str:
    """Accept open_clip-style ``{}`` as well as the package's ``[CLS]`` slot."""
    template = template.replace("{}", "[CLS]")
    if "[CLS]" not in template:
        raise ValueError(f"prompt template {template!r} has no [CLS] (or {{}}) slot")
    return template


def load_knowledge(name: Optional[str]):
    """The named knowledge base (``fundus_vlp.data.knowledge``), or None for bare class names."""
    if not name:
        return None
    from ..data.knowledge import KnowledgeBase

    return KnowledgeBase.load(name)


def display_names(knowledge, classnames: Sequence[str]) -> List[str]:
    """The class names prompts use: each class's ``name`` in the knowledge base (e.g. its Chinese name in
    ``fundus_zh``) when the entry has one, else the class name unchanged."""
    return [knowledge.display_name(c) if knowledge is not None else c for c in classnames]


def descriptions_of(knowledge, label: str) -> List[str]:
    """A fresh list of the label's expert descriptions ([] when unknown); never the KB's own list."""
    return knowledge.descriptions(label) if knowledge is not None else []


def class_prompts(classname: str, templates: Sequence[str] = DEFAULT_TEMPLATES, knowledge=None) -> List[str]:
    """The prompt ensemble of one class (duplicates removed, order kept)."""
    descriptions = descriptions_of(knowledge, classname)
    prompts: List[str] = []
    for template in templates:
        prompts += zero_shot_prompts(classname, descriptions, _slot(template))
    return list(dict.fromkeys(prompts))


def negative_prompts(classname: str, negative_templates: Sequence[str] = DEFAULT_NEGATIVE_TEMPLATES) -> List[str]:
    """The "no [CLS]" prompts of one class (bare name, no descriptions): the negative half of a multi-label pair."""
    return list(dict.fromkeys(fill_template(_slot(t), classname) for t in negative_templates))


@torch.no_grad()
def encode_texts(model, texts: Sequence[str], batch_size: int = 64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Unit-norm projected text embeddings, P×D (float32, on CPU)."""
    if getattr(model, "is_image_only", False):
        from .errors import image_only_error

        raise image_only_error("text embeddings (zero-shot prompts)")
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        ids = model.tokenizer(list(texts[i:i + batch_size])).to(device)
        out.append(model.encode_text(ids, normalize=True, project=True).float().cpu())
    return torch.cat(out)


def prototypes_from_embeddings(groups: Iterable[torch.Tensor], normalize: bool = True) -> torch.Tensor:
    """K×D: the mean of each group of unit embeddings, re-normalised unless ``normalize=False`` (bug-compat)."""
    protos = torch.stack([g.mean(dim=0) for g in groups])
    return F.normalize(protos, dim=-1) if normalize else protos


def build_zero_shot_classifier(model, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                               knowledge=None, normalize: bool = True,
                               device: str | torch.device = "cpu") -> torch.Tensor:
    """Class prototypes T (K×D) from prompt ensembles (open_clip ``build_zero_shot_classifier`` + FLAIR EK)."""
    groups = [encode_texts(model, class_prompts(c, templates, knowledge), device=device) for c in classnames]
    return prototypes_from_embeddings(groups, normalize)


def zero_shot_logits(features: torch.Tensor, prototypes: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """s · V Tᵀ, the model's own logit scale times the cosine similarities."""
    s = float(scale.detach()) if torch.is_tensor(scale) else float(scale)
    return s * features.float() @ prototypes.float().T


def zero_shot_probs(features: torch.Tensor, prototypes: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    return zero_shot_logits(features, prototypes, scale).softmax(dim=-1)


def build_multilabel_classifier(model, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                                negative_templates: Sequence[str] = DEFAULT_NEGATIVE_TEMPLATES, knowledge=None,
                                normalize: bool = True, device: str | torch.device = "cpu"):
    """(positive K×D, negative K×D) prototypes; negatives use the bare class name in each negative template."""
    return (build_zero_shot_classifier(model, classnames, templates, knowledge, normalize, device),
            negative_prototypes(model, classnames, negative_templates, normalize, device))


def negative_prototypes(model, classnames: Sequence[str],
                        negative_templates: Sequence[str] = DEFAULT_NEGATIVE_TEMPLATES, normalize: bool = True,
                        device: str | torch.device = "cpu") -> torch.Tensor:
    """K×D prototypes of "no [CLS]" prompts, the negative half of each multi-label prompt pair."""
    groups = [encode_texts(model, negative_prompts(c, negative_templates), device=device) for c in classnames]
    return prototypes_from_embeddings(groups, normalize)


def multilabel_logits(features: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                      scale: float | torch.Tensor) -> torch.Tensor:
    """N×K pair logits s·(v·t⁺ − v·t⁻): the log-odds of each label (temperature scaling divides these)."""
    s = float(scale.detach()) if torch.is_tensor(scale) else float(scale)
    return s * (features.float() @ positive.float().T - features.float() @ negative.float().T)


def multilabel_scores(features: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                      scale: float | torch.Tensor) -> torch.Tensor:
    """Per-class probabilities N×K: softmax over each (positive, negative) prompt pair."""
    return torch.sigmoid(multilabel_logits(features, positive, negative, scale))
