"""Printed tables and the PNG plots of an evaluation run."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..runtime.files import DiskFullError, write_text_atomic
from .metrics import predict_labels

TABLE_METRICS = ("acc", "aca", "f1_macro", "auc", "kappa", "f1_pos")
REPORT_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
RETRIEVAL_METRICS = ("i2t_r@1", "i2t_r@5", "i2t_r@10", "t2i_r@1", "t2i_r@5", "t2i_r@10",
                     "bleu_1", "bleu_4", "rouge_l", "cider", "meteor")


def _cell(row: Dict, name: str) -> str:
    mean = row["metrics"].get(name)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    std = row.get("std", {}).get(name)
    if row.get("folds", 1) > 1 and std is not None and not math.isnan(std):
        return f"{mean:.3f}±{std:.3f}"
    return f"{mean:.3f}"


def _render(header: List[str], body: List[List[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def format_table(rows: Sequence[Dict], metrics: Optional[Sequence[str]] = None) -> str:
    """One line per row: model, experiment, mode, method, shots, split, folds, n_test, then mean±std metrics.

    Classification, retrieval, segmentation and report-generation rows are printed as separate blocks (their
    metrics differ).
    """
    blocks = []
    cls = [r for r in rows if r["mode"] not in ("retrieval", "segmentation", "report")]
    ret = [r for r in rows if r["mode"] == "retrieval"]
    seg = [r for r in rows if r["mode"] == "segmentation"]
    rep = [r for r in rows if r["mode"] == "report"]
    for group, default in ((cls, TABLE_METRICS), (ret, RETRIEVAL_METRICS), (seg, segmentation_metric_names(seg)),
                           (rep, REPORT_METRICS)):
        if not group:
            continue
        names = [m for m in (metrics or default) if any(m in r["metrics"] for r in group)]
        header = ["model", "experiment", "mode", "method", "shots", "split", "folds", "n_test"] + names
        body = [[str(r["model"]), str(r["experiment"]), r["mode"], r["method"],
                 "-" if r.get("shots") is None else str(r["shots"]), r.get("split", ""), str(r.get("folds", 1)),
                 str(r.get("n_test", ""))] + [_cell(r, m) for m in names] for r in group]
        blocks.append(_render(header, body))
    return "\n\n".join(blocks) if blocks else "(no results)"


def segmentation_metric_names(rows: Sequence[Dict]) -> List[str]:
    """dice_mean, iou_mean, then Dice of every class, then IoU of every class (in the rows' class order)."""
    names = [k for r in rows for k in r["metrics"]]
    per_class = list(dict.fromkeys(n for n in names if n not in ("dice_mean", "iou_mean")))
    return ["dice_mean", "iou_mean"] + [n for n in per_class if n.startswith("dice_")] + \
        [n for n in per_class if n.startswith("iou_")]


SHORT = {"clip_adapter": "CLIP-Ad", "tip_adapter": "Tip", "tip_adapter_f": "Tip-F", "linear_probe": "LP"}


def _column(row: Dict) -> Optional[str]:
    mode, method = row["mode"], row["method"]
    if mode == "zero-shot":
        return "ZS" if row.get("split") in ("all", "official-test") else "ZS(splits)"
    if mode == "few-shot":
        return f"{SHORT.get(method, method)}@{row['shots']}"
    if mode == "linear-probe":
        return "LP(full)" if method == "linear_probe" else "LP-raw(full)"
    if mode == "fine-tune":
        return f"FT:{method}"
    return None


def format_summary(rows: Sequence[Dict], metric: str = "aca") -> str:
    """One line per (model, experiment) and one column per method/shot count: the demo's comparison table.

    Example header: ``model  experiment  ZS  ZS(splits)  CLIP-Ad@1 ... LP@10  LP(full)``; cells are mean±std
    of ``metric`` over folds (zero-shot on the whole set has no folds).
    """
    columns: List[str] = []
    cells: Dict[tuple, Dict[str, str]] = {}
    for r in rows:
        col = _column(r)
        if col is None or metric not in r["metrics"]:
            continue
        if col not in columns:
            columns.append(col)
        cells.setdefault((str(r["model"]), str(r["experiment"])), {})[col] = _cell(r, metric)
    if not cells:
        return "(no results)"
    header = ["model", "experiment"] + columns
    body = [[m, e] + [cells[(m, e)].get(c, "-") for c in columns] for (m, e) in cells]
    return f"{metric}\n" + _render(header, body)


def prediction_key(mode: str, method: str, split: str, shots: Optional[int] = None) -> str:
    """Where a row's fold-0 predictions are kept for the plots (``EvalContext.predictions``)."""
    return f"{mode}/{method}" + (f"/{shots}" if shots is not None else "") + f"/{split}"


def save_plots(ctx, rows: Sequence[Dict]) -> List[Path]:
    """ROC + confusion matrix per classification mode (fold 0), and the few-shot metric-vs-shots curve."""
    from .plots import plot_confusion, plot_roc, plot_shots

    exp, out = ctx.experiment, Path(ctx.out_dir)
    if exp.task == "segmentation":
        return save_mask_plots(ctx, rows)
    if exp.task == "multilabel":
        return []
    saved: List[Path] = []
    classes, pos = exp.classes, exp.positive_index

    def both(key: str, tag: str, title: str) -> None:
        pred = ctx.predictions.get(key)
        if pred is None:
            return
        y, p = np.asarray(pred["y_true"]), np.asarray(pred["probs"])
        roc = plot_roc(y, p, classes, out / f"roc_{tag}.png", f"ROC: {title}", pos)
        if roc:
            saved.append(roc)
        y_pred = predict_labels(p, pred["threshold"] if exp.task == "binary" else None, pos)
        saved.append(plot_confusion(y, y_pred, classes, out / f"confusion_{tag}.png", f"{title} (row-normalised)"))

    for split in ("all", "official-test"):
        both(prediction_key("zero-shot", "zero-shot", split), "zero-shot", f"zero-shot, {exp.name}")
    for r in rows:
        if r["mode"] == "linear-probe":
            both(prediction_key("linear-probe", r["method"], "fold-test"), "linear-probe",
                 f"linear probe, {exp.name} (fold 0)")
        if r["mode"] == "fine-tune":
            both(prediction_key("fine-tune", r["method"], "fold-test"), "fine-tune",
                 f"fine-tune {r['method']}, {exp.name} (fold 0)")
    few = [r for r in rows if r["mode"] == "few-shot"]
    if few:
        metric = exp.primary_metric if exp.primary_metric in few[0]["metrics"] else "aca"
        p = plot_shots(list(rows), out / f"shots_{metric}.png", metric, f"{ctx.model_name} on {exp.name}")
        if p:
            saved.append(p)
        top = max(r["shots"] for r in few)
        best = max((r for r in few if r["shots"] == top), key=lambda r: r["metrics"].get(metric, -1))
        both(prediction_key("few-shot", best["method"], "fold-test", top), "few-shot",
             f"{best['method']} {top}-shot (fold 0)")
    return saved


def save_mask_plots(ctx, rows: Sequence[Dict]) -> List[Path]:
    """Per segmentation row: test images of fold 0 with the ground truth and the predicted masks overlaid, and
    the per-epoch training history of every fold (``history_<method>.png``)."""
    from .plots import plot_mask_grid, plot_segmentation_history

    saved = []
    for r in rows:
        tag = r["method"].replace("/", "_")
        if r.get("history"):
            saved.append(plot_segmentation_history(r["history"], r["hparams"], Path(ctx.out_dir) / f"history_{tag}.png",
                                                   f"{ctx.model_name} on {ctx.experiment.name}: {r['method']}"))
        pred = ctx.predictions.get(prediction_key("segmentation", r["method"], "fold-test"))
        if pred is None or not len(pred["pred"]):
            continue
        saved.append(plot_mask_grid(pred["images"], pred["truth"], pred["pred"], ctx.experiment.classes,
                                    Path(ctx.out_dir) / f"masks_{tag}.png",
                                    f"{ctx.model_name} on {ctx.experiment.name}: {r['method']} (fold 0 test)",
                                    multilabel=pred.get("multilabel", False)))
    return saved


def write_run(ctx, results: Dict) -> None:
    """``results.json``, ``config.yaml`` (resolved), ``table.txt``, PNG plots; prints the table and notes."""
    from ..config.loading import save_resolved

    out = ctx.out_dir
    write_text_atomic(out / "results.json", json.dumps(_jsonable(results), indent=2))
    try:
        save_resolved(ctx.cfg, out / "config.yaml")
    except DiskFullError:
        raise
    except Exception as exc:  # never lose the results over the config dump
        ctx.note(f"could not write config.yaml: {exc}")
    table = format_table(results["rows"])
    write_text_atomic(out / "table.txt", table + "\n")
    if ctx.cfg.plots:
        results["plots"] = [str(p) for p in save_plots(ctx, results["rows"])]
        write_text_atomic(out / "results.json", json.dumps(_jsonable(results), indent=2))
    if ctx.cfg.print_table:
        print(table)
        for n in ctx.notes:
            print(f"note: {n}")
        print(f"results: {out / 'results.json'}")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) or math.isinf(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj
