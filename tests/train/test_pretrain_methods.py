"""Every method trains end to end from the CLI on a real-format dataset; the step mechanics are exact."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import build_trainer, pretrain_overrides
from fundus_vlp.cli.main import main
from fundus_vlp.config.loading import build_config
from fundus_vlp.train.checkpoint import load_checkpoint
from fundus_vlp.train.config import PretrainCfg

METHODS = ["clip", "flair", "keepfit", "vilref", "keepfit_v2"]


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_from_cli_and_exports(method, image_dataset, tiny_overrides, tmp_path):
    extra = {"vilref.queue_size": 16} if method == "vilref" else {}
    args = ["pretrain"] + pretrain_overrides(image_dataset, tiny_overrides, tmp_path, method, run_name="r", **extra)
    assert main(args) == 0
    run = tmp_path / "r"
    assert (run / "config.yaml").is_file() and (run / "env.json").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 6  # 24 images / batch 4, one epoch
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    assert (run / "model" / "model.safetensors").is_file()
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 6 and ckpt["epoch"] == 1
    if method == "vilref":
        assert "queue.image" in ckpt["task"] and any(k.startswith("momentum_visual.") for k in ckpt["task"])
        assert bool(ckpt["task"]["queue.valid"].any())
    if method == "keepfit_v2":
        assert any(k.startswith("model.decoder.") for k in ckpt["task"])
        assert any("caption" in r for r in train)
    if method == "keepfit":
        assert all("revision" in r and "elite" in r for r in train)


@pytest.mark.parametrize("method", ["flair", "keepfit", "keepfit_v2"])
def test_gradient_accumulation_equals_full_batch(method, image_dataset, tiny_overrides, tmp_path):
    """accum_freq=2 with the feature cache gives the gradient of one full batch (BN-free, dropout-free model)."""
    extra = {"keepfit.revision.attn_dropout": 0.0, "keepfit_v2.revision.attn_dropout": 0.0, "keepfit_v2.revision.enabled": "true",
             "model.decoder.dropout": 0.0}
    trainer = build_trainer(method, image_dataset, tiny_overrides, tmp_path, model="tiny-vit", **extra)
    full = next(iter(trainer.data.loader))
    full.pop("skipped")

    def grads():
        return {n: p.grad.clone() for n, p in trainer.task.named_parameters() if p.grad is not None}

    trainer.task.zero_grad()
    trainer.task(full)["loss"].backward()
    reference = grads()

    from fundus_vlp.train.accumulate import accumulate_gradients, concat_batches

    def half(b, sl):
        return {k: (half(v, sl) if isinstance(v, dict) else v[sl]) for k, v in b.items()}

    pad = trainer.model.tokenizer.pad_token_id

    def own_longest(b):  # as the collator pads each micro-batch: token ids cut to its longest text
        return {k: own_longest(v) if isinstance(v, dict) else
                v[:, :int((v != pad).sum(1).max())] if v.dim() == 2 and not v.is_floating_point() else v
                for k, v in b.items()}

    def padded(b, extra=3):  # another micro-batch with a longer text
        return {k: padded(v) if isinstance(v, dict) else
                torch.nn.functional.pad(v, (0, extra), value=pad) if v.dim() == 2 and not v.is_floating_point() else v
                for k, v in b.items()}

    micro = [own_longest(half(full, slice(0, 2))), padded(own_longest(half(full, slice(2, 4))))]
    assert torch.equal(concat_batches(micro, pad)["main"]["images"], full["main"]["images"])
    trainer.task.zero_grad()
    accumulate_gradients(trainer.task, trainer.task, micro, lambda loss: loss.backward(), pad_id=pad)  # the loop's path
    accumulated = grads()
    assert reference.keys() == accumulated.keys()
    for name in reference:
        assert torch.allclose(reference[name], accumulated[name], atol=1e-5, rtol=1e-4), name


def test_train_loop_with_accumulation_and_max_steps(image_dataset, tiny_overrides, tmp_path):
    args = ["pretrain"] + pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit", run_name="acc",
                                             **{"train.accum_freq": 2, "train.max_steps": 2})
    assert main(args) == 0
    ckpt = load_checkpoint(tmp_path / "acc" / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 2 and ckpt["start_batch"] == 4 and ckpt["epoch"] == 0


def test_missing_elite_data_is_a_clear_error(image_dataset, tiny_overrides, tmp_path, capsys):
    args = ["pretrain"] + pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit", run_name="x")
    args = [a for a in args if not a.startswith("data.elite=")]
    assert main(args) == 1
    assert "needs elite image-caption pairs" in capsys.readouterr().err


def test_config_typo_is_an_error(capsys):
    assert main(["pretrain", "train.epoch=3"]) == 2
    assert "epochs" in capsys.readouterr().err


@pytest.mark.parametrize("modalities, rows", [(["CFP"], 12), (["FFA"], 4), (["FFA", "OCT"], 8)])
def test_elite_sets_are_selected_by_modality(modalities, rows, tiny_overrides, tmp_path):
    """keepfit_v2 on the demo world draws elite pairs of the configured modalities only."""
    from fundus_vlp.data.config import DataNeeds
    from fundus_vlp.data.loader import build_train_data
    from fundus_vlp.factory import create_model
    from fundus_vlp.train.plan import plan_run

    ov = ["method=keepfit_v2", "model=tiny", "data.source=demo", "data.demo_size=tiny", "data.num_workers=0",
          f"data.elite_modalities=[{','.join(modalities)}]", "train.batch_size=4", f"output_dir={tmp_path}"]
    ov += [f"model.{k}={v}" for k, v in tiny_overrides.items()]
    cfg = build_config(PretrainCfg, [], ov, has_model=True)
    model = create_model(cfg.model)
    data = build_train_data(cfg, cfg.model, model.tokenizer, DataNeeds(elite=True), plan_run(cfg).batches)
    assert data.summary["elite_rows"] == rows
    batch = next(iter(data.loader))
    assert batch["elite"]["images"].shape[0] == 4 and batch["elite"]["caption_ids"].shape[1] == 32


def test_ban_list_filters_training_data_and_writes_its_report(image_dataset, tiny_overrides, tmp_path):
    """Unseen-class protocol in pretraining: banned categories and elite captions are removed and reported."""
    from fundus_vlp.train.loop import Trainer

    ov = pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit", run_name="ban",
                            **{"data.ban.terms": "[glaucoma]", "data.ban.apply_to": "[categories,elite]"})
    trainer = Trainer(build_config(PretrainCfg, [], ov, has_model=True))
    ban = trainer.data.summary["ban"]
    assert ban["categories"] == {"removed": 8, "kept": 16, "by_term": {"glaucoma": 8}}
    assert ban["elite"] == {"removed": 2, "kept": 4, "by_term": {"glaucoma": 2}}
    assert "glaucoma" not in trainer.data.vocab.names
    report = json.loads((tmp_path / "ban" / "ban_report_categories.json").read_text())
    assert report["n_removed"] == 8 and len(report["removed"]) == 8
