"""Build an elite image–caption set from atlas PDFs (``fundus-vlp build-elite``): figures and their
captions from the PDF's embedded images and text layer, panels split, modality classified, duplicates and
non-fundus figures rejected, and a review page. See ``docs/elite_builder.md``."""
from .build import ELITE_COLUMNS, REJECTED_COLUMNS, BuildReport, PdfResult, build_elite
from .config import EliteBuildCfg
from .modality import MODALITIES, MODALITY_PROMPTS, ModalityClassifier
from .pdfread import PdfError

__all__ = ["ELITE_COLUMNS", "REJECTED_COLUMNS", "BuildReport", "PdfResult", "build_elite", "EliteBuildCfg",
           "MODALITIES", "MODALITY_PROMPTS", "ModalityClassifier", "PdfError"]
