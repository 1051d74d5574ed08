"""Report generation: the caption decoder fine-tuned on case-level reports (FFA-IR JSON or an image-caption CSV),
the epoch chosen on validation, beam search on the test cases (greedy decoding scored beside it); BLEU-1..4,
ROUGE-L, CIDEr (+METEOR with Java), Chinese reports scored per character."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ...runtime.files import write_text_atomic
from ..config import EvalCfg
from ..context import EvalContext, plain_row
from ..experiments import Experiment
from ..tables import REPORT_METRICS

DEMO_ANNOTATIONS = "demo"
# more [UNK] than this share of the report tokens: the decoder cannot write those reports (a warning)
UNK_WARN_SHARE = 0.03
BEAM_BOOTSTRAP = 500  # resamples of the test cases for the beam-minus-greedy interval


def report_source(cfg: EvalCfg) -> Tuple[Path, Path]:
    """(annotation file, image root) of ``cfg.report``; ``annotations=demo`` is the demo world's FFA cases."""
    rc = cfg.report
    if not rc.annotations:
        raise ValueError("report generation needs report.annotations=FILE (--annotations FILE: an FFA-IR JSON or an "
                         "image-caption CSV such as KeepFIT's FFA.csv), or --annotations demo")
    if rc.annotations == DEMO_ANNOTATIONS:
        from ..experiments import load_demo_world

        world = load_demo_world(cfg.demo, cfg.demo_cache_dir)
        if world.ffa_reports is None:
            raise ValueError(f"the demo world {world.root} has no FFA cases (demo.ffa_cases=0)")
        return world.ffa_reports, world.root
    root = rc.image_root or cfg.image_root
    if not root:
        raise ValueError(f"report generation on {rc.annotations}: pass --image-root DIR, the folder the annotation's "
                         f"image paths are relative to")
    return Path(rc.annotations), Path(root)


def report_experiment(cfg: EvalCfg) -> Experiment:
    """The run's experiment record when only report generation runs (no classification experiment)."""
    rc = cfg.report
    name = "demo_ffa_reports" if rc.annotations == DEMO_ANNOTATIONS else Path(rc.annotations or "reports").stem
    return Experiment(name=name, classes=[], description=f"report generation on {rc.annotations}")


