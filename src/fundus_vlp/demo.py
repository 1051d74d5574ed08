"""``fundus-vlp demo``: KeepFIT V2 (stage 0 + stage 1) and its peers on the embedded demo world, same budget,
then one table of zero-shot / few-shot / linear-probe results on seen and unseen conditions.

Everything runs offline on CPU in minutes: the demo world is generated and cached on first use, the
text tower is the MiniLM shipped on PyPI, the image tower a ResNet-18 trained from scratch at 96 px.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional

from .train.plots import LOSS_CURVES, plot_loss_curves

_logger = logging.getLogger(__name__)

PROTOCOLS = [("zero-shot", None), ("few-shot", 1), ("few-shot", 5), ("few-shot", 10), ("linear-probe", None)]


@dataclass
class DemoCfg:
    methods: List[str] = field(default_factory=lambda: ["keepfit_v2", "clip", "flair", "keepfit"])
    model: str = "rn18-minilm"
    image_size: int = 96
    steps: int = 80  # optimiser steps per method (the same budget for every method)
    batch_size: int = 32  # public batch
    elite_batch_size: int = 16  # elite batch drawn with every public batch (keepfit, keepfit_v2)
    # 0: the (stage-0) MiniLM encoder is kept frozen and only the text projection is trained: on 2 CPU
    # cores the budget goes further on the from-scratch image tower (measured: see README)
    lock_text_layers: int = 0
    lr: float = 1e-3
    text_pretrain_steps: int = 30  # KeepFIT V2 stage 0 (MLM on the demo corpus + elite captions)
    text_pretrain_lr: float = 1e-4
    experiments: List[str] = field(default_factory=lambda: ["demo_seen", "demo_unseen", "demo_dr_grading"])
    few_shot_method: str = "tip_adapter_f"  # the few-shot adapter of the table (`fundus-vlp eval` runs all four)
    folds: int = 3
    world: str = "demo"  # demo world preset (tiny for tests)
    seed: int = 0
    # several seeds (``seeds=[0,1,2]`` or ``seeds=0,1,2``): pretraining of every method is repeated once per
    # seed (same world, same stage 0, same evaluation sets) and the table is zero-shot ACA mean ± std over them
    seeds: List[int] = field(default_factory=list)
    num_workers: int = -1  # -1: from the core count (data.num_workers)
    plots: bool = False  # ROC/confusion/shot plots per evaluation (~10 s per method on 2 cores; the table is the result)
    output_dir: str = "runs"
    run_name: str = ""


def pretrain_config(cfg: DemoCfg, method: str, run_dir: Path, text_dir: Optional[Path] = None,
                    train_seed: Optional[int] = None):
    """The demo's run of ``method``: the method's defaults with the demo's budget, data and model."""
    from .config.loading import from_dict
    from .config.registry import get_model_config
    from .train.config import PretrainCfg

    model = get_model_config(cfg.model, {"preprocess": {"size": cfg.image_size}})
    if text_dir is not None:  # the stage-0 text tower
        model = replace(model, text=replace(model.text, hf_model_name=str(text_dir)))
    base = from_dict(PretrainCfg, {"method": method, "model": model})  # with its method's options section
    return replace(
        base, output_dir=str(run_dir), run_name=method,
        data=replace(base.data, source="demo", demo_size=cfg.world, demo_seed=cfg.seed, num_workers=cfg.num_workers),
        train=replace(base.train, batch_size=cfg.batch_size, elite_batch_size=cfg.elite_batch_size,
                      max_steps=cfg.steps, epochs=1000, lock_text_layers=cfg.lock_text_layers, log_every=10,
                      seed=cfg.seed if train_seed is None else train_seed),
        optim=replace(base.optim, lr=cfg.lr, warmup_steps=10, weight_decay=0.01))


