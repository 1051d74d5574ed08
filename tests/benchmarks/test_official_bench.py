"""Smoke test of `benchmarks/run.py --only official` on a tiny configuration (the benchmark itself is a command)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "official"]


def _run(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HOME": str(tmp_path)}
    return subprocess.run(RUN + args, env=env, capture_output=True, text=True, timeout=600)


def test_without_the_official_tree_it_says_how_to_get_it_and_measures_nothing(tmp_path):
    proc = _run([], tmp_path)
    assert proc.returncode == 2
    assert "d6652d53389ff49e5f73efaccf4246e9de88d1a3" in proc.stderr and "--official-src" in proc.stderr
    assert "img/s" not in proc.stdout


@pytest.mark.heavy
def test_tiny_config_prints_a_measured_row(tmp_path):
    args = ["--official-configs", "tiny", "--official-steps", "2", "--official-skip", "1",
            "--data-dir", str(tmp_path / "data")]
    src = os.environ.get("FUNDUS_VLP_FLAIR_SRC")  # an extracted official tree: run both sides
    args += ["--official-src", src] if src else ["--sides", "ours"]
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if "img/s" in line]
    assert any("ours, default workers" in r and "data wait" in r and "peak RSS" in r for r in rows), proc.stdout
    if src:
        assert any("official loop" in r for r in rows) and any(r.rstrip().endswith("x") for r in rows)
