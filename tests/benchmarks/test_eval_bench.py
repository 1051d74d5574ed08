"""Smoke test of the zero-shot timing script behind `benchmarks/run.py --only eval`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def test_eval_zero_shot_script_times_a_saved_model(tmp_path, tiny_overrides):
    from fundus_vlp.factory import create_model

    create_model("tiny", **tiny_overrides).save_pretrained(tmp_path / "model")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "images.txt").write_text("\n".join(map(str, paths)) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_zero_shot.py"), str(tmp_path / "model"),
                           str(tmp_path / "images.txt"), str(tmp_path / "out.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["predicted"] == 3 and out["seconds"] >= out["load_s"] > 0 and out["peak_rss_mib"] > 0
