"""``fundus-vlp eval MODE --model DIR --experiment NAME [--config F] [key=value ...]``.

``--model`` takes a model folder or a pretraining run folder (its ``model/``); ``retrieval`` alone needs no
experiment when ``retrieval.captions`` and ``retrieval.image_root`` are given."""
from __future__ import annotations

import argparse
import textwrap

MODE_HELP = textwrap.dedent("""\
    modes (comma-separated to run several; "all" = zero-shot,few-shot,linear-probe):
      zero-shot     class prototypes from prompt ensembles (class name + knowledge-base descriptions);
                    no training, no folds: reported on the whole set and on the folds' test splits
      few-shot      CLIP-Adapter, Tip-Adapter, Tip-Adapter-F, a linear probe, class prototypes and kNN on
                    k shots per class (few_shot.shots=[1,5,10]); alpha/beta/ratio/C/tau/k chosen on
                    validation shots; image-only models run linear_probe, prototype and knn
      linear-probe  scikit-learn logistic regression on frozen features, C chosen on validation
                    (linear_probe.project_features=false probes the raw trunk features)
      fine-tune     image tower + linear head; finetune.mode=ft|lp_ft|last_block|frozen_bn,
                    early stopping and model selection on validation macro-F1
      retrieval     image<->text recall@1/5/10 on a caption set; BLEU/ROUGE-L/CIDEr (+METEOR with
                    Java) for models with a caption decoder
      segmentation  a segmentation-models-pytorch decoder (UNet; DPT for ViTs) on the image trunk, for
                    segmentation experiments (task: segmentation); Dice and IoU per class, epoch chosen
                    on validation Dice; segmentation.finetune=frozen|last_block|full,
                    segmentation.inits=[pretrained,random] (imagenet needs
                    segmentation.imagenet_checkpoint=FILE, a local timm checkpoint)
      report        report generation: the caption decoder (the model's, or a fresh one on its image
                    tower) fine-tuned on case-level reports (--annotations: FFA-IR JSON, an image-caption
                    CSV such as KeepFIT's FFA.csv, or "demo"); epoch chosen on validation, beam search on
                    test; BLEU-1..4, ROUGE-L, CIDEr, METEOR (with Java); results.md with example reports.
                    report.unit=case|image, report.tower_init=model|random|imagenet,
                    report.decoder_init=auto|pretrained|fresh, report.finetune=frozen|last_block|full

    experiments: a built-in name (see --list-experiments), a YAML file, or demo:<name>.
    Folds are repeated seeded stratified splits (folds=5, seed=0), not disjoint k-fold; every
    hyper-parameter and threshold is chosen on validation data, never on the test split.

    examples:
      fundus-vlp eval all --model runs/keepfit/model --experiment demo:demo_unseen
      fundus-vlp eval few-shot --model M --experiment 08_ODIR200x3 \\
          dataframe_dir=~/keepfit/dataframes/transferability image_root=~/FUNDUS few_shot.shots=[1,5,10]
      fundus-vlp eval linear-probe --model M --experiment my_task.yaml linear_probe.c=0.316
      fundus-vlp eval segmentation --model M --experiment demo:demo_segmentation \
          segmentation.inits=[pretrained,random] segmentation.epochs=10
      fundus-vlp eval segmentation --model M --experiment 13_FIVES_vessels image_root=~/FIVES
      fundus-vlp eval report --model M --annotations ffair_annotation.json --image-root ~/FFA-IR
      fundus-vlp eval report --model M --annotations demo report.tower_init=random
    """)

ALL = ("zero-shot", "few-shot", "linear-probe")


