"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="YAML config file (repeatable; later files win)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.epochs=3 model=rn18-minilm (typos are errors)")


def add_run_dir_args(parser: argparse.ArgumentParser) -> None:
    """--resume/--allow-config-change/--overwrite of a training run whose run_name folder may already exist."""
    parser.add_argument("--resume", default=None, metavar="latest|PATH",
                        help="continue from the newest checkpoint of run_name (latest) or from a checkpoint file")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume even though the config differs from the run's config.yaml (the old one is kept)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run where run_name already holds one: the old folder is moved to NAME.replaced-TIME (never deleted)")
