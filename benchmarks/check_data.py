"""Memory and time of `fundus-vlp check-data` on EyePACS-sized JPEGs.

Compares, each in a fresh subprocess (peak RSS from the kernel's accounting of that child):

* full-decode-8 — what check-data did before: every image fully decoded to float RGB (``load_image``),
                  8 threads (the old default);
* check-data    — ``fundus-vlp check-data`` as it is now: JPEGs decoded at reduced size (``Image.draft``,
                  which still reads every compressed block), workers = usable cores.

  python benchmarks/check_data.py [--images 16] [--size 4000x3000] [--out /tmp/fundus_vlp_bench_check]

The images are skimage's retina photograph upscaled to --size (JPEG quality 90), written once and reused.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}

FULL_DECODE = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pandas as pd
from fundus_vlp.data.images import load_image
root, csv = Path(sys.argv[1]), sys.argv[2]
paths = [root / p for p in pd.read_csv(csv)["image"]]
with ThreadPoolExecutor(max_workers=8) as pool:
    shapes = list(pool.map(lambda p: tuple(load_image(p).shape), paths))
print(len(shapes), "decoded")
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


def measure(cmd: list) -> dict:
    """Wall time and peak RSS (MiB) of one child process (its own rusage, from wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(stderr.decode()[-2000:])
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "rc": proc.returncode}


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
    results = {
        "check-data": measure([sys.executable, "-m", "fundus_vlp", "--log-level", "WARNING", "check-data",
                               "--root", str(root), "--dataframe", str(csv)]),
        "full-decode-8": measure([sys.executable, "-c", FULL_DECODE, str(root), str(csv)]),
    }
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(json.dumps({"images": args.images, "size": args.size, "cores": cores, **results}, indent=2))


if __name__ == "__main__":
    main()
