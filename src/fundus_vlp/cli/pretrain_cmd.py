"""``fundus-vlp pretrain``: train one method (clip, flair, keepfit, vilref, keepfit_v2) from a config."""
from __future__ import annotations

import argparse

from .common import add_config_args
from ..config.loading import build_config, recipe_dir, recipe_names

HELP = """Pretrain a fundus vision-language model.

Choose the method with method=NAME (clip | flair | keepfit | vilref | keepfit_v2) and the architecture
with model=NAME (see `fundus-vlp list-models`); every other field of the run config can be set with
key=value (list items by index: data.public.0.root=/data), e.g.

  fundus-vlp pretrain method=flair model=rn18-minilm data.source=demo train.epochs=2
  fundus-vlp pretrain --config recipe:keepfit_v2 data.public.0.root=/data/FUNDUS --dry-run
  torchrun --nproc_per_node 4 -m fundus_vlp pretrain --config my_run.yaml

Packaged recipes (`--config recipe:NAME`, from any folder; copy one to start your own): {recipes}
  in {recipe_dir}  (text_pretrain is for `fundus-vlp text-pretrain`)

--dry-run builds every dataset, parses every dataframe row, decodes every image (JPEGs at reduced size),
prints every problem with its file and row and the plan (rows, classes, steps), and trains nothing.

The run directory (output_dir/run_name) receives config.yaml, env.json, metrics.jsonl, loss_curves.png,
TensorBoard logs, checkpoints/ and the exported model/ folder. Ctrl-C (SIGINT) or SIGTERM saves a
checkpoint and exits with status 130. Continue a stopped run with --resume latest run_name=NAME; a
changed config is refused unless --allow-config-change (each version is kept as config.N.yaml).
A run folder belongs to one run and one process (run.lock): a second run with the same run_name is refused
unless --resume, or --overwrite (the old folder is moved to NAME.replaced-TIME, never deleted). A run folder
can be copied or renamed and resumed there (--resume latest run_name=NEW_NAME).
"""


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a model with one of the five methods",
                       description=HELP.format(recipes=", ".join(recipe_names()), recipe_dir=recipe_dir()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="continue from the newest checkpoint of run_name (latest) or from a checkpoint file")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config differs from the run's config.yaml (the old one is kept)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run where run_name already holds one: the old folder is moved to NAME.replaced-TIME (never deleted)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate all data and print the plan; train nothing (exit status 1 if the data has problems)")
    p.add_argument("--workers", type=int, default=None, help="--dry-run: parallel image checks (default: the CPU cores)")
    add_config_args(p)
    p.set_defaults(func=run)


def _print_plan(cfg, plan) -> int:
    from ..data.loader import format_summary
    from .check_data_cmd import print_report

    print(f"dry run: method={cfg.method} model={cfg.init_from or cfg.model.name} run dir: {plan.run_dir}")
    print_report(plan.report)
    if plan.error:
        first = plan.error.splitlines()[0].rstrip(":")
        listed = " (listed above)" if not plan.report.ok and "problem(s) in the data" in first else ""
        print(f"the run would stop before training: {first}{listed}")
    else:
        print("data:\n" + format_summary(plan.summary))
        run = plan.run
        print(f"steps: {run.steps_per_epoch} per epoch x {run.epochs} epochs -> {run.total_steps} optimiser "
              f"steps (batch {cfg.train.batch_size} per rank, accum_freq {cfg.train.accum_freq})")
        if not plan.report.ok:
            print(f"with data.on_bad_image={cfg.data.on_bad_image} the run would start; bad rows are dropped "
                  "(missing/unreadable files) or skipped when drawn (images that do not decode)")
    print("nothing was trained (--dry-run)")
    return 0 if plan.ok(cfg.data.on_bad_image) else 1


def run(args: argparse.Namespace) -> int:
    from ..train.config import PretrainCfg
    from ..train.loop import dry_run, pretrain

    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    overrides += ["allow_config_change=true"] if args.allow_config_change else []
    overrides += ["overwrite=true"] if args.overwrite else []
    cfg = build_config(PretrainCfg, args.config, overrides, has_model=True)
    if args.dry_run:
        return _print_plan(cfg, dry_run(cfg, args.workers))
    result = pretrain(cfg)
    print(f"done: {result.steps} steps in {result.seconds:.1f}s ({result.samples_per_second:.1f} samples/s), "
          f"final loss {result.final_loss:.4f}\nrun: {result.run_dir}\nmodel: {result.model_dir}")
    return 0
