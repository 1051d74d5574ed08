"""fundus-vlp: fundus vision-language pretraining (KeepFIT V2, KeepFIT, FLAIR, ViLReF, CLIP)."""
from .version import __version__
