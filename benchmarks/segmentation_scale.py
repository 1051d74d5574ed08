"""Memory and time of segmentation data at dataset scale: decoding into memory on every run vs the
memory-mapped cache (decoded once, then streamed).

Writes a FIVES-layout set once (train|test / Original|Ground truth, PNG images and 0/255 vessel masks of the
same name; skimage's retina photograph flipped, rotated and brightness-jittered, vessels from a ridge filter),
then runs each variant in a fresh subprocess, after its imports (seconds of wall and CPU time, and how far
the process's peak RSS and its anonymous memory rise above what the imports took):

* in-memory   -- every pair decoded into RAM (what every run did before the cache), then one epoch of batches;
* cache-build -- the first cached run: every pair decoded once into the memory-mapped cache;
* cache-reuse -- a later run: the cache opened (nothing decoded), then one epoch of batches streamed from it.

  python benchmarks/segmentation_scale.py [--images 800] [--source-size 1024] [--size 512] [--out DIR]

``--drive DIR`` only writes a DRIVE-layout vessel set (20 training + 20 test crops of the same photograph at
half resolution, TIFF images, palette-GIF 0/255 masks named ``NN_manual1.gif``, pairs CSVs, ``drive.yaml``);
training crops come from the upper half of the photograph and test crops from the lower half, so the test
vessels are never seen in training. The README's vessel Dice is measured on it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}

CHILD = """
import json, resource, sys, time
import numpy as np
from fundus_vlp.eval.experiments import get_experiment
from fundus_vlp.eval.segmentation_data import cached_arrays, list_pairs, load_pairs
from fundus_vlp.eval.segmentation_train import take
from fundus_vlp.runtime.device import usable_cores

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # MiB

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

variant, data, cache, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
exp = get_experiment("13_FIVES_vessels", image_root=data)
pairs = list_pairs(exp)
peak0, anon0, t0, c0 = status("VmHWM"), status("RssAnon"), time.perf_counter(), cpu()
if variant == "in-memory":
    images, masks = load_pairs(pairs, exp, size)
else:
    images, masks, info = cached_arrays(pairs, exp, size, cache, workers=usable_cores())
t_data = time.perf_counter() - t0
if variant != "cache-build":
    order = np.random.default_rng(0).permutation(np.flatnonzero(~pairs.official_test))
    for i in range(0, len(order), 8):  # one epoch of training batches, as the training loop reads them
        x, y = take(images, order[i:i + 8]), take(masks, order[i:i + 8])
print(json.dumps({"variant": variant, "pairs": len(pairs), "data_s": round(t_data, 1),
                  "total_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu() - c0, 1),
                  "peak_rss_rise_mib": round(status("VmHWM") - peak0), "anon_rise_mib": round(status("RssAnon") - anon0)}))
"""


def write_fives_like(out: Path, n: int, source_size: int) -> Path:
    """``n`` pairs in the FIVES layout (3/4 train, 1/4 test), written once and reused."""
    import numpy as np
    from PIL import Image
    from skimage import data, filters, transform

    done = out / f"done-{n}-{source_size}"
    if done.is_file():
        return out
    retina = transform.resize(data.retina(), (source_size, source_size), anti_aliasing=True)
    ridges = filters.sato(retina[..., 1], sigmas=[2, 4], black_ridges=True)
    vessels = ridges > np.quantile(ridges, 0.9)
    rng = np.random.default_rng(0)
    for i in range(n):
        split = "train" if i < n * 3 // 4 else "test"
        k, flip, gain = int(rng.integers(4)), bool(rng.integers(2)), rng.uniform(0.8, 1.2)
        img, mask = np.rot90(retina, k), np.rot90(vessels, k)
        if flip:
            img, mask = img[:, ::-1], mask[:, ::-1]
        name = f"{i + 1}_{'ADGN'[i % 4]}.png"
        for folder, arr in (("Original", np.clip(img * gain * 255, 0, 255).astype(np.uint8)),
                            ("Ground truth", (mask * 255).astype(np.uint8))):
            path = out / split / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(arr)).save(path, compress_level=1)
    done.write_text("ok\n")
    return out


def write_drive_like(out: Path, n_train: int = 20, n_test: int = 20, crop: int = 288) -> Path:
    import numpy as np
    from PIL import Image
    from skimage import data, filters, transform

    retina = transform.resize(data.retina(), (896, 896), anti_aliasing=True)
    ridges = filters.sato(retina[..., 1], sigmas=[1, 2, 3], black_ridges=True)
    fov = (np.mgrid[:896, :896] - 448) ** 2
    inside = fov.sum(0) < 400 ** 2
    vessels = (ridges > np.quantile(ridges[inside], 0.88)) & inside
    rng = np.random.default_rng(0)
    for split, n, first, rows in (("training", n_train, 21, (80, 448 - crop // 2)), ("test", n_test, 1, (448, 816 - crop))):
        lines = ["image,mask"]
        for i in range(n):
            y, x = int(rng.integers(*rows)), int(rng.integers(120, 776 - crop))
            k = int(rng.integers(4))
            img = np.rot90(retina[y:y + crop, x:x + crop], k)
            ves = np.rot90(vessels[y:y + crop, x:x + crop], k)
            image = out / split / "images" / f"{first + i:02d}_{split}.tif"
            mask = out / split / "1st_manual" / f"{first + i:02d}_manual1.gif"
            for path in (image, mask):
                path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(image)
            Image.fromarray((ves * 255).astype(np.uint8)).save(mask)  # an L image saved as GIF: palette GIF
            lines.append(f"{image.relative_to(out)},{mask.relative_to(out)}")
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (out / "drive.yaml").write_text("name: DRIVE_like\ntask: segmentation\nclasses: [background, vessel]\n"
                                    "masks: training.csv\ntest_masks: test.csv\nprimary_metric: dice_mean\n"
                                    "zero_shot: false\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--source-size", type=int, default=1024, help="side of the written PNGs (FIVES: 2048)")
    ap.add_argument("--size", type=int, default=512, help="working size (the ResNet-50 models' input size)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/fundus_vlp_bench_segmentation"))
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--drive", type=Path, default=None, help="only write a DRIVE-layout vessel set into this folder")
    args = ap.parse_args()
    if args.drive:
        print(f"DRIVE-layout set: {write_drive_like(args.drive)}  (experiment: {args.drive / 'drive.yaml'})")
        return 0
    data = write_fives_like(args.out / "FIVES", args.images, args.source_size)
    cache = args.out / "cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    rows = []
    for variant in ("in-memory", "cache-build", "cache-reuse"):
        proc = subprocess.run([sys.executable, "-c", CHILD, variant, str(data), str(cache), str(args.size)],
                              env=ENV, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{args.images} FIVES-layout pairs, {args.source_size}px PNG -> {args.size}px; cache "
          f"{sum(f.stat().st_size for f in cache.rglob('*.npy')) / 2**20:.0f} MiB on disk")
    print("| variant | pairs | data ready (s) | total incl. one epoch (s) | CPU (s) | peak RSS rise (MiB) | anonymous memory rise (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['pairs']} | {r['data_s']} | {r['total_s']} | {r['cpu_s']} | "
              f"{r['peak_rss_rise_mib']} | {r['anon_rise_mib']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