def text_pretrain_config(cfg: DemoCfg, run_dir: Path):
    """KeepFIT V2 stage 0 of the demo: MLM of the offline MiniLM on the demo corpus + elite captions."""
    from .constants import MINILM_ALIAS
    from .train.config import TextPretrainCfg

    base = TextPretrainCfg()
    return replace(base, text_model=MINILM_ALIAS, demo=True, demo_size=cfg.world, demo_seed=cfg.seed,
                   max_steps=cfg.text_pretrain_steps, epochs=100, batch_size=32, context_length=64, log_every=20,
                   seed=cfg.seed, output_dir=str(run_dir), run_name="stage0-text-pretrain",
                   optim=replace(base.optim, lr=cfg.text_pretrain_lr, warmup_epochs=0.2))


def _stage0(cfg: DemoCfg, run_dir: Path) -> Path:
    from .train.text_pretrain import text_pretrain

    return text_pretrain(text_pretrain_config(cfg, run_dir)).model_dir


def _evaluate(cfg: DemoCfg, model_dir: Path, method: str, run_dir: Path,
              modes: tuple = ("zero-shot", "few-shot", "linear-probe")) -> List[Dict]:
    from .demo_world.presets import demo_world_cfg
    from .eval.config import EvalCfg, FewShotCfg
    from .eval.runner import evaluate
    from .inference.loading import load_model

    rows = []
    model = load_model(model_dir).model  # once for the three evaluation sets
    for exp in cfg.experiments:
        ecfg = EvalCfg(folds=cfg.folds, seed=cfg.seed, output_dir=str(run_dir / "eval" / method / exp),
                       print_table=False, progress=False, bootstrap=200, plots=cfg.plots,
                       demo=demo_world_cfg(cfg.world, cfg.seed).to_dict(),
                       few_shot=FewShotCfg(shots=[1, 5, 10], methods=[cfg.few_shot_method]))
        result = evaluate(model, f"demo:{exp}", list(modes), ecfg, model_name=method)
        rows += result["rows"]
    return rows


def _pick(rows: List[Dict], method: str, exp: str, mode: str, shots: Optional[int], adapter: str) -> Optional[Dict]:
    for r in rows:
        if r["model"] != method or r["experiment"] != exp or r["mode"] != mode:
            continue
        if mode == "zero-shot" and r["split"] == "fold-test":
            continue  # the table shows zero-shot on the whole evaluation set
        if mode == "few-shot" and (r["shots"] != shots or r["method"] != adapter):
            continue
        return r
    return None


