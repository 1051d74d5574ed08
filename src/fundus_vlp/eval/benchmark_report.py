"""The comparison of a benchmark: one table (Markdown, CSV, JSON), paired tests against the reference model with
Holm-adjusted p-values, a forest plot of the differences and a rank summary.

* a cell of the table is the mean over folds ± the half-width of the 95 % Student-t interval over folds
  (``stats.t_interval``);
* every other model is compared with the reference on the same test images: DeLong for AUC, a paired bootstrap
  over the test images of each fold for the other metrics (``stats.compare``);
* the family of the Holm adjustment is every comparison in the table (all models, settings and metrics);
  ▲ / ▼ mark a model significantly better / worse than the reference at the adjusted level;
* ranks (1 = best, ties averaged) are taken per setting and metric over the settings every model ran, then
  averaged.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import rankdata

from .stats import compare, holm, t_interval

SettingKey = Tuple[str, str, str, Optional[int]]  # experiment, mode, method, shots

MODE_ORDER = {"zero-shot": 0, "few-shot": 1, "linear-probe": 2, "fine-tune": 3}


def setting_label(key: SettingKey) -> str:
    exp, mode, method, shots = key
    if mode == "few-shot":
        return f"{exp} · {shots}-shot {method}"
    if mode == "fine-tune":
        return f"{exp} · fine-tune ({method})"
    return f"{exp} · {mode}"


def collect(cells: Sequence[Dict]) -> Tuple[Dict[SettingKey, Dict[str, Dict]], Dict[Tuple[str, str, str], str]]:
    """(per setting, per model: {"row", "folds"}; skipped (model, experiment, mode) -> reason). Zero-shot
    contributes its rows on the folds' test splits (the whole-set row has no folds to pair)."""
    from .tables import prediction_key

    table: Dict[SettingKey, Dict[str, Dict]] = {}
    skipped = {}
    for cell in cells:
        if cell.get("skipped"):
            skipped[(cell["model"], cell["experiment"], cell["mode"])] = cell["skipped"]
            continue
        for row in cell["rows"]:
            if row["split"] != "fold-test":
                continue
            key = (cell["experiment"], row["mode"], row["method"], row["shots"])
            folds = cell["folds"][prediction_key(row["mode"], row["method"], row["split"], row["shots"])]
            table.setdefault(key, {})[cell["model"]] = {"row": row, "folds": folds, "image_only": cell["image_only"]}
    return table, skipped


def _sort_key(key: SettingKey, experiments: Sequence[str]):
    exp, mode, method, shots = key
    return (experiments.index(exp) if exp in experiments else len(experiments), MODE_ORDER.get(mode, 9),
            method, shots or 0)


def build_comparison(cells: Sequence[Dict], models: Sequence[str], reference: str, cfg) -> Dict:
    """Every (setting, metric, model) entry with its fold interval and, for non-reference models, the paired test."""
    table, skipped = collect(cells)
    settings = sorted(table, key=lambda k: _sort_key(k, list(cfg.experiments)))
    entries = []
    for key in settings:
        per_model = table[key]
        for metric in cfg.metrics:
            if not any(metric in v["row"]["per_fold"][0] for v in per_model.values()):
                continue
            for model in models:
                e = {"experiment": key[0], "mode": key[1], "method": key[2], "shots": key[3], "metric": metric,
                     "model": model, "reference": model == reference}
                got = per_model.get(model)
                if got is None:
                    e["status"] = skipped.get((model, key[0], key[1])) or (
                        "image-only model: skipped" if any(c["model"] == model and c.get("image_only")
                                                           for c in cells) else "not run")
                    entries.append(e)
                    continue
                values = [f.get(metric, float("nan")) for f in got["row"]["per_fold"]]
                mean, lo, hi = t_interval(values, cfg.level)
                e.update({"status": "ok", "folds": len(values), "mean": mean, "ci_lo": lo, "ci_hi": hi,
                          "per_fold": values})
                ref = per_model.get(reference)
                if model != reference and ref is not None:
                    c = compare(_arrays(got["folds"]), _arrays(ref["folds"]), metric, cfg.n_boot, cfg.eval.seed,
                                cfg.level)
                    e.update({"diff": c.diff, "diff_lo": c.lo, "diff_hi": c.hi, "p": c.p, "test": c.test})
                entries.append(e)
    adjusted = holm([e.get("p", float("nan")) for e in entries])
    for e, p in zip(entries, adjusted):
        if "p" in e:
            e["p_holm"] = p
            e["significant"] = bool(p < cfg.alpha)
    return {"entries": entries, "settings": [list(k) for k in settings], "models": list(models),
            "reference": reference, "ranks": rank_summary(entries, models, cfg.metrics)}


def _arrays(folds: Sequence[Dict]) -> List[Dict]:
    return [{**f, "y_true": np.asarray(f["y_true"]), "probs": np.asarray(f["probs"], dtype=float)} for f in folds]


