"""The embedded demo world: a seeded, procedurally generated fundus dataset for offline knowledge transfer.

It mirrors the real KeepFIT V2 setting at toy scale (``docs/data.md#the-demo-world``): a categorical public set (CFP,
seen conditions only, real dataframe format with its quirks), a small elite set of image-caption pairs in
three modalities (CFP, FFA-like, OCT-like) covering seen *and* unseen conditions, a text corpus, held-out
evaluation sets (seen, unseen, DR grading) and retrieval pairs.

Example::

    from fundus_vlp.demo_world import DemoWorldCfg, build_demo_world
    world = build_demo_world(DemoWorldCfg(seed=0))      # cached after the first call
    world.public_csv, world.elite_csvs["CFP"], world.eval_csvs["demo_unseen"]
    world.segmentation_csv                              # image, mask (label maps, segmentation.py)
"""
from .build import GENERATOR_VERSION, DemoWorld, DemoWorldCfg, build_demo_world, default_cache_dir
from .ontology import (CONDITIONS, FINDINGS, MODALITIES, SEEN_CONDITIONS, UNSEEN_CONDITIONS, Condition, Finding,
                       conditions_for_modality)
from .records import EXPERIMENTS, PUBLIC_SOURCES
from .render import render_case
from .scene import Case, sample_case
from .segmentation import SEGMENTATION_CLASSES, SEGMENTATION_EXPERIMENT
from .text import make_caption, make_corpus

__all__ = [
    "DemoWorldCfg",
    "DemoWorld",
    "build_demo_world",
    "default_cache_dir",
    "GENERATOR_VERSION",
    "CONDITIONS",
    "FINDINGS",
    "MODALITIES",
    "SEEN_CONDITIONS",
    "UNSEEN_CONDITIONS",
    "EXPERIMENTS",
    "SEGMENTATION_CLASSES",
    "SEGMENTATION_EXPERIMENT",
    "PUBLIC_SOURCES",
    "Condition",
    "Finding",
    "Case",
    "conditions_for_modality",
    "sample_case",
    "render_case",
    "make_caption",
    "make_corpus",
]
