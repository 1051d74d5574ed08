"""Typed configuration: model architecture + preprocessing dataclasses (``model``), the architecture
registry (``registry``) and YAML/``key=value`` merging into any config dataclass (``loading``)."""
from .model import (LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, AugmentCfg, BugCompatCfg, DecoderCfg, ModelCfg,
                    PreprocessCfg, TextCfg, VisionCfg, from_dict, merge_dict, to_dict)

__all__ = ["LOGIT_SCALE_INIT", "LOGIT_SCALE_MAX", "AugmentCfg", "BugCompatCfg", "DecoderCfg", "ModelCfg",
           "PreprocessCfg", "TextCfg", "VisionCfg", "from_dict", "merge_dict", "to_dict"]
