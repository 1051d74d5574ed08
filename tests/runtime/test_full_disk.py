"""A full disk is a clear error that loses nothing: the message names the file, the bytes needed and the free
space, the partial file is removed, and the previous version (checkpoint, model folder, cache, results) stays."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import fundus_vlp.runtime.files as files
from fundus_vlp.runtime.files import DiskFullError


def _temp_files(folder):
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_as_the_resume_point(tmp_path, disk_fills_after):
    from fundus_vlp.train.checkpoint import CheckpointManager

    ckpt = CheckpointManager(tmp_path / "checkpoints")
    ckpt.save({"task": {"w": torch.zeros(10)}, "step": 1}, step=1)
    disk_fills_after(4096)
    with pytest.raises(DiskFullError) as err:
        ckpt.save({"task": {"w": torch.zeros(100_000)}, "step": 2}, step=2)
    message = str(err.value)
    assert str(tmp_path / "checkpoints" / "step_2.pt") in message
    assert "(400,000 bytes)" in message and "free there" in message  # needed, then free
    assert _temp_files(tmp_path) == []  # the partial file does not keep the disk full
    assert not (tmp_path / "checkpoints" / "step_2.pt").exists()
    assert ckpt.resolve_resume("latest").name in ("latest.pt", "step_1.pt")
    assert torch.load(ckpt.resolve_resume("latest"))["step"] == 1

    # a save killed before it could clean up (older versions: latest.pt.tmp) is removed when the run resumes
    (tmp_path / "checkpoints" / "latest.pt.tmp").write_bytes(b"partial")
    (tmp_path / "checkpoints" / ".step_3.pt.4242.tmp").write_bytes(b"partial")
    CheckpointManager(tmp_path / "checkpoints")
    assert _temp_files(tmp_path) == [] and ckpt.resolve_resume("latest") is not None


def test_full_disk_writers_of_models_caches_and_results_name_the_file(tiny_model, tmp_path, disk_fills_after,
                                                                      monkeypatch):
    from fundus_vlp.inference.features import FeatureCache
    from fundus_vlp.factory import from_pretrained

    tiny_model.save_pretrained(tmp_path / "model")
    before = (tmp_path / "model" / "model.safetensors").read_bytes()
    monkeypatch.setattr(files, "free_bytes", lambda path: 1000)  # the export needs more than is free
    with pytest.raises(DiskFullError, match=r"model: no space left.*needs about .* 1,000 bytes free"):
        tiny_model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before  # the previous export is intact
    assert from_pretrained(tmp_path / "model") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no half-written temp folder
    monkeypatch.undo()

    cache = FeatureCache(tmp_path / "cache")
    disk_fills_after(100)
    with pytest.raises(DiskFullError, match="cache"):
        cache.save("tag", "key", torch.zeros(50, 8), {"n": 50})
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(DiskFullError, match="results.json"):
        files.write_text_atomic(tmp_path / "results.json", json.dumps({"rows": ["x" * 500]}))
    assert not (tmp_path / "results.json").exists() and _temp_files(tmp_path) == []


UNDER_TMPFS = textwrap.dedent("""
    import json, sys, torch
    from pathlib import Path
    from fundus_vlp.train.checkpoint import CheckpointManager
    from fundus_vlp.runtime.files import write_text_atomic
    disk = Path(sys.argv[1])
    out = {}
    ckpt = CheckpointManager(disk / "checkpoints")
    ckpt.save({"task": {"w": torch.zeros(1000)}, "step": 1}, step=1)
    for name, write in [("checkpoint", lambda: ckpt.save({"task": {"w": torch.zeros(600_000)}, "step": 2}, step=2)),
                        ("results", lambda: write_text_atomic(disk / "results.json", "x" * 3_000_000))]:
        try:
            write()
            out[name] = "written"
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    out["files"] = sorted(str(p.relative_to(disk)) for p in disk.rglob("*"))
    out["resume_step"] = int(torch.load(ckpt.resolve_resume("latest"))["step"])
    print(json.dumps(out))
""")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a private tmpfs")
def test_a_real_full_tmpfs(tmp_path):
    """On a real 1 MiB file system: what the OS says when it is full is what the user reads."""
    script = tmp_path / "write.py"
    script.write_text(UNDER_TMPFS)
    disk = tmp_path / "disk"
    disk.mkdir()
    shell = f"mount -t tmpfs -o size=1m tmpfs {disk} && {sys.executable} {script} {disk}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=300)
    if "mount" in proc.stderr and proc.returncode != 0 and not proc.stdout:
        pytest.skip(f"no private tmpfs here: {proc.stderr.strip()[:200]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["checkpoint"].startswith("DiskFullError: ") and "step_2.pt: no space left" in out["checkpoint"]
    assert "needs about 2.3 MiB (2,400,000 bytes)" in out["checkpoint"]
    assert out["results"].startswith("DiskFullError: ") and "results.json: no space left" in out["results"]
    assert out["files"] == ["checkpoints", "checkpoints/latest.pt", "checkpoints/step_1.pt"]  # nothing partial
    assert out["resume_step"] == 1
