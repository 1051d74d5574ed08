"""Precision, gradient checkpointing, channels_last, compile, TensorBoard, bad-image skipping, torchrun."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import make_image_dataset, pretrain_overrides
from fundus_vlp.cli.main import main
from fundus_vlp.train.checkpoint import load_checkpoint


@pytest.mark.parametrize("options", [
    {"train.precision": "amp_bf16", "train.grad_checkpointing": "true"},
    {"train.precision": "amp_fp16", "train.channels_last": "true"},
    {"train.compile": "true", "train.compile_backend": "eager", "train.accum_freq": 2},
])
def test_training_options_run(options, image_dataset, tiny_overrides, tmp_path):
    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit_v2", run_name="o",
                              **{"train.max_steps": 2, **options})
    assert main(["pretrain"] + args) == 0
    recs = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2]


def test_tensorboard_and_run_records(image_dataset, tiny_overrides, tmp_path):
    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "flair", run_name="tb",
                              **{"train.max_steps": 2, "train.tensorboard": "true"})
    assert main(["pretrain"] + args) == 0
    run = tmp_path / "tb"
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    env = json.loads((run / "env.json").read_text())
    assert env["packages"]["torch"].startswith("2.14") and "git_commit" in env
    assert "method: flair" in (run / "config.yaml").read_text()


def test_bad_images_are_skipped_counted_and_reported(tmp_path, tiny_overrides, caplog):
    """Missing/empty files are found when the data is built (dropped and counted with skip); an image that
    exists but does not decode is found when drawn (substituted, counted and reported per epoch)."""
    ds = make_image_dataset(tmp_path / "d", n_per_class=4, n_elite=3)
    (ds["root"] / "setA" / "glaucoma_0.png").write_bytes(b"")
    (ds["root"] / "setA" / "normal_2.png").unlink()
    corrupt = ds["root"] / "setA" / "glaucoma_1.png"
    corrupt.write_bytes(corrupt.read_bytes()[:60])  # a truncated PNG: exists, is not empty, does not decode
    args = pretrain_overrides(ds, tiny_overrides, tmp_path, "flair", run_name="bad")
    assert main(["pretrain"] + args) == 1  # default policy: a clear error naming file and row
    assert main(["pretrain"] + args + ["data.on_bad_image=skip", "run_name=bad2"]) == 0
    assert any("dropped 2 row(s)" in r.message and "public.csv, row 5" in r.message for r in caplog.records)
    recs = [json.loads(line) for line in (tmp_path / "bad2" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in recs if r["kind"] == "skipped"]
    assert skipped and skipped[0]["count"] == 1
    assert any("public.csv, row 6" in s for s in skipped[0]["images"])  # glaucoma_1 is the 6th data row
    assert any("skipped 1 unreadable image(s)" in r.message for r in caplog.records)


@pytest.mark.distributed
def test_torchrun_two_processes_train_checkpoint_and_resume(image_dataset, tiny_overrides, tmp_path):
    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit", run_name="ddp",
                              **{"train.batch_size": 2, "train.save_every_steps": 2, "train.max_steps": 4})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fundus_vlp",
           "pretrain"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd + args, check=True, env=env, capture_output=True, timeout=300)
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    more = [a for a in args if not a.startswith("train.max_steps")] + ["train.max_steps=6"]
    # extending a run is a config change: it is shown and must be allowed explicitly
    subprocess.run(cmd + more + ["resume=latest", "allow_config_change=true"], check=True, env=env,
                   capture_output=True, timeout=300)
    recs = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()


def _first_step(method, image_dataset, tiny_overrides, tmp_path, name, **options):
    """Run one real optimiser step; return the trainer, the first step's loss and what the first conv saw."""
    from conftest import build_trainer

    trainer = build_trainer(method, image_dataset, tiny_overrides, tmp_path / name,
                            **{"train.max_steps": 1, "model.decoder.dropout": 0.0, **options})
    conv = next(m for m in trainer.model.visual.modules() if isinstance(m, torch.nn.Conv2d))
    seen = {}

    def record(module, inputs, output):  # returns None: the hook only looks
        seen.setdefault("io", (inputs[0], output))

    conv.register_forward_hook(record)
    trainer.fit()
    recs = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    return trainer, next(r["loss"] for r in recs if r["kind"] == "train"), seen["io"]


