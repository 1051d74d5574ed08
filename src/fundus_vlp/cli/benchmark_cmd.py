"""``fundus-vlp benchmark --models DIR... --experiments NAME... [--modes ...] [--shots 1,5,10] [--folds N]
[--reference DIR] [--out DIR] [key=value ...]``."""
from __future__ import annotations

import argparse

HELP = """Compare several models on the same experiments: every model on the same seeded folds and splits, one
table (benchmark.md, benchmark.csv, benchmark.json) of mean ± 95 % t-interval over folds per setting and
metric, paired tests of every model against the reference (DeLong for AUC, a paired bootstrap over each
fold's test images otherwise) with Holm-adjusted p-values marked in the table (▲ better / ▼ worse), a forest
plot of the differences (forest.png) and a rank summary.

Each model uses its own preprocessing; image features are cached per model (<out>/features) and every
finished model × experiment × mode cell is kept (<out>/cells), so re-running with a model or an experiment
added computes only what is new, and an interrupted benchmark resumes where it stopped.

Image-only models (no text tower, e.g. an imported RETFound) run linear probe, fine-tuning and the image-only
few-shot adapters (prototype, knn, linear_probe); zero-shot and prompt-based adapters show
"image-only model: skipped".

  fundus-vlp benchmark --models runs/demo-x/keepfit_v2 runs/demo-x/clip retfound/ \\
      --experiments demo:demo_seen demo:demo_unseen --shots 1,5,10 --folds 5 --out runs/benchmark
  fundus-vlp benchmark --models A B --experiments 08_ODIR200x3 dataframe_dir=DF image_root=IMG \\
      eval.few_shot.methods=[prototype,tip_adapter_f] metrics=[aca,auc,f1_macro]

key=value overrides set BenchmarkCfg fields (metrics, n_boot, alpha, ...) and, under eval., every
`fundus-vlp eval` option (eval.linear_probe.c_grid=[0.1,1], eval.demo.n_eval_per_class=20, ...).
"""


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="compare several models on the same folds with paired statistics",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=[], metavar="DIR", help="model folders or pretraining run folders")
    p.add_argument("--experiments", nargs="+", default=[], metavar="NAME",
                   help="built-in experiments, experiment YAMLs or demo:<name>")
    p.add_argument("--modes", help="comma list from zero-shot, few-shot, linear-probe, fine-tune "
                                   "(default zero-shot,few-shot,linear-probe)")
    p.add_argument("--shots", help="few-shot shots per class, comma list (default 1,5,10)")
    p.add_argument("--few-shot-methods", help="comma list of few-shot adapters (default prototype,linear_probe)")
    p.add_argument("--folds", type=int, help="seeded folds (default 5)")
    p.add_argument("--reference", metavar="DIR", help="the model every other one is compared with (default: the "
                                                      "first of --models)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/benchmark); re-use it to resume")
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                   help="YAML file of BenchmarkCfg fields (repeatable; later files win)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (see above)")
    p.set_defaults(func=run)


def _split(text: str) -> list:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    from ..config.loading import build_config
    from ..eval.benchmark import BenchmarkCfg, run_benchmark

    # `--models A B key=value`: argparse gives the trailing overrides to the list option
    overrides = list(args.overrides)
    for attr in ("models", "experiments"):
        values = getattr(args, attr)
        overrides += [v for v in values if "=" in v and not v.startswith(("/", "."))]
        setattr(args, attr, [v for v in values if v not in overrides])
    cfg = build_config(BenchmarkCfg, args.config, overrides)
    if args.models:
        cfg.models = args.models
    if args.experiments:
        cfg.experiments = args.experiments
    if args.modes:
        cfg.modes = _split(args.modes)
    if args.shots:
        cfg.eval.few_shot.shots = [int(s) for s in _split(args.shots)]
    if args.few_shot_methods:
        cfg.eval.few_shot.methods = _split(args.few_shot_methods)
    if args.folds:
        cfg.eval.folds = args.folds
    if args.reference:
        cfg.reference = args.reference
    if args.out:
        cfg.output_dir = args.out
    cfg = type(cfg)(**{**cfg.__dict__})  # re-validate after the flags
    result = run_benchmark(cfg)
    print(result["report"]["markdown"])
    print(f"{result['computed']} cells computed, {result['reused']} reused; {result['seconds']:.0f} s; "
          f"results in {result['out_dir']} (benchmark.md, benchmark.csv, benchmark.json, forest.png)")
    return 0
