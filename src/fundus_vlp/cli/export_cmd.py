"""``fundus-vlp export``: a training checkpoint -> a release folder (config.json + model.safetensors + tokenizer)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = """Turn a training checkpoint into a release folder (safetensors, config, tokenizer, model card).

  fundus-vlp export --run runs/keepfit_v2-20261127 --out release/my-model
  fundus-vlp export --run runs/x --checkpoint runs/x/checkpoints/step_400.pt --out release/x-step400

The run's config.yaml rebuilds the architecture; the checkpoint is read with weights_only=True.

ONNX (--onnx) writes image_encoder.onnx (pixel_values: batch×3×S×S, the preprocessed image) and
text_encoder.onnx (input_ids: batch×length) next to model.safetensors, both returning unit-norm
embeddings, with a dynamic batch (and text length); an image-only model (e.g. an imported RETFound)
gets the image encoder alone. fundus_vlp.OnnxModel runs them with onnxruntime:

  fundus-vlp export --run runs/x --out release/x --onnx
  fundus-vlp export --model release/x --onnx          # add the ONNX files to an existing folder
"""


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint as a release folder", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="the run directory (holds config.yaml and checkpoints/)")
    src.add_argument("--model", help="an existing release folder (with --onnx: add the ONNX encoders to it)")
    p.add_argument("--checkpoint", default="latest", help="checkpoint file, or 'latest' (default)")
    p.add_argument("--out", default=None, help="output folder (required with --run)")
    p.add_argument("--onnx", action="store_true", help="also write image_encoder.onnx and text_encoder.onnx")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model:
        if not args.onnx:
            raise ValueError("--model exports an existing folder to ONNX; add --onnx (or use --run to export a run)")
        return _write_onnx(args.model, args.out)
    if not args.out:
        raise ValueError("--run needs --out, the release folder to write")
    out = _export_run(args)
    return _write_onnx(out) if args.onnx else 0


def _write_onnx(model_dir, out_dir=None) -> int:
    import shutil

    from ..factory import from_pretrained
    from ..models.onnx import export_onnx

    target = Path(out_dir or model_dir)
    if out_dir and Path(out_dir).resolve() != Path(model_dir).resolve():  # copy the folder, then add the graphs
        shutil.copytree(model_dir, target, dirs_exist_ok=True)
    for path in export_onnx(from_pretrained(model_dir), target):
        print(f"wrote {path}")
    return 0


def _export_run(args: argparse.Namespace) -> Path:
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
    return Path(out)