def format_demo_table(rows: List[Dict], cfg: DemoCfg, chance: Dict[str, float]) -> str:
    """Balanced accuracy (ACA, mean ± std over folds) per method × protocol × evaluation set."""
    head = ["method", "protocol"] + cfg.experiments
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| chance | 1/K | " + " | ".join(f"{chance[e]:.3f}" for e in cfg.experiments) + " |")
    for method in cfg.methods:
        for mode, shots in PROTOCOLS:
            label = mode if shots is None else f"{shots}-shot ({cfg.few_shot_method})"
            cells = []
            for exp in cfg.experiments:
                r = _pick(rows, method, exp, mode, shots, cfg.few_shot_method)
                if r is None:
                    cells.append("n/a")
                    continue
                mean, std = r["metrics"].get("aca"), r["std"].get("aca", 0.0)
                cells.append(f"{mean:.3f}" if r["folds"] == 1 else f"{mean:.3f} ± {std:.3f}")
            lines.append(f"| {method} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _start(cfg: DemoCfg, prefix: str):
    """(t0, run folder, demo world, stage-0 text tower or None, timings): what every demo run begins with.
    Stage 0 runs once; the methods' stage-1 runs (and their seeds) share it."""
    from .demo_world.presets import demo_world_cfg
    from .demo_world import build_demo_world

    t0 = time.perf_counter()
    run_dir = new_demo_dir(cfg.output_dir, cfg.run_name, prefix)
    world = build_demo_world(demo_world_cfg(cfg.world, cfg.seed))
    _logger.info("demo world: %s (unseen conditions: %s)", world.root, ", ".join(world.unseen_conditions))
    timings: Dict[str, float] = {"world": time.perf_counter() - t0}
    text_dir = None
    if "keepfit_v2" in cfg.methods:
        t = time.perf_counter()
        text_dir = _stage0(cfg, run_dir)
        timings["keepfit_v2 stage 0 (MLM)"] = time.perf_counter() - t
    return t0, run_dir, world, text_dir, timings


def new_demo_dir(output_dir: str, run_name: str, prefix: str) -> Path:
    """A new folder for a demo: a demo never replaces (or mixes into) the runs of an earlier one."""
    from .train.rundir import RunFolderError

    run_dir = Path(output_dir) / (run_name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunFolderError(f"{run_dir}: already holds a demo; choose another run_name (or none: a new "
                             f"timestamped folder), or move the old one away")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _finish(cfg: DemoCfg, run_dir: Path, t0: float, timings: Dict[str, float], table: str, rows: List[Dict],
            world, **extra) -> Dict:
    total = time.perf_counter() - t0
    summary = {"config": asdict(cfg), "seconds": total, "timings_s": timings, "table": table, "rows": rows,
               "unseen_conditions": world.unseen_conditions, **extra}
    (run_dir / "demo_results.json").write_text(json.dumps(summary, indent=2, default=_plain))
    (run_dir / "demo_table.md").write_text(table + "\n")
    return {"run_dir": run_dir, "table": table, "seconds": total, "timings": timings, "rows": rows}


def run_demo(cfg: DemoCfg) -> Dict:
    from .train.loop import pretrain

    t0, run_dir, world, text_dir, timings = _start(cfg, "demo")
    rows: List[Dict] = []
    for method in cfg.methods:
        t = time.perf_counter()
        result = pretrain(pretrain_config(cfg, method, run_dir, text_dir if method == "keepfit_v2" else None))
        timings[f"{method} pretrain"] = time.perf_counter() - t
        t = time.perf_counter()
        rows += _evaluate(cfg, result.model_dir, method, run_dir)
        timings[f"{method} eval"] = time.perf_counter() - t
    chance = {e: 1.0 / len(world.experiments[e]["classes"]) for e in cfg.experiments}
    table = format_demo_table(rows, cfg, chance)
    curves = plot_loss_curves({m: run_dir / m / "metrics.jsonl" for m in cfg.methods}, run_dir / LOSS_CURVES)
    return _finish(cfg, run_dir, t0, timings, table, rows, world, loss_curves=str(curves))


def format_seeds_table(rows: List[Dict], cfg: DemoCfg, chance: Dict[str, float]) -> str:
    """Zero-shot balanced accuracy, mean ± std over the pretraining seeds, per method × evaluation set."""
    import numpy as np

    head = ["method", f"zero-shot ACA over seeds {','.join(map(str, cfg.seeds))}"] + cfg.experiments
    lines = ["| " + " | ".join(head[:1] + head[2:]) + " |", "|" + "---|" * (len(head) - 1)]
    lines.append("| chance | " + " | ".join(f"{chance[e]:.3f}" for e in cfg.experiments) + " |")
    for method in cfg.methods:
        cells = []
        for exp in cfg.experiments:
            values = [r["metrics"]["aca"] for r in rows if r["model"] == method and r["experiment"] == exp
                      and r["mode"] == "zero-shot" and r["split"] != "fold-test"]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f} (n={len(values)})" if values else "n/a")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo_seeds(cfg: DemoCfg) -> Dict:
    """Pretraining of every method once per seed in ``cfg.seeds``; zero-shot evaluation of each model."""
    from .train.loop import pretrain

    t0, run_dir, world, text_dir, timings = _start(cfg, "demo-seeds")
    rows: List[Dict] = []
    for seed in cfg.seeds:
        seed_dir = run_dir / f"seed{seed}"
        for method in cfg.methods:
            t = time.perf_counter()
            result = pretrain(pretrain_config(cfg, method, seed_dir, text_dir if method == "keepfit_v2" else None,
                                              train_seed=seed))
            rows += _evaluate(cfg, result.model_dir, method, seed_dir, modes=("zero-shot",))
            timings[f"seed {seed} {method}"] = time.perf_counter() - t
    chance = {e: 1.0 / len(world.experiments[e]["classes"]) for e in cfg.experiments}
    return _finish(cfg, run_dir, t0, timings, format_seeds_table(rows, cfg, chance), rows, world)


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
