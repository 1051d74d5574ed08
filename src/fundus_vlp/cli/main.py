"""``fundus-vlp`` command line: one module per subcommand, each exposing ``register(subparsers)``.

Every subcommand that trains or evaluates takes ``--config FILE.yaml`` (repeatable) and trailing
``key=value`` overrides that are merged into its typed config (``config/loading.py``: ``build_config``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from ..config.loading import ConfigError

SUBCOMMANDS = ("demo", "pretrain", "text_pretrain", "eval", "benchmark", "predict", "caption", "export", "import",
               "import_flair", "prepare",
               "check_data", "build_elite", "list_models", "serve", "index")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fundus-vlp",
        description="Fundus vision-language pretraining (KeepFIT V2, KeepFIT, FLAIR, ViLReF, CLIP) and leak-free evaluation.",
        epilog="Run `fundus-vlp COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:  # modules import their heavy dependencies only when run
        importlib.import_module(f"{__package__}.{name}_cmd").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A subcommand with a positional list (`build-elite PDF... --out DIR key=value`) takes the words that
    # follow its options too; anything else left over is an error, as with parse_args.
    if extra and getattr(args, "trailing_positionals", None) and not any(e.startswith("-") for e in extra):
        setattr(args, args.trailing_positionals, getattr(args, args.trailing_positionals) + extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from ..runtime.distributed import world_info_from_env
    from ..train.logger import setup_logging

    setup_logging(args.log_level, rank=world_info_from_env()[1])  # under torchrun only rank 0 logs INFO
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"fundus-vlp {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # train.loop.RunInterrupted says where its checkpoint is
        print(f"fundus-vlp {args.command}: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, ArithmeticError) as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"fundus-vlp {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
