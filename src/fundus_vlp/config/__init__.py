"""Typed configuration: model architecture + preprocessing dataclasses (``model``), the architecture
registry (``registry``) and the one loader that builds every config dataclass (``schema``: dicts and
instances; ``loading``: YAML files and ``key=value`` overrides on top)."""
from .schema import ConfigError, from_dict, to_dict
from .model import (LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, AugmentCfg, BugCompatCfg, DecoderCfg, ModelCfg,
                    PreprocessCfg, TextCfg, VisionCfg)

__all__ = ["LOGIT_SCALE_INIT", "LOGIT_SCALE_MAX", "AugmentCfg", "BugCompatCfg", "ConfigError", "DecoderCfg",
           "ModelCfg", "PreprocessCfg", "TextCfg", "VisionCfg", "from_dict", "to_dict"]
