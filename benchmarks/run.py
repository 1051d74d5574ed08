"""fundus-vlp benchmarks: one command, one table (``make bench`` or ``python benchmarks/run.py``).

Each benchmark compares against its baseline in the same run and reports the ratio:

* ddp      — optimiser-step time of `fundus-vlp pretrain` on 2 torchrun ranks (gloo on CPU, NCCL on GPU)
             vs 1 rank, same per-rank batch (weak scaling; ideal step-time ratio 1.0, throughput ratio 2.0).
* accum    — step time with accum_freq=2 (feature cache keeps all negatives) vs accum_freq=1, same batch.
* data     — loader throughput reading a `fundus-vlp prepare` cache vs decoding full-size originals.
* gpu      — (only with CUDA) training samples/s of rn50-bioclinicalbert-sized configs in fp32 vs amp_bf16.
* official — ours vs the official FLAIR training loop (``--official-src DIR``: their source tree), same
             images, dataframe, tokenizer, shapes and steps, alternating runs; images/s, data-wait share,
             peak RSS and the ratio (see benchmarks/official_loop.py for the offline patches).
* decode   — CPU ms per image of the training transform, full-size vs reduced-size JPEG decode, and of `prepare`.
* eval     — zero-shot of 1,000 fundus JPEGs at 224 px with rn18-minilm, model load included.

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
from typing import Optional

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
CORES = os.cpu_count() or 1


def _median_step_time(run_dir: Path, skip: int = 2) -> float:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_time"] for r in recs if r.get("kind") == "train"][skip:]
    return statistics.median(times)


def _pretrain(out: Path, name: str, nproc: int, extra: list[str]) -> float:
    """Median optimiser-step time of a short `fundus-vlp pretrain` run; the cores are shared out between ranks."""
    base = ["pretrain", "--overwrite", "method=flair", "model=rn18-minilm", "model.preprocess.size=96",
            "data.source=demo", "data.demo_size=tiny", "data.num_workers=0", "train.log_every=1",
            "train.tensorboard=false", "train.lock_text_layers=2", f"output_dir={out}", f"run_name={name}"] + extra
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
        cmd = [sys.executable, "-m", "fundus_vlp", "pretrain", "--overwrite", "method=keepfit_v2",
               "model=rn50-minilm", "data.source=demo", "data.num_workers=8", "train.batch_size=64",
               f"train.max_steps={steps}", "train.log_every=1", "train.tensorboard=false",
               f"train.precision={precision}", "train.channels_last=true", f"output_dir={out}", f"run_name={run}"]
        subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t = _median_step_time(out / run, skip=3)
        rate = 128 / t  # 64 public + 64 elite images per step
        base = base or rate
        rows.append((f"gpu: {name}" if precision == "fp32" else "", f"keepfit_v2 rn50-minilm 512px {precision}",
                     f"{t:.3f} s/step", f"{rate:.0f} img/s", f"{rate / base:.2f}x"))
    return rows


# -- ours vs the official FLAIR training loop ---------------------------------------------------------------

FLAIR_REPO, FLAIR_COMMIT = "https://github.com/jusiro/FLAIR", "d6652d53389ff49e5f73efaccf4246e9de88d1a3"
HOW_TO_GET_FLAIR = f"""--only official needs the official FLAIR source tree; nothing was measured. Get it with:
  git clone {FLAIR_REPO} /tmp/flair_repo
  mkdir -p /tmp/flair_src && git -C /tmp/flair_repo archive {FLAIR_COMMIT} | tar -x -C /tmp/flair_src
  pip install kornia==0.9.0 kornia-rs==0.2.0   # their augmentation (pyproject extra "bench")