def run_report(ctx: EvalContext) -> List[Dict]:
    from ...data.report_annotations import SPLITS, read_report_annotations
    from ..captioning import paired_caption_bootstrap, text_language
    from ..report_generation import (TowerTokens, build_decoder_and_tower, build_samples, decoder_positions,
                                     decoder_tokenizer, even_subset, generate_reports, report_lengths,
                                     report_tokenizer, score_reports, train_report_decoder)

    cfg, rc = ctx.cfg, ctx.cfg.report
    annotations, root = report_source(cfg)
    seed = cfg.seed if rc.seed is None else rc.seed
    cases = read_report_annotations(annotations, root, rc.report_key, seed, rc.val_fraction, rc.test_fraction,
                                    rc.group_pattern)
    by_split = {s: [c for c in cases if c.split == s] for s in SPLITS}
    empty = [s for s in SPLITS if not by_split[s]]
    if empty:
        raise ValueError(f"{annotations}: no {' / '.join(empty)} cases; report generation needs train, val and test")
    train_reports = [c.report for c in by_split["train"]]
    tok = report_tokenizer(ctx.model, rc)
    share = tok.unknown_share(train_reports)
    tok, added = decoder_tokenizer(ctx.model, rc, tok, train_reports)
    tower, decoder, info = build_decoder_and_tower(ctx.model, rc, seed, tok)
    positions = decoder_positions(decoder)
    max_length = min(rc.max_length or positions, positions)
    if rc.max_length and rc.max_length > positions:
        ctx.note(f"report.max_length={rc.max_length} exceeds the decoder's {positions} positions; using {positions}")
    if added:
        info["added_characters"] = "".join(added)
        ctx.note(f"{share:.1%} of the {rc.report_key} tokens of the training reports are [UNK] for the tokenizer; the "
                 f"fresh decoder's vocabulary gains their {len(added)} characters: "
                 f"{''.join(added[:30])}{' ...' if len(added) > 30 else ''}")
    elif share > UNK_WARN_SHARE:
        ctx.note(f"{share:.0%} of the {rc.report_key} tokens of the training reports are [UNK] for this model's "
                 f"tokenizer: its pretrained decoder cannot write them; a fresh decoder (report.decoder_init=fresh) "
                 f"learns them, best with a vocabulary that covers them (report.tokenizer=DIR, e.g. a stage-0 "
                 f"tokenizer trained on such text)")
    language = rc.language if rc.language != "auto" else text_language(train_reports)
    lengths = report_lengths(tok, train_reports)
    min_new = min(lengths, default=0) if rc.min_length is None else rc.min_length  # no end before the shortest
    min_new = max(0, min(min_new, max_length - 2))
    long = sum(n + 2 > max_length for n in lengths)  # + the start and end tokens
    if long:
        ctx.note(f"{long} of {len(train_reports)} training reports are longer than {max_length} tokens and "
                 f"are truncated")
    used = [c.images[i] for c in cases
            for i in (range(c.n_images) if rc.unit == "image" else even_subset(c.n_images, rc.max_images))]
    paths = list(dict.fromkeys(used))
    index = {p: i for i, p in enumerate(paths)}
    samples = {s: build_samples(by_split[s], rc.unit, rc.max_images, index) for s in SPLITS}
    device = ctx.device
    tower.to(device)
    decoder.to(device)
    tokens = TowerTokens(tower, paths, ctx.model.cfg.preprocess, device, rc.finetune, cfg.batch_size, cfg.num_workers)
    tokens.precompute(cfg.progress)
    fit = train_report_decoder(decoder, tower, tokens, samples["train"], samples["val"], tok, rc, max_length,
                               seed, device, cfg.progress, language, min_new)
    test = samples["test"]
    decode = {"beam": rc.num_beams, "greedy": 1} if rc.num_beams > 1 else {"greedy": 1}
    generated = {name: generate_reports(decoder, tokens, test, tok, rc.batch_size, max_length, beams,
                                        rc.length_penalty, rc.beam_stop, min_new)
                 for name, beams in decode.items()}  # test reports: decoded once per decoding, after selection
    scores = {name: score_reports(test, texts, language=language) for name, texts in generated.items()}
    main = "beam" if "beam" in decode else "greedy"
    if scores[main].get("notes"):
        ctx.note(str(scores[main]["notes"]))
    below = beam_below_greedy(scores)
    headline = "cider" if rc.select_metric == "loss" else rc.select_metric
    versus = None
    if "beam" in generated:  # is the difference more than the test set's sampling noise?
        refs = {i: [r] for i, r in zip(test.ids, test.reports)}
        versus = {"metric": headline, "n_boot": BEAM_BOOTSTRAP, **paired_caption_bootstrap(
            refs, dict(zip(test.ids, generated["beam"])), dict(zip(test.ids, generated["greedy"])), headline,
            BEAM_BOOTSTRAP, seed, language=language).to_dict()}
    if headline in below:
        ctx.note(f"beam search ({rc.num_beams}) scores below greedy decoding on the test {headline} "
                 f"({scores['beam'][headline]:.3f} < {scores['greedy'][headline]:.3f}; {_interval(versus)}): "
                 f"both are in results.md")
    method = f"{rc.unit}: {info['tower']} tower ({rc.finetune}), {info['decoder']} decoder"
    examples = [{"id": i, "reference": r, "generated": g, **({"greedy": gg} if main == "beam" else {})}
                for i, r, g, gg in zip(test.ids, test.reports, generated[main], generated["greedy"])]
    row = plain_row(ctx, "report", method, {k: v for k, v in scores[main].items() if k in REPORT_METRICS or k == "n"},
                    n_test=len(test))
    row.update({"split": "test", "n_train": len(samples["train"]), "n_val": len(samples["val"]),
                "hparams": [{"best_epoch": fit.best_epoch, "select_metric": rc.select_metric,
                             "best_val": {k: v for k, v in fit.best.items() if isinstance(v, (int, float))},
                             "max_length": max_length, "num_beams": rc.num_beams,
                             "val_num_beams": rc.validation_beams, "length_penalty": rc.length_penalty,
                             "early_stopping": rc.early_stopping, "min_length": min_new, **info}],
                "details": {"history": fit.history, "stop_reason": fit.stop_reason, "best_trivial": fit.best_trivial,
                            "tokenizer": scores[main].get("tokenizer"), "language": language,
                            "annotations": str(annotations), "report_key": rc.report_key, "unit": rc.unit,
                            "n_cases": {s: len(by_split[s]) for s in SPLITS}, "n_images": len(paths),
                            # one report for every case = a decoder that ignores the images
                            "distinct_reports": len(set(generated[main])),
                            "beam_below_greedy": below, "beam_minus_greedy": versus,
                            "decodings": {name: {"metrics": {k: v for k, v in sc.items() if k in REPORT_METRICS},
                                                 "num_beams": decode[name],
                                                 "distinct_reports": len(set(generated[name])),
                                                 "mean_words": _mean_length(generated[name], language)}
                                          for name, sc in scores.items()}}})
    write_text_atomic(ctx.out_dir / "report_predictions.json", json.dumps(examples, indent=1))
    write_text_atomic(ctx.out_dir / "results.md", results_markdown(ctx.model_name, str(annotations), row, examples,
                                                             rc.examples))
    return [row]


