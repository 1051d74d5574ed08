"""fundus-vlp benchmarks: one command, one table (``make bench`` or ``python benchmarks/run.py``).

Each benchmark compares against its baseline in the same run and reports the ratio:

* ddp      — optimiser-step time of `fundus-vlp pretrain` on 2 torchrun ranks (gloo on CPU, NCCL on GPU)
             vs 1 rank, same per-rank batch (weak scaling; ideal step-time ratio 1.0, throughput ratio 2.0).
* accum    — step time with accum_freq=2 (feature cache keeps all negatives) vs accum_freq=1, same batch.
* data     — loader throughput reading a `fundus-vlp prepare` cache vs decoding full-size originals.
* gpu      — (only with CUDA) training samples/s of rn50-bioclinicalbert-sized configs in fp32 vs amp_bf16.

Numbers depend on the machine; the README/docs quote the ones measured with the command shown there.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
CORES = os.cpu_count() or 1


def _median_step_time(run_dir: Path, skip: int = 2) -> float:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_time"] for r in recs if r.get("kind") == "train"][skip:]
    return statistics.median(times)


def _pretrain(out: Path, name: str, nproc: int, extra: list[str]) -> float:
    """Median optimiser-step time of a short `fundus-vlp pretrain` run; the cores are shared out between ranks."""
    base = ["pretrain", "method=flair", "model=rn18-minilm", "model.preprocess.size=96", "data.source=demo",
            "data.demo_size=tiny", "data.num_workers=0", "train.log_every=1", "train.tensorboard=false",
            "train.lock_text_layers=2", f"output_dir={out}", f"run_name={name}"] + extra
    if nproc == 1:
        cmd = [sys.executable, "-m", "fundus_vlp"] + base
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "fundus_vlp"] + base
    env = {**ENV, "OMP_NUM_THREADS": str(max(1, CORES // nproc))}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return _median_step_time(out / name)


def bench_ddp(out: Path, steps: int) -> list[tuple]:
    """Same global batch (16) on 1 rank vs 2 ranks x 8 (strong scaling on the same cores)."""
    t1 = _pretrain(out, "ddp1", 1, [f"train.max_steps={steps}", "train.batch_size=16"])
    t2 = _pretrain(out, "ddp2", 2, [f"train.max_steps={steps}", "train.batch_size=8"])
    return [("ddp (CPU, gloo)", f"1 rank x 16, {CORES} threads", f"{t1:.3f} s/step", f"{16 / t1:.1f} samples/s", "1.00"),
            ("", f"2 ranks x 8, {max(1, CORES // 2)} thread(s) each", f"{t2:.3f} s/step", f"{16 / t2:.1f} samples/s",
             f"step time {t2 / t1:.2f}x")]


def bench_accum(out: Path, steps: int) -> list[tuple]:
    t1 = _pretrain(out, "acc1", 1, [f"train.max_steps={steps}", "train.batch_size=16"])
    t2 = _pretrain(out, "acc2", 1, [f"train.max_steps={steps}", "train.batch_size=16", "train.accum_freq=2"])
    return [("accumulation", "accum_freq=1, batch 16", f"{t1:.3f} s/step", "", "1.00"),
            ("", "accum_freq=2 (feature cache)", f"{t2:.3f} s/step", "", f"{t2 / t1:.2f}x")]


def _write_originals(root: Path, n: int, size: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "orig").mkdir(parents=True)
    rows = []
    for i in range(n):
        arr = rng.integers(0, 255, (size, int(size * 1.3), 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "orig" / f"{i}.jpg", quality=92)
        rows.append(f"{i},orig/{i}.jpg,[],['normal']")
    csv = root / "df.csv"
    csv.write_text(",image,atributes,categories\n" + "\n".join(rows) + "\n")
    return csv


def _loader_rate(root: Path, csv: Path, size: int) -> float:
    from fundus_vlp.config import PreprocessCfg
    from fundus_vlp.data.dataframes import read_categorical
    from fundus_vlp.data.datasets import CategoricalDataset, LabelVocab
    from fundus_vlp.data.transforms import build_transform

    frame = read_categorical(csv)
    ds = CategoricalDataset(frame, root, build_transform(PreprocessCfg(size=size), train=True), LabelVocab(["normal"]))
    t = time.perf_counter()
    for i in range(len(ds)):
        ds.get(i, i)
    return len(ds) / (time.perf_counter() - t)


def bench_data(out: Path, n: int) -> list[tuple]:
    from fundus_vlp.data.prepare import prepare_dataset

    csv = _write_originals(out / "data", n, 1536)
    raw = _loader_rate(out / "data", csv, 224)
    t = time.perf_counter()
    prepare_dataset(out / "data", [csv], out / "cache", size=224, workers=2, progress=False)
    prep_time = time.perf_counter() - t
    cached = _loader_rate(out / "cache", csv, 224)
    return [("data loading (1 proc)", f"{n} originals 1536x1997 JPEG", f"{raw:.1f} img/s", "", "1.00"),
            ("", "prepared cache 224 px PNG", f"{cached:.1f} img/s", f"prepare: {n / prep_time:.1f} img/s (2 workers)",
             f"{cached / raw:.1f}x")]


def bench_gpu(out: Path, steps: int) -> list[tuple]:
    import torch

    if not torch.cuda.is_available():
        return [("gpu", "no CUDA device", "skipped", "", "")]
    rows = []
    name = torch.cuda.get_device_name(0)
    base = None
    for precision in ("fp32", "amp_bf16"):
        run = f"gpu-{precision}"
        cmd = [sys.executable, "-m", "fundus_vlp", "pretrain", "method=keepfit_v2", "model=rn50-minilm",
               "data.source=demo", "data.num_workers=8", "train.batch_size=64", f"train.max_steps={steps}",
               "train.log_every=1", "train.tensorboard=false", f"train.precision={precision}",
               "train.channels_last=true", f"output_dir={out}", f"run_name={run}"]
        subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t = _median_step_time(out / run, skip=3)
        rate = 128 / t  # 64 public + 64 elite images per step
        base = base or rate
        rows.append((f"gpu: {name}" if precision == "fp32" else "", f"keepfit_v2 rn50-minilm 512px {precision}",
                     f"{t:.3f} s/step", f"{rate:.0f} img/s", f"{rate / base:.2f}x"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["ddp", "accum", "data", "gpu"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        benches = {"ddp": lambda: bench_ddp(out, args.steps), "accum": lambda: bench_accum(out, args.steps),
                   "data": lambda: bench_data(out, args.images), "gpu": lambda: bench_gpu(out, args.steps)}
        for name in args.only:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows += benches[name]()
    headers = ("benchmark", "configuration", "time / rate", "extra", "ratio vs baseline")
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(5)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
