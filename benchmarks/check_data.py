"""Memory and time of `fundus-vlp check-data` on EyePACS-sized JPEGs.

Compares, each in a fresh subprocess, after its imports (seconds of checking, and how far the process's
peak RSS rises above what the imports already took):

* full-decode-8 — what check-data did before: every image fully decoded to float RGB (``load_image``),
                  8 threads (the old default);
* full-decode-1 — the same on one thread;
* check-data    — ``check_dataset`` as ``fundus-vlp check-data`` runs it now: JPEGs decoded at reduced size
                  (``Image.draft``, which still reads every compressed block), workers = usable cores.

  python benchmarks/check_data.py [--images 16] [--size 4000x3000] [--out /tmp/fundus_vlp_bench_check]

The images are skimage's retina photograph upscaled to --size (JPEG quality 90), written once and reused.
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

# One child per variant. Imports (torch is most of a CLI process's memory) happen before the clock and the
# memory baseline, so the numbers are the checking work itself: seconds, and the rise of the peak RSS.
CHILD = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pandas as pd
from fundus_vlp.data.check import check_dataset, default_workers
from fundus_vlp.data.images import load_image

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

variant, root, csv = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
base, t0 = peak_mib(), time.perf_counter()
if variant == "check-data":
    report = check_dataset(root, [csv], progress=False)
    assert report.ok and report.images_ok > 0, report.problems[:3]
    workers = default_workers()
else:  # what check-data did before: a full float decode of every image on a thread pool
    workers = int(variant.rsplit("-", 1)[1])
    paths = [root / p for p in pd.read_csv(csv)["image"]]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda p: load_image(p).shape, paths))
print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), "workers": workers,
                  "peak_rss_rise_mib": round(peak_mib() - base, 1), "peak_rss_mib": round(peak_mib(), 1)}))
"""


def make_images(out: Path, n: int, size: tuple) -> Path:
    from PIL import Image
    from skimage.data import retina

    root = out / "images"
    root.mkdir(parents=True, exist_ok=True)
    csv = out / "images.csv"
    rows = []
    base = None
    for i in range(n):
        rel = f"eyepacs/{i:03d}.jpg"
        path = root / rel
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            if base is None:
                base = Image.fromarray(retina()).resize(size, Image.BICUBIC)
            # a different crop offset per file, so no two files are byte-identical
            base.transpose(Image.FLIP_LEFT_RIGHT if i % 2 else Image.ROTATE_180).save(path, quality=90)
        rows.append(f"{rel},[],['normal']")
    csv.write_text("image,atributes,categories\n" + "\n".join(rows) + "\n")
    return csv


def measure(variant: str, root: Path, csv: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, variant, str(root), str(csv)], env=ENV,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--out", default="/tmp/fundus_vlp_bench_check")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    out = Path(args.out)
    csv = make_images(out, args.images, size)
    root = out / "images"
    results = {v: measure(v, root, csv) for v in ("full-decode-8", "full-decode-1", "check-data")}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(json.dumps({"images": args.images, "size": args.size, "cores": cores, **results}, indent=2))


if __name__ == "__main__":
    main()