def beam_below_greedy(scores: Dict[str, Dict[str, object]]) -> List[str]:
    """The metrics on which beam search scores below greedy decoding (none when only one decoding ran)."""
    if "beam" not in scores:
        return []
    return [k for k in REPORT_METRICS if isinstance(scores["beam"].get(k), float)
            and isinstance(scores["greedy"].get(k), float) and scores["beam"][k] < scores["greedy"][k]]


def _interval(versus: Dict) -> str:
    return (f"{versus['diff']:+.3f}, 95 % interval {versus['lo']:+.3f} to {versus['hi']:+.3f}, p = {versus['p']:.2f} "
            f"(paired bootstrap, {versus['n_boot']} resamples)")


def _mean_length(texts: Sequence[str], language: str) -> float:
    """Mean report length in the metrics' tokens (words, or characters for Chinese)."""
    from ..captioning import simple_tokenize

    return float(sum(len(simple_tokenize(t, language).split()) for t in texts) / max(len(texts), 1))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_markdown(model: str, annotations: str, row: Dict, examples: Sequence[Dict], n_examples: int) -> str:
    """Test metrics, the validation choice and a few generated reports beside their references."""
    m = row["metrics"]
    names = [k for k in REPORT_METRICS if m.get(k) is not None]
    hp = row["hparams"][0]
    decodings = row["details"]["decodings"]
    lines = [f"# Report generation: {model}", "",
             f"Annotations `{annotations}`; {row['method']}; {row['n_train']} train / {row['n_val']} val / "
             f"{row['n_test']} test samples. Checkpoint: epoch {hp['best_epoch']} chosen on validation "
             f"{hp['select_metric']} ({hp['val_num_beams']}-beam validation decoding; -1 = before fine-tuning); "
             f"test decoding with {hp['num_beams']} beam(s), length penalty {hp['length_penalty']}, "
             f"{hp['min_length']} to {hp['max_length']} tokens; {row['details']['distinct_reports']} distinct generated reports for "
             f"{row['n_test']} test samples. Reports are scored in `{row['details']['language']}` "
             f"({row['details']['tokenizer']} tokens).", "",
             "| decoding | " + " | ".join(names) + " | distinct reports | mean length |",
             "|" + "---|" * (len(names) + 3)]
    for name, d in decodings.items():
        lines.append(f"| {name} ({d['num_beams']}) | " + " | ".join(f"{d['metrics'][k]:.3f}" for k in names)
                     + f" | {d['distinct_reports']} | {d['mean_words']:.1f} |")
    lines.append("")
    below, versus = row["details"].get("beam_below_greedy"), row["details"].get("beam_minus_greedy")
    if below:
        lines += [f"Beam search scores below greedy decoding on {', '.join(below)}.", ""]
    if versus:
        lines += [f"Beam minus greedy {versus['metric']}: {_interval(versus)}, over the {row['n_test']} test samples.",
                  ""]
    if "meteor" not in names:
        lines += ["METEOR: not computed (it needs Java).", ""]
    lines += ["## Generated reports (test)", "", "| id | reference | generated |", "|---|---|---|"]
    lines += [f"| {_cell(e['id'])} | {_cell(e['reference'])} | {_cell(e['generated'])} |"
              for e in list(examples)[:n_examples]]
    return "\n".join(lines) + "\n"
