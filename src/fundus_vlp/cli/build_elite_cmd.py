"""``fundus-vlp build-elite PDF... --out DIR``: an elite image–caption set from atlas PDFs."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import List, Mapping, Sequence, Tuple

HELP = """Extract figure/caption pairs from atlas PDFs into an elite caption file
(image, caption, caption_zh, modality, source, page, figure, panel, confidence), the images, rejected.csv
and review.html (accept/reject in a browser, then "Export accepted CSV"). Re-running with the same --out
skips the PDFs already built; a PDF that cannot be read is reported and the others go on.

  fundus-vlp build-elite atlas1.pdf atlas2.pdf --out elite/
  fundus-vlp build-elite books/*.pdf --out elite/ --model runs/v2/model     # zero-shot modality
  fundus-vlp build-elite atlas.pdf --out elite/ max_caption_gap=0.4 dedup_max_distance=0

Settings (key=value, or --config FILE.yaml): see fundus_vlp.elite_builder.EliteBuildCfg.

A damaged PDF (truncated, garbled header: the PDF library repairs it and may lose pages) is reported with
what was recovered and not kept unless --accept-repaired. Exit status: 0 every PDF built, 1 a PDF failed,
3 a PDF was damaged and not kept (none failed).
"""

EXIT_FAILED, EXIT_DAMAGED = 1, 3

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def register(sub) -> None:
    p = sub.add_parser("build-elite", help="build an elite image-caption set from atlas PDFs", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="PDF|key=value", help="atlas PDF files, then optional overrides")
    p.add_argument("--out", required=True, help="output folder (created; reused to resume)")
    p.add_argument("--model", default=None, help="a saved fundus-vlp model folder: classify modality zero-shot "
                                                 "(default: colour/texture statistics)")
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml", help="settings file (repeatable)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (with --model)")
    p.add_argument("--accept-repaired", action="store_true",
                   help="keep the pairs of PDFs the PDF library had to repair (and mark them done)")
    p.set_defaults(func=run, trailing_positionals="inputs")


def split_inputs(inputs: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(PDF paths, key=value overrides): an argument is an override when it looks like one and is no file."""
    pdfs, overrides = [], []
    for item in inputs:
        (overrides if _OVERRIDE.match(item) and not Path(item).exists() else pdfs).append(item)
    return pdfs, overrides


def model_modality_classifier(model, device: str = "cpu"):
    """Zero-shot modality probabilities from a fundus-vlp model (``fundus_vlp.predict``): each modality's
    prompts (``MODALITY_PROMPTS``) as its prompt ensemble, softmax at the model's logit scale."""
    from ..elite_builder import MODALITIES, MODALITY_PROMPTS
    from ..inference.zero_shot import head_from_prompts

    head = head_from_prompts(model, {m: MODALITY_PROMPTS[m] for m in MODALITIES}, device)

    def classify(images) -> List[Mapping[str, float]]:
        from ..inference.pipeline import predict

        probs = predict(model, list(images), MODALITIES, head=head, device=device).probabilities
        return [{m: float(row[m]) for m in MODALITIES} for _, row in probs.iterrows()]

    return classify


def run(args: argparse.Namespace) -> int:
    from ..config.loading import build_config
    from ..elite_builder import EliteBuildCfg, build_elite

    pdfs, overrides = split_inputs(args.inputs)
    if not pdfs:
        raise ValueError("no PDF given")
    cfg = build_config(EliteBuildCfg, args.config, overrides)
    if args.accept_repaired:
        cfg.accept_repaired = True
    classifier = None
    if args.model:
        from ..inference.loading import load_model
        from ..runtime.device import resolve_device

        device = resolve_device(args.device)
        classifier = model_modality_classifier(load_model(args.model, device=device).model, device)

    def show(result) -> None:
        if result.status == "failed":
            print(f"FAILED  {result.error}")
        elif result.status == "damaged":
            print(f"DAMAGED {result.error}")
        else:
            print(f"{result.status:<13} {result.source}: {result.pages} pages, {result.pairs} pairs, "
                  f"{result.rejected} rejected ({result.seconds:.1f} s)"
                  + (f"; {result.damage}, accepted" if result.damage else ""))

    report = build_elite(pdfs, args.out, cfg, classifier, on_result=show)
    out = Path(args.out)
    print(f"{report.pairs} pairs -> {out / 'elite.csv'} (review: {out / 'review.html'}); "
          f"{report.rejected} rejected -> {out / 'rejected.csv'}")
    if report.damaged:
        print(f"{len(report.damaged)} of {len(report.results)} PDF(s) damaged and not kept (listed above); replace "
              f"them, or keep what was recovered with --accept-repaired")
    if report.failed:
        print(f"{len(report.failed)} of {len(report.results)} PDF(s) failed (listed above); fix them and re-run: "
              f"finished PDFs are skipped")
        return EXIT_FAILED
    return EXIT_DAMAGED if report.damaged else 0
