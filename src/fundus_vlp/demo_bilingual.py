"""``fundus-vlp demo bilingual=true``: cross-lingual zero-shot on the bilingual demo world.

Stage 0 learns a WordPiece vocabulary from the bilingual corpus and captions (Chinese split per character)
and pretrains a small BERT from scratch on them (masked language modelling, offline); KeepFIT V2 then
trains one model per caption language (``both``: English or Chinese drawn per elite sample; ``en``: the
English-only model), both on that text tower. Each model is evaluated zero-shot with English prompts
(``fundus_en``) and with Chinese prompts (``fundus_zh``) on the demo's evaluation sets; the unseen
conditions are named only in elite captions and the corpus, so Chinese prompts can only work through the
Chinese captions.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List

from .config.loading import check_choice
from .data.config import CAPTION_LANGUAGES
from .data.prompts import PROMPT_LANGUAGES
from .demo import DemoCfg, _plain, new_demo_dir, pretrain_config

_logger = logging.getLogger(__name__)


@dataclass
class BilingualDemoCfg(DemoCfg):
    """The demo's options plus the bilingual run's own (defaults differ: one method, whole tower trained)."""

    # Defaults sized for a shared 2-core CPU: two KeepFIT V2 runs + stage 0 (see README "Bilingual").
    bilingual: bool = False  # `fundus-vlp demo` runs this demo when true
    methods: List[str] = field(default_factory=lambda: ["keepfit_v2"])
    caption_languages: List[str] = field(default_factory=lambda: ["both", "en"])  # one model per entry
    experiments: List[str] = field(default_factory=lambda: ["demo_unseen"])
    image_size: int = 64
    steps: int = 60
    batch_size: int = 16
    lock_text_layers: int = -1  # the from-scratch tower is trained with the rest
    context_length: int = 96  # Chinese is one token per character: captions need more positions
    text_pretrain_steps: int = 100
    text_pretrain_lr: float = 5e-4
    vocab_size: int = 4000
    text_hidden_size: int = 128
    text_layers: int = 2
    stage0_dir: str = ""  # a finished stage-0 text_model folder to reuse (e.g. to train caption languages in parallel)


def bilingual_text_pretrain_config(cfg: BilingualDemoCfg, run_dir: Path):
    """Stage 0: a WordPiece vocabulary and a small BERT learnt from scratch on English + Chinese demo text."""
    from .train.config import FROM_SCRATCH_BERT, ScratchBertCfg, TextPretrainCfg, TokenizerTrainCfg

    base = TextPretrainCfg()
    return replace(base, text_model=FROM_SCRATCH_BERT, demo=True, demo_size=cfg.world, demo_seed=cfg.seed,
                   caption_language="both", max_steps=cfg.text_pretrain_steps, epochs=1000, batch_size=32,
                   context_length=cfg.context_length, log_every=50, seed=cfg.seed, output_dir=str(run_dir),
                   run_name="stage0-bilingual-text",
                   tokenizer=TokenizerTrainCfg(train=True, vocab_size=cfg.vocab_size),
                   scratch=ScratchBertCfg(hidden_size=cfg.text_hidden_size, num_layers=cfg.text_layers,
                                          num_heads=max(1, cfg.text_hidden_size // 64),
                                          intermediate_size=4 * cfg.text_hidden_size),
                   optim=replace(base.optim, lr=cfg.text_pretrain_lr, warmup_epochs=0.0, warmup_steps=20,
                                 weight_decay=0.01))


def bilingual_pretrain_config(cfg: BilingualDemoCfg, language: str, run_dir: Path, text_dir: Path):
    """KeepFIT V2 stage 1 on the stage-0 tower, elite captions in ``language`` (en | zh | both)."""
    base = pretrain_config(cfg, "keepfit_v2", run_dir, text_dir)
    text = replace(base.model.text, hf_tokenizer_name=None, context_length=cfg.context_length)
    return replace(base, run_name=f"keepfit_v2-{language}", model=replace(base.model, text=text),
                   data=replace(base.data, caption_language=language))


def _zero_shot(cfg: BilingualDemoCfg, model_dir: Path, name: str, run_dir: Path) -> List[Dict]:
    from .demo_world.presets import demo_world_cfg
    from .eval.config import EvalCfg, ZeroShotCfg
    from .eval.runner import evaluate

    rows = []
    for exp in cfg.experiments:
        for lang in PROMPT_LANGUAGES:
            ecfg = EvalCfg(folds=cfg.folds, seed=cfg.seed, output_dir=str(run_dir / "eval" / name / f"{exp}-{lang}"),
                           print_table=False, progress=False, bootstrap=200, plots=False,
                           demo=demo_world_cfg(cfg.world, cfg.seed, chinese=True).to_dict(),
                           zero_shot=ZeroShotCfg(language=lang, on_fold_splits=False))
            for row in evaluate(model_dir, f"demo:{exp}", ["zero-shot"], ecfg, model_name=name)["rows"]:
                rows.append({**row, "prompt_language": lang})
    return rows


def format_bilingual_table(rows: List[Dict], cfg: BilingualDemoCfg, chance: Dict[str, float]) -> str:
    """Zero-shot balanced accuracy (ACA) per model (caption language) × prompt language × evaluation set."""
    head = ["model (captions)", "prompts"] + cfg.experiments
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             "| chance | 1/K | " + " | ".join(f"{chance[e]:.3f}" for e in cfg.experiments) + " |"]
    names = {"en": "English", "zh": "Chinese"}
    for language in cfg.caption_languages:
        for lang in PROMPT_LANGUAGES:
            cells = []
            for exp in cfg.experiments:
                hit = [r for r in rows if r["model"] == f"keepfit_v2-{language}" and r["experiment"] == exp
                       and r["prompt_language"] == lang and r["mode"] == "zero-shot"]
                cells.append(f"{hit[0]['metrics']['aca']:.3f}" if hit else "n/a")
            lines.append(f"| keepfit_v2 ({language}) | {names[lang]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_bilingual_demo(cfg: BilingualDemoCfg) -> Dict:
    from .demo_world.presets import demo_world_cfg
    from .demo_world import build_demo_world
    from .train.loop import pretrain
    from .train.text_pretrain import text_pretrain

    for lang in cfg.caption_languages:
        check_choice("caption_languages", lang, CAPTION_LANGUAGES)
    t0 = time.perf_counter()
    run_dir = new_demo_dir(cfg.output_dir, cfg.run_name, "demo-bilingual")
    world = build_demo_world(demo_world_cfg(cfg.world, cfg.seed, chinese=True))
    timings: Dict[str, float] = {"world": time.perf_counter() - t0}
    t = time.perf_counter()
    if cfg.stage0_dir:
        stage0 = _reused_stage0(Path(cfg.stage0_dir))
    else:
        stage0 = text_pretrain(bilingual_text_pretrain_config(cfg, run_dir))
        timings["stage 0 (WordPiece + BERT from scratch, MLM)"] = time.perf_counter() - t
    rows: List[Dict] = []
    for language in cfg.caption_languages:
        t = time.perf_counter()
        result = pretrain(bilingual_pretrain_config(cfg, language, run_dir, stage0.model_dir))
        timings[f"keepfit_v2 ({language}) pretrain"] = time.perf_counter() - t
        t = time.perf_counter()
        rows += _zero_shot(cfg, result.model_dir, f"keepfit_v2-{language}", run_dir)
        timings[f"keepfit_v2 ({language}) eval"] = time.perf_counter() - t
    chance = {e: 1.0 / len(world.experiments[e]["classes"]) for e in cfg.experiments}
    table = format_bilingual_table(rows, cfg, chance)
    total = time.perf_counter() - t0
    summary = {"config": asdict(cfg), "seconds": total, "timings_s": timings, "table": table, "rows": rows,
               "stage0": {"val_mlm_loss": stage0.val_loss, "val_masked_accuracy": stage0.val_masked_accuracy,
                          "model_dir": str(stage0.model_dir)},
               "elite_caption_rows": _caption_language_summary(world, cfg), "unseen_conditions": world.unseen_conditions}
    (run_dir / "demo_results.json").write_text(json.dumps(summary, indent=2, default=_plain, ensure_ascii=False))
    (run_dir / "demo_table.md").write_text(table + "\n")
    return {"run_dir": run_dir, "table": table, "seconds": total, "timings": timings, "rows": rows}


def _reused_stage0(model_dir: Path):
    """A finished stage 0 (its folder and, when present next to it, its validation metrics)."""
    from .train.text_pretrain import TextPretrainResult

    if not (model_dir / "config.json").is_file():
        raise ValueError(f"stage0_dir {model_dir} is not a text_model folder (no config.json)")
    val = {}
    metrics = model_dir.parent / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == "val":
                val = record
    return TextPretrainResult(model_dir.parent, model_dir, int(val.get("step", 0)), float("nan"),
                              float(val.get("val_loss", float("nan"))),
                              float(val.get("val_masked_accuracy", float("nan"))), 0.0)


def _caption_language_summary(world, cfg: BilingualDemoCfg) -> Dict[str, int]:
    """Elite caption rows with both languages / English only / Chinese only (fallback rows of `both`)."""
    from .data.dataframes import read_captions

    frames = [read_captions(world.elite_csvs[m]) for m in ("CFP",) if m in world.elite_csvs]
    en = [bool(c) for f in frames for c in f["caption"]]
    zh = [bool(c) for f in frames for c in f.get("caption_zh", [""] * len(f))]
    return {"rows": len(en), "both": sum(a and b for a, b in zip(en, zh)),
            "en_only": sum(a and not b for a, b in zip(en, zh)), "zh_only": sum(b and not a for a, b in zip(en, zh))}
