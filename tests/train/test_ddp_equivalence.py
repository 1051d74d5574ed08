"""2-rank gloo DDP run of whole training tasks == the single-process run on the same global batch."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from conftest import free_port, pretrain_overrides

METHODS = {
    "keepfit_v2": {"keepfit_v2.revision.enabled": "true", "keepfit_v2.revision.attn_dropout": 0.0, "model.decoder.dropout": 0.0},
    "vilref": {"vilref.queue_size": 32},
    "keepfit": {"keepfit.revision.attn_dropout": 0.0},
}


def _cfg(method, ds, tiny_overrides, out):
    from fundus_vlp.config.loading import build_config
    from fundus_vlp.train.config import PretrainCfg

    ov = pretrain_overrides(ds, tiny_overrides, out, method, run_name=f"ddp-{method}", **METHODS[method])
    ov = [o for o in ov if not o.startswith("model=")] + ["model=tiny-vit", "train.batch_size=4"]
    return build_config(PretrainCfg, [], ov, has_model=True)


def _half(batch, rank):
    sl = slice(rank * 4, (rank + 1) * 4)
    return {k: (_half(v, rank) if isinstance(v, dict) else v[sl]) for k, v in batch.items()}


def _grads(task):
    return {n: p.grad.detach().clone() for n, p in task.named_parameters() if p.grad is not None}


def _worker(rank, port, ds, tiny_overrides, out, batches, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    from fundus_vlp.runtime.distributed import DistEnv
    from fundus_vlp.train.loop import Trainer

    env = DistEnv(rank=rank, local_rank=rank, world_size=2, device=torch.device("cpu"), backend="gloo")
    results = {}
    for method, batch in batches.items():
        trainer = Trainer(_cfg(method, ds, tiny_overrides, out), env)
        loss = trainer.wrapped(_half(batch, rank))["loss"]
        loss.backward()
        results[method] = _grads(trainer.task)
    if rank == 0:
        torch.save(results, result_path)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_rank_gradients_equal_single_process(image_dataset, tiny_overrides, tmp_path):
    from fundus_vlp.train.loop import Trainer

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    batches, reference = {}, {}
    for method in METHODS:
        cfg = _cfg(method, image_dataset, tiny_overrides, tmp_path)
        cfg.train.batch_size = 8  # one global batch of 8 = two ranks x 4
        trainer = Trainer(cfg)
        batch = next(iter(trainer.data.loader))
        batch.pop("skipped")
        trainer.task(batch)["loss"].backward()
        batches[method], reference[method] = batch, _grads(trainer.task)
    result_path = tmp_path / "ddp_grads.pt"
    # the ranks start runs of their own: a folder holds one run (the reference runs above are in tmp_path)
    mp.spawn(_worker, args=(free_port(), image_dataset, tiny_overrides, tmp_path / "ddp", batches, str(result_path)),
             nprocs=2, join=True)
    ddp = torch.load(result_path, weights_only=True)
    for method in METHODS:
        assert ddp[method].keys() == reference[method].keys(), method
        for name, g in reference[method].items():
            assert torch.allclose(ddp[method][name], g, atol=2e-6, rtol=1e-4), f"{method}: {name}"
