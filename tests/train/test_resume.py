"""Kill a real training subprocess mid-epoch, resume with --resume latest: the loss curve equals an
uninterrupted run; corrupt checkpoints are reported and the previous good one is used."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import pretrain_overrides
from fundus_vlp.cli.main import main
from fundus_vlp.hub import CheckpointError
from fundus_vlp.train.checkpoint import CheckpointManager, load_checkpoint

EXTRA = {"train.epochs": 2, "train.save_every_steps": 2, "keepfit.revision.attn_dropout": 0.5}  # dropout: RNG must resume too


SLOW_RUN = """
import sys, time
from fundus_vlp.config.loading import build_config
from fundus_vlp.train.config import PretrainCfg
from fundus_vlp.train.loop import Callback, pretrain

class SlowSteps(Callback):
    def on_step_end(self, trainer, values):
        time.sleep(0.4)

pretrain(build_config(PretrainCfg, [], sys.argv[1:], has_model=True), callbacks=[SlowSteps()])
"""


def _losses(run):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r.get("kind") == "train"}


def _steps_logged(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return max(steps, default=0)


@pytest.mark.slow
def test_killed_and_resumed_run_matches_uninterrupted(image_dataset, tiny_overrides, tmp_path):
    ref_args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit", run_name="ref", **EXTRA)
    assert main(["pretrain"] + ref_args) == 0
    reference = _losses(tmp_path / "ref")
    assert len(reference) == 12  # 2 epochs x 6 steps

    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit", run_name="killed", **EXTRA)
    script = tmp_path / "slow_run.py"  # a public Callback slows the steps so the kill lands mid-epoch
    script.write_text(SLOW_RUN)
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run = tmp_path / "killed"
    deadline = time.time() + 120
    while _steps_logged(run) < 7 and time.time() < deadline:  # step 7 = mid second epoch, after the step-6 checkpoint
        assert proc.poll() is None, "training finished or crashed before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _steps_logged(run) < 12
    killed_at = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert 6 <= killed_at["step"] < 12

    assert main(["pretrain", "--resume", "latest"] + args) == 0
    resumed = _losses(run)
    assert sorted(resumed) == sorted(reference)
    for step, loss in reference.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step


def test_corrupt_latest_checkpoint_falls_back_to_previous_good_one(image_dataset, tiny_overrides, tmp_path, caplog):
    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "flair", run_name="c",
                              **{"train.save_every_steps": 2, "train.keep_checkpoints": 3})
    assert main(["pretrain"] + args) == 0
    ckdir = tmp_path / "c" / "checkpoints"
    latest = ckdir / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:500])  # truncated by a full disk, say
    (ckdir / "step_6.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="latest.pt: unreadable or truncated"):
        load_checkpoint(latest)
    chosen = CheckpointManager(ckdir).resolve_resume("latest")
    assert chosen.name == "step_4.pt"
    assert any("skipping unusable checkpoint" in r.message for r in caplog.records)


def test_checkpoint_is_loaded_without_unpickling_arbitrary_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"task": {}, "step": 1, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a safe checkpoint"):
        load_checkpoint(path)
