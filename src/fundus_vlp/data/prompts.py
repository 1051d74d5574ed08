"""Categorical labels -> text prompts (docs/reference.md#flair-pretraining)."""
from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

import numpy as np

PRETRAIN_TEMPLATE = "A [ATR] fundus photograph of [CLS]"
ZERO_SHOT_TEMPLATE = "A fundus photograph of [CLS]"
NEGATIVE_TEMPLATE = "A fundus photograph with no [CLS]"
# Chinese zero-shot prompts ("a fundus photograph of [CLS]" / "a fundus photograph without [CLS]")
ZERO_SHOT_TEMPLATE_ZH = "一张[CLS]的眼底照片"
NEGATIVE_TEMPLATE_ZH = "一张没有[CLS]的眼底照片"
# language -> (knowledge base, zero-shot template, negative template)
PROMPT_LANGUAGES = {"en": ("fundus_en", ZERO_SHOT_TEMPLATE, NEGATIVE_TEMPLATE),
                    "zh": ("fundus_zh", ZERO_SHOT_TEMPLATE_ZH, NEGATIVE_TEMPLATE_ZH)}


def fill_template(template: str, category: str, attribute: str = "") -> str:
    """Replace [ATR]/[CLS] and collapse the double spaces an empty slot leaves."""
    text = template.replace("[ATR]", attribute).replace("[CLS]", category)
    return re.sub(r"\s+", " ", text).strip()


def sample_prompt(
    atributes: Sequence[str],
    categories: Sequence[str],
    rng: np.random.Generator,
    template: str = PRETRAIN_TEMPLATE,
    knowledge=None,
    augment: bool = False,
    mode: str = "replace",
) -> Tuple[str, str]:
    """One attribute and one category drawn uniformly per sample (re-drawn each epoch), then optional
    expert-knowledge augmentation. Returns ``(prompt, sampled_category)``; the contrastive target is
    built from the raw sampled category, not from the augmented text, as officially.
    """
    attribute = atributes[rng.integers(len(atributes))] if len(atributes) else ""
    category = categories[rng.integers(len(categories))] if len(categories) else ""
    prompt = fill_template(template, category, attribute)
    if augment and category and knowledge is not None:
        descriptions = knowledge.descriptions(category)
        if descriptions:
            prompt = augment_with_description(prompt, category, descriptions, rng, mode)
    return prompt, category


def augment_with_description(prompt: str, category: str, descriptions: Sequence[str], rng: np.random.Generator,
                             mode: str = "replace") -> str:
    """FLAIR: swap the class name for one of [name] + descriptions; RetiXfer: append one description."""
    if mode == "append":
        return f"{prompt}, {descriptions[rng.integers(len(descriptions))]}"
    if mode != "replace":
        raise ValueError(f"description mode must be replace or append, got {mode!r}")
    choices = [category] + [d for d in descriptions if d != category]
    return prompt.replace(category, choices[rng.integers(len(choices))])


def zero_shot_prompts(class_name: str, descriptions: Optional[Sequence[str]] = None,
                      template: str = ZERO_SHOT_TEMPLATE) -> list:
    """Prompt ensemble of a class: the name plus its descriptions, each in the template."""
    phrases = [class_name] + [d for d in (descriptions or []) if d != class_name]
    return [fill_template(template, p) for p in phrases]
