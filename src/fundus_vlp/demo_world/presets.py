"""Named sizes of the embedded demo world: ``tiny`` for tests, ``demo`` for `fundus-vlp demo`."""
from __future__ import annotations

from .build import DemoWorldCfg

PRESETS = {
    "tiny": dict(n_public=60, elite_per_modality={"CFP": 12, "FFA": 4, "OCT": 4}, n_eval_per_class=4,
                 n_retrieval=12, corpus_paragraphs=20, image_size=64, n_segmentation=12,
                 ffa_cases=14),
    "demo": dict(),  # the DemoWorldCfg defaults
}


def demo_world_cfg(size: str = "demo", seed: int = 0, chinese: bool = False) -> DemoWorldCfg:
    """The preset world; ``chinese=True``: the same world plus Chinese captions and corpus (bilingual)."""
    if size not in PRESETS:
        raise ValueError(f"unknown demo world size {size!r}; choose from {sorted(PRESETS)}")
    return DemoWorldCfg(seed=seed, chinese=chinese, **PRESETS[size])
