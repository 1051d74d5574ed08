"""``fundus-vlp pretrain``: train one method (clip, flair, keepfit, vilref, keepfit_v2) from a config."""
from __future__ import annotations

import argparse

from .common import add_config_args
from ..config.loading import build_config

HELP = """Pretrain a fundus vision-language model.

Choose the method with method=NAME (clip | flair | keepfit | vilref | keepfit_v2) and the architecture
with model=NAME (see `fundus-vlp list-models`); every other field of the run config can be set with
key=value, e.g.

  fundus-vlp pretrain --config configs/recipes/keepfit_v2_demo.yaml train.epochs=3
  fundus-vlp pretrain method=flair model=rn18-minilm data.source=demo train.epochs=2
  torchrun --nproc_per_node 4 -m fundus_vlp pretrain --config my_run.yaml

The run directory (output_dir/run_name) receives config.yaml, env.json, metrics.jsonl, TensorBoard logs,
checkpoints/ and the exported model/ folder. Continue a killed run with --resume latest run_name=NAME.
"""


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a model with one of the five methods", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="continue from the newest checkpoint of run_name (latest) or from a checkpoint file")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.config import PretrainCfg
    from ..train.loop import pretrain

    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    cfg = build_config(PretrainCfg, args.config, overrides, has_model=True)
    result = pretrain(cfg)
    print(f"done: {result.steps} steps in {result.seconds:.1f}s ({result.samples_per_second:.1f} samples/s), "
          f"final loss {result.final_loss:.4f}\nrun: {result.run_dir}\nmodel: {result.model_dir}")
    return 0
