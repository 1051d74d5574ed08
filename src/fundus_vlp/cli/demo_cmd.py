"""``fundus-vlp demo``: the main job on the embedded demo world."""
from __future__ import annotations

import argparse

from .common import add_config_args
from ..config.loading import build_config

HELP = """Run KeepFIT V2 (stage 0 text pretraining + stage 1 hybrid knowledge injection), then CLIP, FLAIR and
KeepFIT v1 with the same budget, on the embedded demo world (generated and cached on first use, offline),
and print one table: zero-shot, few-shot (1/5/10 shots) and linear-probe balanced accuracy on seen
conditions (demo_seen), unseen conditions (demo_unseen: named only in elite captions and the text corpus)
and DR grading (local detail).

  fundus-vlp demo                      # the default budget (see README for the measured time)
  fundus-vlp demo steps=60 folds=2     # quicker
  fundus-vlp demo methods=[keepfit_v2,flair,vilref]
  fundus-vlp demo seeds=0,1,2          # pretraining repeated per seed: zero-shot mean ± std per method

Writes runs/demo-<time>/: one run folder per method (config, checkpoints, metrics, model), eval folders,
demo_table.md, demo_results.json and loss_curves.png.

  fundus-vlp demo bilingual=true       # cross-lingual zero-shot (English + Chinese demo world)

bilingual=true trains a WordPiece vocabulary and a small BERT from scratch on the English + Chinese demo
text, then KeepFIT V2 once on both caption languages and once on English only (caption_languages=[both,en]),
and prints zero-shot accuracy with English and with Chinese prompts (writes runs/demo-bilingual-<time>/).
"""


def register(sub) -> None:
    p = sub.add_parser("demo", help="train and evaluate every method on the embedded demo world", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoCfg, run_demo, run_demo_seeds
    from ..demo_bilingual import BilingualDemoCfg, run_bilingual_demo

    overrides = [_list_override(o) for o in args.overrides]
    bilingual = build_config(BilingualDemoCfg, args.config, overrides)  # the superset of both schemas
    if bilingual.bilingual:
        result = run_bilingual_demo(bilingual)
        print("\nZero-shot balanced accuracy (ACA) with English and Chinese prompts:\n")
        print(result["table"])
        print(f"\ntotal time {result['seconds'] / 60:.1f} min; run folder: {result['run_dir']}")
        for name, seconds in result["timings"].items():
            print(f"  {name}: {seconds:.0f} s")
        return 0
    cfg = build_config(DemoCfg, args.config, overrides)
    if cfg.seeds:
        result = run_demo_seeds(cfg)
        print("\nZero-shot balanced accuracy (ACA) on the demo world's evaluation sets, mean ± std over "
              "pretraining seeds:\n")
    else:
        result = run_demo(cfg)
        print("\nBalanced accuracy (ACA) on the demo world's evaluation sets "
              "(few-shot/linear-probe: mean ± std over seeded folds):\n")
    print(result["table"])
    print(f"\ntotal time {result['seconds'] / 60:.1f} min; run folder: {result['run_dir']}")
    for name, seconds in result["timings"].items():
        print(f"  {name}: {seconds:.0f} s")
    return 0


def _list_override(override: str) -> str:
    """``seeds=0,1,2`` -> ``seeds=[0,1,2]`` (the short form the help shows)."""
    key, _, value = override.partition("=")
    if key == "seeds" and value and not value.startswith("["):
        return f"{key}=[{value}]"
    return override
