"""Import released weights of published retinal models as fundus-vlp release folders (``fundus-vlp import``).

One module per checkpoint family (``flair``, ``chinese_clip``, ``retfound``); ``checkpoint`` reads files
without unpickling and places tensors strictly; ``registry`` lists the formats.
"""
from .flair import flair_to_fundus_vlp, import_flair
from .registry import FORMATS, ImportFormat, import_weights

__all__ = ["FORMATS", "ImportFormat", "flair_to_fundus_vlp", "import_flair", "import_weights"]
