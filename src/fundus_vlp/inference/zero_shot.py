"""Zero-shot heads: prompt ensembles with domain knowledge -> class prototypes -> logits -> probabilities.
One ``ZeroShotHead`` serves the Python API (``FundusCLIP.classify``, ``predict``), evaluation, the web app,
``build-elite --model`` and the ONNX runtime, and ``to_probabilities`` is the one map from logits to
probabilities.

Prompts name a class by its knowledge-base display name (``KnowledgeBase.display_name``: the entry's own
``name``, e.g. its Chinese name in ``fundus_zh``, else the label) in every template, followed by the
knowledge base's descriptions when ``descriptions=True``; the negatives of multi-label pairs use the same
display name.

A class prototype is the mean of the unit text embeddings of its prompt ensemble ([class name] + the
knowledge base's descriptions, each in every template), **re-normalised** to unit length. The official
code does not re-normalise, which down-weights classes whose
descriptions disagree; ``normalize=False`` reproduces it. The knowledge base is never mutated (the
official ``compute_text_embeddings`` appends class names to the global dictionary).

Multi-label mode scores each class independently: p_k = sigmoid(s·(v·t⁺_k − v·t⁻_k)), i.e. the softmax
over a positive/negative prompt pair ("... of glaucoma" vs "... with no glaucoma").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..data.prompts import NEGATIVE_TEMPLATE, ZERO_SHOT_TEMPLATE, fill_template, zero_shot_prompts
from .embedding import encode_texts

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


# -- the head every entry point uses ---------------------------------------------------------------------

DEFAULT_KNOWLEDGE = "fundus_en"
Knowledge = Union[bool, None, str, Path, "KnowledgeBase"]  # noqa: F821


def resolve_knowledge(knowledge: Knowledge):
    """True -> the shipped English knowledge base; False/None -> none; a name, path or KnowledgeBase as given."""
    if knowledge is True:
        return load_knowledge(DEFAULT_KNOWLEDGE)
    if not knowledge:
        return None
    if isinstance(knowledge, (str, Path)):
        return load_knowledge(str(knowledge))
    return knowledge


def check_labels(labels: Union[str, Sequence[str]], multilabel: bool) -> List[str]:
    """The labels as a clean list; empty, repeated or (single-label) fewer than two labels are an error."""
    labels = [labels] if isinstance(labels, str) else [str(c).strip() for c in labels]
    if any(not c for c in labels):
        raise ValueError(f"empty label in {labels}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {labels}")
    if len(labels) < (1 if multilabel else 2):
        raise ValueError(f"single-label classification needs at least two labels, got {labels} "
                         "(or use multilabel=True for independent per-label probabilities)")
    return labels


@dataclass
class ZeroShotHead:
    """Class prototypes (K×D) for ``labels``, the negative prototypes of multi-label pairs (else None) and the
    model's logit scale: ``logits(features)`` then ``to_probabilities``."""

    labels: List[str]
    positive: torch.Tensor
    negative: Optional[torch.Tensor]
    scale: float

    @property
    def multilabel(self) -> bool:
        return self.negative is not None

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """N×K: s·V·Tᵀ (single-label) or the positive-minus-negative pair logits (multi-label)."""
        if self.negative is None:
            return zero_shot_logits(features, self.positive, self.scale)
        return multilabel_logits(features, self.positive, self.negative, self.scale)


def build_head(model, labels: Sequence[str], knowledge: Knowledge = True, multilabel: bool = False,
               templates: Optional[Sequence[str]] = None, negative_templates: Optional[Sequence[str]] = None,
               descriptions: bool = True, normalize: bool = True,
               device: str | torch.device = "cpu") -> ZeroShotHead:
    """The zero-shot head of ``labels``: each label is named by its display name in ``knowledge`` in every
    template, with the knowledge base's descriptions unless ``descriptions=False``; multi-label adds the
    "no <label>" prototypes. ``normalize=False`` keeps the official, un-normalised prototype means."""
    kb = resolve_knowledge(knowledge)
    names = display_names(kb, labels)
    positive = build_zero_shot_classifier(model, names, list(templates or DEFAULT_TEMPLATES),
                                          kb if descriptions else None, normalize, device)
    negative = negative_prototypes(model, names, list(negative_templates or DEFAULT_NEGATIVE_TEMPLATES), normalize,
                                   device) if multilabel else None
    scale = _zero_shot_scale(model)
    return ZeroShotHead(list(labels), positive, negative, float(scale.detach()) if torch.is_tensor(scale) else float(scale))


def to_probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """The one map from zero-shot logits to probabilities: softmax over the labels (single-label), or one
    sigmoid per label (multi-label). Calibration (``Calibration.apply``) replaces it when one is given."""
    z = logits if logits.is_floating_point() else logits.float()
    return torch.sigmoid(z) if multilabel else z.softmax(dim=-1)


def _zero_shot_scale(model):
    """The zero-shot multiplier: a model's fixed one where its official evaluation uses a constant (ViLReF: 100),
    else its learned logit scale (ONNX models have only the latter)."""
    fixed = getattr(model, "zero_shot_scale", None)
    return fixed() if callable(fixed) else model.scale()


def head_from_prompts(model, prompts: Dict[str, Sequence[str]], device: str | torch.device = "cpu") -> ZeroShotHead:
    """A single-label head whose classes are given by explicit prompt lists (e.g. the elite builder's modality
    prompts) instead of templates and a knowledge base; prototypes as in ``build_zero_shot_classifier``."""
    groups = [encode_texts(model, list(texts), device=device) for texts in prompts.values()]
    scale = _zero_shot_scale(model)
    return ZeroShotHead(list(prompts), prototypes_from_embeddings(groups), None,
                        float(scale.detach()) if torch.is_tensor(scale) else float(scale))