then run: python benchmarks/run.py --only official --official-src /tmp/flair_src"""

# Shapes of the two configurations of the comparison (+ a tiny one for the smoke test).
OFFICIAL_CONFIGS = {
    "a": dict(vision="resnet18", our_model="rn18-minilm", size=128, batch=16, vocab=0, sources=("1500", "512"),
              bert=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)),
    "b": dict(vision="resnet50", our_model="rn50-bioclinicalbert", size=512, batch=4, vocab=28996, sources=("512",),
              bert=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
    "tiny": dict(vision="resnet18", our_model="rn18-minilm", size=64, batch=4, vocab=0, sources=("128",),
                 bert=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)),
}
# Official label strings (their expert-knowledge dictionary has entries for all of them, so their
# description augmentation runs; ours uses its own knowledge base for the same labels).
BENCH_LABELS = ["no diabetic retinopathy", "mild diabetic retinopathy", "moderate diabetic retinopathy",
                "age related macular degeneration", "normal"]
BENCH_DATASET = "01_EYEPACS"  # a dataset folder name outside both skip lists
TEMPLATE = "A [ATR] fundus photograph of [CLS]"
DATA_VERSION = "1"


def _render_fundus_jpegs(root: Path, n: int, sources: tuple) -> None:
    """n synthetic colour fundus photographs per source size ("1500", "512", ...), JPEG quality 95, made once."""
    from PIL import Image

    from fundus_vlp.demo_world.render import render_case
    from fundus_vlp.demo_world.scene import sample_case

    for res in sources:
        done = root / f"complete-{res}-{n}-v{DATA_VERSION}"
        if done.is_file():
            continue
        rng = np.random.default_rng(0)
        (root / res / BENCH_DATASET).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            side = int(res)
            img = Image.fromarray(render_case(sample_case(("normal",), "CFP", rng), min(side, 512), rng))
            if side > 512:  # upsampled + sensor-like grain: detail that a decoder has to work through
                big = np.asarray(img.resize((side, side), Image.BICUBIC), dtype=np.float32)
                big += rng.standard_normal(big.shape, dtype=np.float32) * 3.0
                img = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
            img.save(root / res / BENCH_DATASET / f"{i:04d}.jpg", quality=95)
        done.write_text("ok\n")


def _write_dataframe(root: Path, n: int) -> Path:
    """The official dataframe format: image, atributes, categories (Python list literals)."""
    frames = root / "dataframes"
    frames.mkdir(parents=True, exist_ok=True)
    csv = frames / f"{BENCH_DATASET}.csv"
    rows = [{"image": f"{BENCH_DATASET}/{i:04d}.jpg", "atributes": "[]",
             "categories": repr([BENCH_LABELS[i % len(BENCH_LABELS)]])} for i in range(n)]
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def _write_tokenizer(out: Path, official_src: Optional[str], vocab_size: int) -> Path:
    """A word-level BertTokenizerFast over every word the prompts can contain, padded to ``vocab_size``."""
    import re

    from transformers import BertTokenizerFast

    from fundus_vlp.data.knowledge import KnowledgeBase

    texts = [TEMPLATE] + BENCH_LABELS
    kb = KnowledgeBase.load()
    texts += [d for label in BENCH_LABELS for d in kb.descriptions(label)]
    if official_src:
        sys.path.insert(0, official_src)
        from flair.modeling.dictionary import definitions  # their description augmentation draws from it

        texts += [d for label in BENCH_LABELS for d in definitions.get(label, [])]
        sys.path.remove(official_src)
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += [f"[unused{i}]" for i in range(max(0, vocab_size - len(vocab)))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(str(out))
    return out


def _side(out: Path, side: str, spec: dict, extra: list[str]) -> dict:
    spec_path = out / f"spec-{spec['run_name']}.json"
    spec_path.write_text(json.dumps(spec))
    res = out / f"result-{spec['run_name']}.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "official_loop.py"), side, "--spec", str(spec_path),
           "--out", str(res)] + extra
    proc = subprocess.run(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(res.read_text())


def _bf16_cpu() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def bench_official(out: Path, official_src: Optional[str], configs: list[str], steps: int, skip: int,
                   repeats: int, data_dir: Optional[str], sides: list[str]) -> list[tuple]:
    """Images/s and data-wait share of the official loop and ours, same data, shapes and steps, alternating."""
    if "official" in sides and not official_src:
        print(HOW_TO_GET_FLAIR, file=sys.stderr)
        return []
    from fundus_vlp.data.loader import resolve_num_workers
    from fundus_vlp.runtime.device import usable_cores
    from fundus_vlp.data.prepare import prepare_dataset

    data_root = Path(data_dir) if data_dir else Path.home() / ".cache" / "fundus_vlp" / "bench_official"
    rows: list[tuple] = []
    for name in configs:
        c = OFFICIAL_CONFIGS[name]
        n = steps * c["batch"]
        _render_fundus_jpegs(data_root, n, c["sources"])
        csv = _write_dataframe(out / f"frames-{name}", n)
        tok = _write_tokenizer(out / f"tok-{name}", official_src, c["vocab"])
        bert = dict(c["bert"], vocab_size=len((tok / "vocab.txt").read_text().splitlines()))
        for source in c["sources"]:
            base = dict(official_src=official_src, tokenizer=str(tok), bert=bert, vision=c["vision"],
                        our_model=c["our_model"], size=c["size"], batch=c["batch"], steps=steps, skip=skip,
                        template=TEMPLATE, balance=False, dataset=BENCH_DATASET,
                        dataframes_path=str(csv.parent) + "/", data_root_path=str(data_root / source) + "/",
                        csv=str(csv), root=str(data_root / source), out_dir=str(out / "runs"))
            variants = [("official", "official loop (their num_workers=0)", [])] if "official" in sides else []
            auto = resolve_num_workers(-1)
            variants.append(("ours", f"ours, default workers (= {auto} on {usable_cores()} cores)", []))
            if auto:  # otherwise the same run as the row above
                variants.append(("ours", "ours, num_workers=0", ["data.num_workers=0"]))
            if source == "1500":
                cache = out / f"cache-{name}-{c['size']}"
                t = time.perf_counter()
                prepare_dataset(data_root / source, [csv], cache, size=c["size"], progress=False)
                prep_s = time.perf_counter() - t
                built = f"built at {n / prep_s:.1f} img/s"
                variants.append(("ours", f"ours from a {c['size']} px `prepare` cache ({built})", ["__cache__"]))
            if _bf16_cpu() or "cuda" in ENV.get("FUNDUS_VLP_BENCH_DEVICE", ""):
                variants.append(("ours", "ours, recommended CPU settings (bf16 autocast, channels_last)",
                                 ["train.precision=amp_bf16", "train.channels_last=true"]))
            results: dict[str, list[dict]] = {label: [] for _, label, _ in variants}
            for r in range(repeats):
                for i, (side, label, extra) in enumerate(variants):
                    spec = dict(base, run_name=f"{name}-{source}-{i}-{r}")
                    if extra == ["__cache__"]:
                        spec["root"], extra = str(cache), []
                    print(f"  official bench {name}/{source}: {label} (repeat {r + 1})", file=sys.stderr, flush=True)
                    results[label].append(_side(out, side, spec, extra))
            ref = None
            for side, label, _ in variants:
                runs = results[label]
                rate = statistics.median(x["images_per_s"] for x in runs)
                wait = statistics.median(x["data_wait_share"] for x in runs)
                rss = max(x["peak_rss_mib"] for x in runs)
                ref = ref if ref is not None else (rate if side == "official" else None)
                ratio = f"{rate / ref:.2f}x" if ref else ""
                first = label == variants[0][1]
                rows.append((f"official ({name}) {source}px JPEG" if first else "", label, f"{rate:.2f} img/s",
                             f"data wait {100 * wait:.0f}%, peak RSS {rss:.0f} MiB", ratio))
    return rows


def bench_eval(out: Path, n: int, data_dir: Optional[str]) -> list[tuple]:
    """Zero-shot of n 512 px fundus JPEGs at 224 px with rn18-minilm, model load included, fp32 and bf16."""
    from fundus_vlp.factory import create_model

    data_root = Path(data_dir) if data_dir else Path.home() / ".cache" / "fundus_vlp" / "bench_official"
    _render_fundus_jpegs(data_root, 80, ("512",))
    files = sorted((data_root / "512" / BENCH_DATASET).glob("*.jpg"))[:80]
    image_list = out / "eval_images.txt"
    image_list.write_text("\n".join(str(files[i % len(files)]) for i in range(n)) + "\n")
    create_model("rn18-minilm").save_pretrained(out / "rn18-minilm")
    rows = []
    precisions = ["fp32"] + (["amp_bf16"] if _bf16_cpu() else [])
    for precision in precisions:
        res = out / f"eval-{precision}.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_zero_shot.py"), str(out / "rn18-minilm"),
                        str(image_list), str(res), "--precision", precision], check=True, env=ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        r = json.loads(res.read_text())
        rows.append(("zero-shot eval" if precision == "fp32" else "",
                     f"{n} images 512px JPEG -> 224, rn18-minilm, {precision}",
                     f"{r['seconds']:.1f} s incl. {r['load_s']:.1f} s load", f"{n / r['seconds']:.1f} img/s, peak RSS "
                     f"{r['peak_rss_mib']:.0f} MiB", "target < 60 s"))
    return rows


def bench_decode(out: Path, data_dir: Optional[str], n: int = 12) -> list[tuple]:
    """CPU time per image (one thread, process time: robust on a shared machine) of the training transform
    from a full-size decode vs the reduced-size JPEG decode, and of one `prepare` cache entry, old vs new."""
    import torch
    from PIL import Image

    from fundus_vlp.config import PreprocessCfg
    from fundus_vlp.data.images import load_image
    from fundus_vlp.data.prepare import _process
    from fundus_vlp.data.transforms import build_transform, resize_pad_to_square

    torch.set_num_threads(1)
    data_root = Path(data_dir) if data_dir else Path.home() / ".cache" / "fundus_vlp" / "bench_official"
    _render_fundus_jpegs(data_root, n, ("1500", "512"))

    def cpu_ms(fn, files) -> float:
        best = float("inf")
        for _ in range(2):
            t = time.process_time()
            for i, f in enumerate(files):
                fn(i, f)
            best = min(best, (time.process_time() - t) / len(files) * 1000)
        return best

    rows = []
    for res, size in (("1500", 128), ("512", 128), ("512", 512)):
        files = sorted((data_root / res / BENCH_DATASET).glob("*.jpg"))[:n]
        tf = build_transform(PreprocessCfg(size=size), train=True)
        full = cpu_ms(lambda i, f: tf(load_image(f), np.random.default_rng(i)), files)
        draft = cpu_ms(lambda i, f: tf(load_image(f, draft_size=tf.draft_size), np.random.default_rng(i)), files)
        rows.append(("decode + train transform" if not rows else "", f"{res}px JPEG -> {size} px, 1 thread",
                     f"{draft:.1f} ms/img CPU", f"full-size decode {full:.1f} ms/img", f"{full / draft:.2f}x"))
    files = sorted((data_root / "1500" / BENCH_DATASET).glob("*.jpg"))[:n]

    def before(i, f):  # full decode, float resize, PNG at the default compression level
        img = resize_pad_to_square(load_image(f), 128)
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        Image.fromarray(arr).save(out / f"b{i}.png", format="PNG")

    old = cpu_ms(before, files)
    new = cpu_ms(lambda i, f: _process((str(f), str(out / f"n{i}.png"), "r", "", 128, False)), files)
    rows.append(("prepare, one image", "1500px JPEG -> 128 px PNG, 1 thread", f"{new:.1f} ms/img CPU",
                 f"= {1000 / new:.0f} img/s per core (was {old:.1f} ms)", f"{old / new:.2f}x"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["ddp", "accum", "data", "gpu"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--official-src", default=None, help="extracted source tree of the official FLAIR commit")
    parser.add_argument("--official-configs", nargs="*", default=["a", "b"], choices=sorted(OFFICIAL_CONFIGS))
    parser.add_argument("--official-steps", type=int, default=6, help="optimiser steps per run (one epoch)")
    parser.add_argument("--official-skip", type=int, default=1, help="warm-up steps left out of the rates")
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats per row (median reported)")
    parser.add_argument("--data-dir", default=None, help="where the benchmark's JPEGs are generated once")
    parser.add_argument("--sides", nargs="*", default=["official", "ours"], choices=["official", "ours"])
    args = parser.parse_args()
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        benches = {"ddp": lambda: bench_ddp(out, args.steps), "accum": lambda: bench_accum(out, args.steps),
                   "data": lambda: bench_data(out, args.images), "gpu": lambda: bench_gpu(out, args.steps),
                   "decode": lambda: bench_decode(out, args.data_dir),
                   "eval": lambda: bench_eval(out, args.eval_images, args.data_dir),
                   "official": lambda: bench_official(out, args.official_src, args.official_configs,
                                                      args.official_steps, args.official_skip, args.repeats,
                                                      args.data_dir, args.sides)}
        for name in args.only:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows += benches[name]()
    if not rows:
        return 2
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
