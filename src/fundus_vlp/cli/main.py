"""``fundus-vlp`` command line: one module per subcommand, each exposing ``register(subparsers)``.

Every subcommand that trains or evaluates takes ``--config FILE.yaml`` (repeatable) and trailing
``key=value`` overrides that are merged into its typed config (see ``cli/overrides.py``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from .overrides import ConfigError

SUBCOMMANDS = ("demo", "pretrain", "text_pretrain", "eval", "predict", "caption", "export", "prepare", "check_data",
               "list_models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fundus-vlp",
        description="Fundus vision-language pretraining (KeepFIT V2, KeepFIT, FLAIR, ViLReF, CLIP) and leak-free evaluation.",
        epilog="Run `fundus-vlp COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module_name = f"{__package__}.{name}_cmd"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            _register_unavailable(sub, name.replace("_", "-"))
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub, command: str) -> None:
    def run(args: argparse.Namespace) -> int:
        print(f"fundus-vlp {command}: not available in this installation", file=sys.stderr)
        return 2

    p = sub.add_parser(command, help="(not available in this installation)")
    p.add_argument("args", nargs="*")
    p.set_defaults(func=run)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..train.logger import setup_logging

    setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"fundus-vlp {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fundus-vlp {args.command}: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"fundus-vlp {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