def rank_summary(entries: Sequence[Dict], models: Sequence[str], metrics: Sequence[str]) -> List[Dict]:
    """Per metric: each model's mean rank (1 = best) over the settings every model ran, and its wins."""
    out = []
    for metric in metrics:
        by_setting: Dict[Tuple, Dict[str, float]] = {}
        for e in entries:
            if e["metric"] == metric and e["status"] == "ok" and not math.isnan(e["mean"]):
                by_setting.setdefault((e["experiment"], e["mode"], e["method"], e["shots"]), {})[e["model"]] = e["mean"]
        complete = [v for v in by_setting.values() if len(v) == len(models)]
        if not complete:
            continue
        ranks = np.array([rankdata([-v[m] for m in models]) for v in complete])
        for i, m in enumerate(models):
            out.append({"metric": metric, "model": m, "mean_rank": float(ranks[:, i].mean()),
                        "wins": int(np.sum(ranks[:, i] == 1.0)), "settings": len(complete)})
    return out


# -- rendering ---------------------------------------------------------------------------------------

def _fmt_cell(e: Dict) -> str:
    if e["status"] != "ok":
        return e["status"]
    if math.isnan(e["mean"]):
        return "-"
    text = f"{e['mean']:.3f}" if math.isnan(e["ci_lo"]) else f"{e['mean']:.3f} ± {(e['ci_hi'] - e['ci_lo']) / 2:.3f}"
    if e.get("significant"):
        text += " ▲" if e["diff"] > 0 else " ▼"
    return text


def format_markdown(comp: Dict, cfg) -> str:
    models, ref = comp["models"], comp["reference"]
    head = ["setting", "metric"] + [f"{m} (ref)" if m == ref else m for m in models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    grouped: Dict[Tuple, Dict[str, Dict]] = {}
    for e in comp["entries"]:
        grouped.setdefault((e["experiment"], e["mode"], e["method"], e["shots"], e["metric"]), {})[e["model"]] = e
    for (exp, mode, method, shots, metric), by_model in grouped.items():
        cells = [_fmt_cell(by_model[m]) if m in by_model else "" for m in models]
        lines.append(f"| {setting_label((exp, mode, method, shots))} | {metric} | " + " | ".join(cells) + " |")
    n_cmp = sum("p" in e for e in comp["entries"])
    folds = cfg.eval.seeds or cfg.eval.folds
    note = (f"Mean over {folds if isinstance(folds, int) else len(folds)} seeded folds ± half-width of the "
            f"{cfg.level:.0%} Student-t interval over folds. ▲/▼: better/worse than the reference ({ref}) at "
            f"Holm-adjusted p < {cfg.alpha} over all {n_cmp} comparisons (AUC: DeLong; other metrics: paired "
            f"bootstrap over each fold's test images, {cfg.n_boot} replicates).")
    out = ["\n".join(lines), "", note]
    if comp["ranks"]:
        out += ["", format_ranks(comp)]
    return "\n".join(out) + "\n"


def format_ranks(comp: Dict) -> str:
    lines = ["| metric | model | mean rank | wins | settings |", "|---|---|---|---|---|"]
    for r in sorted(comp["ranks"], key=lambda r: (r["metric"], r["mean_rank"])):
        lines.append(f"| {r['metric']} | {r['model']} | {r['mean_rank']:.2f} | {r['wins']} | {r['settings']} |")
    return "\n".join(lines)


CSV_FIELDS = ("experiment", "mode", "method", "shots", "metric", "model", "reference", "status", "folds", "mean",
              "ci_lo", "ci_hi", "diff", "diff_lo", "diff_hi", "test", "p", "p_holm", "significant")


def format_csv(comp: Dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for e in comp["entries"]:
        w.writerow({k: e.get(k, "") for k in CSV_FIELDS})
    return buf.getvalue()


def write_report(cells: Sequence[Dict], models: Sequence[str], reference: str, cfg, out: Path) -> Dict:
    """benchmark.md, benchmark.csv, benchmark.json and forest.png in ``out``."""
    from dataclasses import asdict

    from ..runtime.files import write_text_atomic
    from .plots import plot_forest

    comp = build_comparison(cells, models, reference, cfg)
    markdown = format_markdown(comp, cfg)
    write_text_atomic(out / "benchmark.md", markdown)
    write_text_atomic(out / "benchmark.csv", format_csv(comp))
    notes = sorted({f"{c['model']} · {c['experiment']} · {c['mode']}: {n}" for c in cells for n in c.get("notes", [])})
    write_text_atomic(out / "benchmark.json", json.dumps({**comp, "notes": notes, "config": asdict(cfg)}, indent=1,
                                                    default=str))
    metric = cfg.metrics[0]
    forest = plot_forest([e for e in comp["entries"] if "diff" in e and e["metric"] == metric],
                         out / "forest.png", reference, metric)
    return {**comp, "markdown": markdown, "forest": str(forest) if forest else None,
            "files": [str(out / n) for n in ("benchmark.md", "benchmark.csv", "benchmark.json")]}
