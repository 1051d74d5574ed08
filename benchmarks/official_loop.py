"""One training run of the official FLAIR loop or of ours, timed per step; run in its own process.

``python benchmarks/official_loop.py official|ours --spec SPEC.json --out RESULT.json``

``benchmarks/run.py --only official`` writes the data, the tokenizer and SPEC, starts this script once per
row (alternating official / ours) and prints the table. Both sides see the same images, dataframe,
tokenizer, model shapes, batch size and step count; each run reports images/s and the share of the step
spent waiting for data over the steps after the warm-up ones, and its peak resident memory.

The official side is the code of github.com/jusiro/FLAIR (``FLAIRModel.fit`` -> ``train_epoch``, its
``get_loader`` pipeline and kornia augmentation), imported from ``spec["official_src"]`` and patched only
where it needs the network or hard-codes a shape:

* ``AutoTokenizer`` / ``AutoModel`` -> the benchmark's word-level ``BertTokenizerFast`` and a randomly
  initialised ``BertModel`` of the configured shape (``vision_pretrained=False``: no ImageNet download);
* ResNet-18 in place of ``torchvision.models.resnet50`` for config (a), and the two projection layers
  re-created with the input widths of the smaller towers (their code hard-codes 2048 and 768);
* ``ImageScaling``'s default size (``get_loader`` does not pass one; 512 px in their code) set to the
  configured size.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


class TimedLoader:
    """Wraps a loader: records, per batch, when it was asked for and when it arrived."""

    def __init__(self, loader):
        self.loader = loader
        self.asked: list = []
        self.got: list = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            self.asked.append(time.perf_counter())
            try:
                batch = next(it)
            except StopIteration:
                self.asked.pop()
                return
            self.got.append(time.perf_counter())
            yield batch

    def step_times(self, end: float) -> list:
        """(total, data wait) per step: from asking for batch k to asking for batch k+1 (or ``end``)."""
        nxt = self.asked[1:] + [end]
        return [(n - a, g - a) for a, g, n in zip(self.asked, self.got, nxt)]


def _peak_rss_mib() -> float:
    """Peak resident set of this process and of its finished children (loader workers), MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def _summary(steps: list, batch: int, skip: int) -> dict:
    kept = steps[skip:]
    total = sum(t for t, _ in kept)
    wait = sum(d for _, d in kept)
    return {"images_per_s": batch * len(kept) / total, "data_wait_share": wait / total, "steps": len(kept),
            "step_s": total / len(kept)}


def run_official(spec: dict) -> dict:
    import torch
    import torchvision
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    sys.path.insert(0, spec["official_src"])
    import flair.modeling.model as fm
    import flair.pretraining.data.transforms as ft
    from flair.pretraining.data.dataloader import get_loader

    class OfflineTokenizer:  # AutoTokenizer.from_pretrained(bert_type) needs the hub
        @staticmethod
        def from_pretrained(_name, **_kw):
            return BertTokenizerFast.from_pretrained(spec["tokenizer"])

    class OfflineModel:  # AutoModel.from_pretrained(bert_type, output_hidden_states=True) needs the hub
        @staticmethod
        def from_pretrained(_name, **kw):
            return BertModel(BertConfig(**spec["bert"], **kw), add_pooling_layer=True)

    fm.AutoTokenizer, fm.AutoModel = OfflineTokenizer, OfflineModel
    size = spec["size"]
    ft.ImageScaling.__init__.__defaults__ = ((size, size), True, "image")
    if spec["vision"] == "resnet18":
        fm.torchvision.models.resnet50 = torchvision.models.resnet18

    loaders = get_loader(dataframes_path=spec["dataframes_path"], data_root_path=spec["data_root_path"],
                         datasets=[spec["dataset"]], balance=spec["balance"], batch_size=spec["batch"],
                         num_workers=0, banned_categories=None, caption=spec["template"], augment_description=True)
    model = fm.FLAIRModel(vision_type="resnet_v1", vision_pretrained=False, from_checkpoint=False, out_path=None)
    width = {"resnet18": 512, "resnet50": 2048}[spec["vision"]]
    model.vision_model.projection_head_vision.projection = torch.nn.Linear(width, 512, bias=False)
    model.text_model.projection_head_text.projection = torch.nn.Linear(spec["bert"]["hidden_size"], 512, bias=False)
    timed = TimedLoader(loaders["train"])
    model.fit({"train": timed}, epochs=1, lr=1e-4, weight_decay=1e-5, scheduler=True, warmup_epoch=1, store_num=5,
              transforms=ft.augmentations_pretraining)
    return _summary(timed.step_times(time.perf_counter()), spec["batch"], spec["skip"])


def run_ours(spec: dict, extra: list) -> dict:
    from fundus_vlp.cli.main import main

    run_dir = Path(spec["out_dir"]) / spec["run_name"]
    bert = {k: v for k, v in spec["bert"].items() if k != "vocab_size"}
    overrides = ", ".join(f"{k}: {v}" for k, v in bert.items())
    args = [
        "pretrain", "method=flair", f"model={spec['our_model']}", "model.embed_dim=512",
        "model.text.hf_model_name=null", "model.text.pretrained=false",
        f"model.text.hf_tokenizer_name={spec['tokenizer']}",
        f"model.text.config_overrides={{{overrides}}}", f"model.preprocess.size={spec['size']}",
        f"data.public=[{{dataframes: ['{spec['csv']}'], root: '{spec['root']}'}}]", f"data.balance={spec['balance']}",
        f"data.prompt.template='{spec['template']}'", f"train.batch_size={spec['batch']}",
        f"train.max_steps={spec['steps']}", "train.epochs=1", "train.log_every=1", "train.tensorboard=false",
        "train.lock_text_layers=-1", "optim.grad_clip_norm=1.0", f"output_dir={spec['out_dir']}",
        f"run_name={spec['run_name']}",
    ] + extra
    if main(args) != 0:
        raise RuntimeError(f"fundus-vlp {' '.join(args)} failed")
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["step_time"] + r["data_time"], r["data_time"]) for r in recs if r.get("kind") == "train"]
    return _summary(steps, spec["batch"], spec["skip"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("side", choices=["official", "ours"])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("extra", nargs="*", help="ours: extra key=value overrides")
    args = parser.parse_intermixed_args()
    spec = json.loads(Path(args.spec).read_text())
    t = time.perf_counter()
    result = run_official(spec) if args.side == "official" else run_ours(spec, args.extra)
    result["wall_s"] = time.perf_counter() - t
    result["peak_rss_mib"] = _peak_rss_mib()
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
