"""Zero-shot classification of N images, timed from loading a saved model to the predictions (one process).

``python benchmarks/eval_zero_shot.py MODEL_DIR IMAGE_LIST OUT.json [--precision fp32|amp_bf16]``
``benchmarks/run.py --only eval`` saves a randomly initialised ``rn18-minilm`` (224 px) and runs this on 1,000
fundus JPEGs; it prints seconds, images/s and the peak resident memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("image_list")
    parser.add_argument("out")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "amp_bf16"])
    args = parser.parse_args()
    t0 = time.perf_counter()
    import torch

    from fundus_vlp.data.knowledge import KnowledgeBase
    from fundus_vlp.inference.embedding import extract_features
    from fundus_vlp.inference.zero_shot import build_zero_shot_classifier
    from fundus_vlp.factory import from_pretrained
    from fundus_vlp.runtime.precision import autocast

    model = from_pretrained(args.model_dir).eval()
    t_load = time.perf_counter() - t0
    paths = [Path(p) for p in Path(args.image_list).read_text().split()]
    classes = ["no diabetic retinopathy", "mild diabetic retinopathy", "moderate diabetic retinopathy",
               "age related macular degeneration", "normal"]
    with autocast(args.precision, torch.device("cpu")):
        protos = build_zero_shot_classifier(model, classes, knowledge=KnowledgeBase.load())
        feats = extract_features(model, paths, batch_size=64, progress=False)
    preds = (feats.float() @ protos.float().T).argmax(1)
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps({"seconds": total, "load_s": t_load, "images": len(paths),
                                          "predicted": int(preds.numel()), "peak_rss_mib": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
