"""``fundus-vlp export``: a training checkpoint -> a release folder (config.json + model.safetensors + tokenizer)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = """Turn a training checkpoint into a release folder (safetensors, config, tokenizer, model card).

  fundus-vlp export --run runs/keepfit_v2-20261127 --out release/my-model
  fundus-vlp export --run runs/x --checkpoint runs/x/checkpoints/step_400.pt --out release/x-step400

The run's config.yaml rebuilds the architecture; the checkpoint is read with weights_only=True.
"""


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint as a release folder", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the run directory (holds config.yaml and checkpoints/)")
    p.add_argument("--checkpoint", default="latest", help="checkpoint file, or 'latest' (default)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..factory import create_model
    from ..hub import CheckpointError
    from ..train.checkpoint import CheckpointManager, load_checkpoint
    from ..train.config import PretrainCfg
    from ..config.loading import load_resolved

    run_dir = Path(args.run)
    cfg = load_resolved(PretrainCfg, run_dir / "config.yaml")
    path = CheckpointManager(run_dir / "checkpoints", enabled=False).resolve_resume(args.checkpoint)
    if path is None:
        raise CheckpointError(f"{run_dir}/checkpoints: no checkpoint found")
    state = load_checkpoint(path)["task"]
    model_cfg = cfg.model
    if cfg.init_from:
        from ..hub import load_config

        model_cfg = load_config(cfg.init_from)
    model = create_model(model_cfg)
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match the run's model config (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    out = model.save_pretrained(args.out, card={"method": cfg.method, "description": f"Exported from {path}."})
    print(f"exported {path} -> {out}")
    return 0