class _IntermixedParser(argparse.ArgumentParser):
    """Lets ``key=value`` overrides follow options after MODE (``eval MODE --model M a=b``): plain argparse
    only fills positionals from the first contiguous run of them."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def register(sub) -> None:
    parser_class = sub._parser_class
    sub._parser_class = _IntermixedParser
    try:
        p = sub.add_parser("eval", help="evaluate a model: zero-shot, few-shot, linear probe, fine-tune, retrieval, "
                                        "segmentation, report generation",
                           description="Leak-free transfer evaluation of a saved fundus-vlp model.",
                           epilog=MODE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    finally:
        sub._parser_class = parser_class
    p.add_argument("mode", nargs="?", metavar="MODE",
                   help="zero-shot | few-shot | linear-probe | fine-tune | retrieval | segmentation | report | all "
                        "(or a comma list)")
    p.add_argument("--model", help="saved model folder (config.json + model.safetensors + tokenizer), or a "
                                   "pretraining run folder (its model/ is used)")
    p.add_argument("--experiment", help="experiment: built-in name, YAML file, or demo:<name> (retrieval alone: "
                                        "optional, with retrieval.captions=CSV retrieval.image_root=DIR)")
    p.add_argument("--output-dir", help="run folder (default runs/eval/<experiment>-<mode>-<timestamp>)")
    p.add_argument("--dataframe-dir", help="folder of the experiment dataframes ($FUNDUS_VLP_DATAFRAMES)")
    p.add_argument("--image-root", help="folder the dataframe image paths are relative to ($FUNDUS_VLP_DATA)")
    p.add_argument("--annotations", help="report mode: FFA-IR annotation JSON, image-caption CSV, or 'demo'")
    p.add_argument("--list-experiments", action="store_true", help="print the built-in experiments and exit")
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                   help="YAML file of EvalCfg fields (repeatable; later files win)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. folds=3 few_shot.shots=[1,5] linear_probe.c=0.316 (typos are errors)")
    p.set_defaults(func=run)


def parse_modes(text: str) -> list:
    from ..eval.config import MODES

    modes = []
    for part in (m.strip() for m in text.split(",") if m.strip()):
        modes += list(ALL) if part == "all" else [part]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown mode {', '.join(bad) or text!r}; choose from {', '.join(MODES)} or all")
    return list(dict.fromkeys(modes))


def run(args: argparse.Namespace) -> int:
    from ..eval.config import EXPERIMENT_FREE_MODES, EvalCfg
    from ..eval.experiments import builtin_experiments, demo_experiment_names
    from ..eval.runner import evaluate
    from ..config.loading import build_config

    if args.list_experiments:
        for name in builtin_experiments():
            print(name)
        for name in demo_experiment_names():
            print(f"{name}  (generated demo world)")
        return 0
    if not args.mode:
        raise ValueError("give a MODE (zero-shot, few-shot, linear-probe, fine-tune, retrieval, segmentation, report, all); "
                         "see --help")
    modes = parse_modes(args.mode)
    cfg = build_config(EvalCfg, args.config, args.overrides)  # `model=DIR` works as well as --model DIR
    cfg.modes = modes
    for attr, value in (("model", args.model), ("experiment", args.experiment), ("output_dir", args.output_dir),
                        ("dataframe_dir", args.dataframe_dir), ("image_root", args.image_root)):
        if value:
            setattr(cfg, attr, value)
    if args.annotations:
        cfg.report.annotations = args.annotations
    if not cfg.model:
        raise ValueError("--model DIR is required (a folder written by save_pretrained / fundus-vlp export)")
    if set(modes) <= set(EXPERIMENT_FREE_MODES):
        experiment = cfg.experiment  # report generation reads its own annotations
    else:
        experiment = cfg.experiment or _caption_only_experiment(cfg, modes)
    evaluate(cfg.model, experiment, modes, cfg)
    return 0


def _caption_only_experiment(cfg, modes):
    """``eval retrieval`` needs a caption set, not a classification experiment: build one from
    ``retrieval.captions`` + ``retrieval.image_root``."""
    from ..eval.experiments import Experiment

    if modes != ["retrieval"]:
        raise ValueError(f"--experiment NAME is required for {', '.join(m for m in modes if m != 'retrieval')} "
                         "(see --list-experiments)")
    rc = cfg.retrieval
    if not rc.captions or not rc.image_root:
        raise ValueError("retrieval needs a caption CSV and its image root: retrieval.captions=FILE "
                         "retrieval.image_root=DIR (or an --experiment that defines a caption set)")
    from pathlib import Path

    return Experiment(name=Path(rc.captions).stem, classes=[], captions=rc.captions, captions_root=rc.image_root,
                      description="caption set given on the command line")
