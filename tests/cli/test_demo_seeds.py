"""`fundus-vlp demo seeds=0,1`: pretraining repeated per seed, zero-shot mean ± std per method."""
from __future__ import annotations

import json

import pytest

from fundus_vlp.cli.main import main


@pytest.mark.slow
def test_demo_seeds_repeats_pretraining_and_reports_mean_and_std(tmp_path, capsys):
    args = ["demo", "seeds=0,1", "methods=[clip,flair]", "world=tiny", "model=tiny", "image_size=32", "steps=2",
            "batch_size=4", "elite_batch_size=2", "experiments=[demo_unseen]", "folds=1",
            f"output_dir={tmp_path}", "run_name=s"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mean ± std over pretraining seeds" in out
    table = [line for line in out.splitlines() if line.startswith("| clip") or line.startswith("| flair")]
    assert len(table) == 2 and all("± " in line and "(n=2)" in line for line in table)
    first_loss = {}
    for seed in (0, 1):
        metrics = tmp_path / "s" / f"seed{seed}" / "clip" / "metrics.jsonl"
        recs = [json.loads(x) for x in metrics.read_text().splitlines()]
        first_loss[seed] = next(r["loss"] for r in recs if r["kind"] == "train")
    assert first_loss[0] != first_loss[1]  # the seed really changed the pretraining
    summary = json.loads((tmp_path / "s" / "demo_results.json").read_text())
    assert summary["config"]["seeds"] == [0, 1] and len(summary["rows"]) >= 4
