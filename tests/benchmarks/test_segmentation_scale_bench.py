"""Smoke test of `benchmarks/segmentation_scale.py`: both layouts it writes are read by the segmentation
data code, and the three variants print one measured row each."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(ROOT / "benchmarks" / "segmentation_scale.py")]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_drive_layout_writer_gives_official_test_pairs(tmp_path):
    from fundus_vlp.eval.experiments import get_experiment
    from fundus_vlp.eval.segmentation_data import list_pairs

    proc = subprocess.run(SCRIPT + ["--drive", str(tmp_path / "DRIVE")], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exp = get_experiment(str(tmp_path / "DRIVE" / "drive.yaml"), dataframe_dir=str(tmp_path / "DRIVE"),
                         image_root=str(tmp_path / "DRIVE"))
    pairs = list_pairs(exp)
    assert len(pairs) == 40 and pairs.official_test.sum() == 20
    assert pairs.images[0].name == "21_training.tif" and pairs.masks[0].name == "21_manual1.gif"


@pytest.mark.heavy
def test_scale_benchmark_prints_every_variant(tmp_path):
    proc = subprocess.run(SCRIPT + ["--images", "8", "--source-size", "96", "--size", "32", "--out", str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "| 8 |" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["in-memory", "cache-build", "cache-reuse"]
