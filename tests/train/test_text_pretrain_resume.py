"""Stage 0 runs on the main Trainer: killed with SIGKILL mid-epoch and resumed with --resume latest, its loss
curve and final weights equal an uninterrupted run's (dropout and masking random state resume too)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from fundus_vlp.cli.main import main
from fundus_vlp.train.checkpoint import load_checkpoint
from test_text_pretrain import CORPUS as SENTENCES

CORPUS = SENTENCES[:6] * 6  # 36 paragraphs: 32 train (8 batches of 4 per epoch), 4 validation

SLOW_RUN = """
import sys, time
from fundus_vlp.config.loading import build_config
from fundus_vlp.train.config import TextPretrainCfg
from fundus_vlp.train.loop import Callback
from fundus_vlp.train.text_pretrain import text_pretrain

class SlowSteps(Callback):
    def on_step_end(self, trainer, values):
        time.sleep(0.4)

text_pretrain(build_config(TextPretrainCfg, [], sys.argv[1:]), callbacks=[SlowSteps()])
"""


def _args(tmp_path, name, mlm_dir):
    # a fixed vocabulary: the WordPiece trainer of `tokenizers` breaks ties differently in every process
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "a.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    return [f"text_model={mlm_dir}", f"corpus=[{corpus}]", "epochs=2", "batch_size=4", "context_length=32", "save_every_steps=3", "log_every=1", "optim.lr=1e-3",
            f"output_dir={tmp_path}", f"run_name={name}", "device=cpu"]


def _rows(run, kind):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


@pytest.mark.slow
def test_killed_and_resumed_stage0_matches_uninterrupted(tmp_path, tiny_mlm_dir):
    assert main(["text-pretrain"] + _args(tmp_path, "ref", tiny_mlm_dir)) == 0
    reference = {r["step"]: r["loss"] for r in _rows(tmp_path / "ref", "train")}
    assert sorted(reference) == list(range(1, 17))  # 2 epochs x 8 steps
    assert (tmp_path / "ref" / "checkpoints" / "latest.pt").is_file()  # stage 0 now writes checkpoints

    script = tmp_path / "slow_run.py"  # a public Callback slows the steps so the kill lands mid-epoch
    script.write_text(SLOW_RUN)
    args = _args(tmp_path, "killed", tiny_mlm_dir)
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run = tmp_path / "killed"
    deadline = time.time() + 180
    while max((r["step"] for r in _rows(run, "train")), default=0) < 11 and time.time() < deadline:
        assert proc.poll() is None, "training finished or crashed before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert 9 <= killed_at["step"] < 16 and killed_at["data"]["masking"]["generator"] is not None  # mid epoch 2
    assert not (run / "text_model").exists()

    assert main(["text-pretrain", "--resume", "latest"] + args) == 0
    resumed = {r["step"]: r["loss"] for r in _rows(run, "train")}
    assert sorted(resumed) == sorted(reference)
    for step, loss in reference.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step
    ref_w = load_file(str(tmp_path / "ref" / "text_model" / "model.safetensors"))
    new_w = load_file(str(run / "text_model" / "model.safetensors"))
    assert all(torch.allclose(ref_w[k], new_w[k], atol=1e-6) for k in ref_w)
    assert _rows(run, "val")[-1]["val_loss"] == pytest.approx(_rows(tmp_path / "ref", "val")[-1]["val_loss"],
                                                              rel=1e-5)
