"""Errors shared by the model units (a leaf: imports nothing of the package)."""
from __future__ import annotations


def image_only_error(what: str) -> RuntimeError:
    """The one error every text-needing path raises on a model without a text tower."""
    return RuntimeError(f"image-only model: {what} needs a text tower, and this model has none "
                        "(use embed_images, a linear probe, fine-tuning or image-only few-shot adapters)")
