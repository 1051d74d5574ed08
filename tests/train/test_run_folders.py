"""A run never destroys another run: one process owns a run folder (run.lock), a folder that holds a run is
only resumed or, with --overwrite, moved aside; metrics rows name their run; a renamed run resumes; a refused
resume leaves config.yaml as it was."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import pretrain_overrides
from fundus_vlp.cli.main import main

# One process that owns a run folder (prepare_run_dir) and keeps it until its stdin closes or it is killed.
OWNER = """
import sys
from fundus_vlp.runtime import distributed as dist
from fundus_vlp.train.config import PretrainCfg
from fundus_vlp.train.rundir import prepare_run_dir, RunFolderError

cfg = PretrainCfg(method="clip", output_dir=sys.argv[1], run_name="shared", resume=sys.argv[2])
try:
    run = prepare_run_dir(cfg, dist.init_distributed("cpu"))
except RunFolderError as exc:
    print("REFUSED", exc, flush=True)
    sys.exit(3)
print("OWNER", run, flush=True)
sys.stdin.read()
"""


def _start(tmp_path, resume: str = "") -> subprocess.Popen:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), resume], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_second_process_is_refused_and_a_dead_owner_is_recognised(tmp_path, caplog):
    from fundus_vlp.runtime import distributed as dist
    from fundus_vlp.train.config import PretrainCfg
    from fundus_vlp.train.rundir import prepare_run_dir, releasing_run_dirs

    first = _start(tmp_path)
    assert first.stdout.readline().startswith("OWNER"), first.communicate()[0]
    lock = json.loads((tmp_path / "runs" / "shared" / "run.lock").read_text())
    assert lock["pid"] == first.pid and lock["host"] and lock["started"]

    second = _start(tmp_path)  # at the same time, same folder
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 3, out
    assert f"in use by process {first.pid}" in out

    first.send_signal(signal.SIGKILL)  # dies without releasing its lock
    first.wait()
    cfg = PretrainCfg(method="clip", output_dir=str(tmp_path / "runs"), run_name="shared", resume="latest")
    with caplog.at_level(logging.WARNING), releasing_run_dirs():  # a stale lock: recognised, reported, taken over
        run = prepare_run_dir(cfg, dist.init_distributed("cpu"))
        assert json.loads((run / "run.lock").read_text())["pid"] == os.getpid()
    assert f"taking over a stale lock: process {first.pid}" in caplog.text and "no longer running" in caplog.text
    assert not (run / "run.lock").exists()  # released


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_used_run_folder_is_refused_overwrite_moves_it_aside_and_a_renamed_run_resumes(
        image_dataset, tiny_overrides, tmp_path, capsys):
    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "clip", run_name="r", **{"train.max_steps": 2})
    assert main(["pretrain"] + args) == 0
    run = tmp_path / "r"
    config = (run / "config.yaml").read_bytes()
    first_id = {r["run"] for r in _rows(run)}
    assert len(first_id) == 1 and first_id == {json.loads((run / "run.json").read_text())["run_id"]}
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}

    other = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "flair", run_name="r",
                               **{"train.max_steps": 1})
    capsys.readouterr()
    assert main(["pretrain"] + other) == 1  # another method into the same run_name
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume latest" in err and "--overwrite" in err
    assert (run / "config.yaml").read_bytes() == config  # nothing of the first run was touched
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == before
    assert {r["run"] for r in _rows(run)} == first_id

    assert main(["pretrain", "--overwrite"] + other) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.replaced-")]
    assert len(aside) == 1 and (aside[0] / "config.yaml").read_bytes() == config  # moved, never deleted
    assert OmegaConf.load(run / "config.yaml").method == "flair"
    assert len({r["run"] for r in _rows(run)} | first_id) == 2  # the new run has its own id

    # a renamed (or copied) run folder resumes where it now lies, without --allow-config-change
    aside[0].rename(tmp_path / "moved")
    moved = [a.replace("run_name=r", "run_name=moved") for a in args]
    assert main(["pretrain", "--resume", "latest"] + moved) == 0, capsys.readouterr().err
    assert {r["run"] for r in _rows(tmp_path / "moved")} == first_id


def test_a_refused_resume_leaves_the_config_untouched(image_dataset, tiny_overrides, tmp_path, capsys):
    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "clip", run_name="r", **{"train.max_steps": 1})
    assert main(["pretrain"] + args) == 0
    run = tmp_path / "r"
    config = (run / "config.yaml").read_bytes()
    flair = [a.replace("method=clip", "method=flair") for a in args]
    capsys.readouterr()
    # the config change is allowed, but the checkpoint belongs to another method: the resume is refused
    assert main(["pretrain", "--resume", "latest", "--allow-config-change"] + flair) == 1
    assert "checkpoint of method 'clip'" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == config
    assert not (run / "config.1.yaml").exists()
    assert not (run / "run.lock").exists()


def test_text_pretrain_folders_follow_the_same_rule(tmp_path):
    """Stage 0 writes its text_model/ into a run folder too: a second run there is refused, --overwrite moves
    the first one aside."""
    from fundus_vlp.runtime import distributed as dist
    from fundus_vlp.train.config import TextPretrainCfg
    from fundus_vlp.train.rundir import RunFolderError, prepare_run_dir, releasing_run_dirs

    env = dist.init_distributed("cpu")
    cfg = TextPretrainCfg(demo=True, output_dir=str(tmp_path), run_name="stage0")
    with releasing_run_dirs():
        run = prepare_run_dir(cfg, env, prefix="text-pretrain")
    (run / "text_model").mkdir()
    (run / "text_model" / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="already holds a run.*--overwrite"), releasing_run_dirs():
        prepare_run_dir(cfg, env, prefix="text-pretrain")
    assert (run / "text_model" / "config.json").is_file()
    cfg.overwrite = True
    with releasing_run_dirs():
        prepare_run_dir(cfg, env, prefix="text-pretrain")
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("stage0.replaced-")]
    assert len(aside) == 1 and (aside[0] / "text_model" / "config.json").is_file()
    assert not (run / "text_model").exists() and (run / "config.yaml").is_file()