@pytest.mark.parametrize("precision, dtype", [("amp_bf16", torch.bfloat16), ("amp_fp16", torch.float16)])
def test_mixed_precision_runs_the_towers_in_low_precision(precision, dtype, image_dataset, tiny_overrides, tmp_path):
    """Activations under autocast have the low-precision dtype, and the loss stays within 3 % of fp32."""
    _, ref, (_, out32) = _first_step("flair", image_dataset, tiny_overrides, tmp_path, "fp32")
    trainer, loss, (_, out) = _first_step("flair", image_dataset, tiny_overrides, tmp_path, "amp",
                                          **{"train.precision": precision})
    assert out32.dtype == torch.float32 and out.dtype == dtype
    assert trainer.scaler.is_enabled() == (precision == "amp_fp16")
    assert loss == pytest.approx(ref, rel=3e-2)


def test_channels_last_reaches_weights_and_inputs(image_dataset, tiny_overrides, tmp_path):
    _, ref, _ = _first_step("flair", image_dataset, tiny_overrides, tmp_path, "plain")
    trainer, loss, (inp, _) = _first_step("flair", image_dataset, tiny_overrides, tmp_path, "cl",
                                          **{"train.channels_last": "true"})
    convs = [m.weight for m in trainer.model.visual.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert inp.is_contiguous(memory_format=torch.channels_last) and not inp.is_contiguous()
    assert loss == pytest.approx(ref, rel=1e-4)


def test_compile_wraps_the_task_and_keeps_the_loss(image_dataset, tiny_overrides, tmp_path):
    _, ref, _ = _first_step("flair", image_dataset, tiny_overrides, tmp_path, "eager")
    trainer, loss, _ = _first_step("flair", image_dataset, tiny_overrides, tmp_path, "compiled",
                                   **{"train.compile": "true", "train.compile_backend": "eager"})
    assert isinstance(trainer.wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.wrapped._orig_mod is trainer.task
    assert loss == pytest.approx(ref, rel=1e-5)


@pytest.mark.slow
def test_compile_with_the_default_inductor_backend_trains(image_dataset, tiny_overrides, tmp_path):
    # flair's total loss is one term (0 + 1.0 * t): inductor used to fold it into the same output as the
    # logged part and drop its grad_fn, so the first backward failed. Generates C++ kernels: tens of seconds.
    args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "flair", run_name="ind",
                              **{"train.max_steps": 2, "train.compile": "true"})
    assert main(["pretrain"] + args) == 0
    recs = [json.loads(line) for line in (tmp_path / "ind" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if r["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


# bf16 autocast (the recommended CPU setting where the CPU has bf16 instructions) may move each logged
# loss of the tiny run by at most this fraction of the fp32 loss over the first steps (measured: 2.4 %).
BF16_LOSS_RTOL = 0.05


def test_bf16_autocast_loss_curve_stays_close_to_fp32(image_dataset, tiny_overrides, tmp_path):
    curves = {}
    for precision in ("fp32", "amp_bf16"):
        args = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "flair", run_name=precision,
                                  **{"train.max_steps": 6, "train.precision": precision, "train.seed": 3})
        assert main(["pretrain"] + args) == 0
        recs = [json.loads(line) for line in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
        curves[precision] = [r["loss"] for r in recs if r["kind"] == "train"]
    fp32, bf16 = curves["fp32"], curves["amp_bf16"]
    assert len(fp32) == len(bf16) == 6
    assert fp32 != bf16  # autocast really ran in bf16
    assert max(abs(b - f) / f for f, b in zip(fp32, bf16)) < BF16_LOSS_RTOL, (fp32, bf16)
