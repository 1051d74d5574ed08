"""Distributed helpers and DDP gradient equivalence of the gathered losses.

One ``mp.spawn`` of 2 gloo ranks runs every collective check (a spawn costs ~9 s on 2 cores); the parent
process compares the ranks' DDP-averaged gradients with single-process references on the concatenated batch.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from conftest import free_port
from fundus_vlp.losses.caption import caption_loss, count_target_tokens
from fundus_vlp.losses.contrastive import ClipLoss
from fundus_vlp.runtime import distributed as du

WORLD, N_LOCAL, IN_DIM, EMB_DIM, VOCAB, PAD = 2, 4, 6, 5, 7, 0
LABELS = torch.tensor([0, 1, 0, -1, 1, 2, 0, -1])  # shared classes across ranks, one empty category per rank
# name: (label-aware targets, local_loss, gather_with_grad)
CLIP_CONFIGS = {
    "identity_local": (False, True, True),
    "identity_global": (False, False, True),
    "labels_local": (True, True, True),
    "labels_global": (True, False, True),
    "identity_local_nograd": (False, True, False),
    "identity_global_nograd": (False, False, False),
    "labels_local_nograd": (True, True, False),
}
ENV_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_LOCALID", "SLURM_PROCID", "SLURM_NTASKS", "MASTER_ADDR")


class _Towers(nn.Module):
    """Two linear towers and a learnable log temperature, shared by all ranks through DDP."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(IN_DIM, EMB_DIM)
        self.text = nn.Linear(IN_DIM, EMB_DIM)
        self.log_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x_image, x_text):
        return F.normalize(self.image(x_image), dim=-1), F.normalize(self.text(x_text), dim=-1), self.log_scale.exp()


class _Captioner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.embed = nn.Embedding(VOCAB, 4)
        self.head = nn.Linear(4, VOCAB)

    def forward(self, tokens):
        return self.head(torch.tanh(self.embed(tokens)))


def _clip_data():
    g = torch.Generator().manual_seed(123)
    return torch.randn(WORLD * N_LOCAL, IN_DIM, generator=g), torch.randn(WORLD * N_LOCAL, IN_DIM, generator=g)


def _caption_tokens():
    # rank 0 holds few tokens, rank 1 many: a per-rank mean would weight them wrongly
    return torch.tensor([[1, 3, PAD, PAD, PAD], [1, 2, PAD, PAD, PAD], [1, 4, 5, 6, 2], [1, 5, 3, 2, 6]])


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in module.named_parameters()}


def _clip_step(model: nn.Module, x_image, x_text, labels, local_loss: bool, gather_with_grad: bool):
    image, text, scale = model(x_image, x_text)
    loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad)(image, text, scale, labels)
    loss.backward()
    return loss.detach()


def _collective_checks(rank: int) -> dict:
    out: dict = {"rank_info": (du.get_rank(), du.get_world_size(), du.is_main_process())}
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = du.all_gather_with_grad(x)
    (gathered * (rank + 1) * torch.arange(1.0, 5.0).reshape(4, 1)).sum().backward()
    out["gathered"], out["gather_grad"] = gathered.detach().clone(), x.grad.clone()
    x_nograd = torch.full((2, 3), float(rank + 1), requires_grad=True)
    out["gather_no_grad_requires_grad"] = du.all_gather_no_grad(x_nograd).requires_grad
    out["all_reduce"] = du.all_reduce_sum(torch.tensor([rank + 1.0]))
    out["broadcast"] = du.broadcast_object({"from": rank}, src=0)
    ddp = DDP(_Towers())
    out["unwrapped_is_module"] = du.unwrap_model(ddp) is ddp.module
    du.barrier()
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = _collective_checks(rank)
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        x_image, x_text = (x[rows] for x in _clip_data())
        for name, (use_labels, local_loss, with_grad) in CLIP_CONFIGS.items():
            model = DDP(_Towers())
            labels = LABELS[rows] if use_labels else None
            results[f"{name}/loss"] = _clip_step(model, x_image, x_text, labels, local_loss, with_grad)
            results[f"{name}/grads"] = _grads(model.module)

        captioner = DDP(_Captioner())
        tokens = _caption_tokens()[rank * 2 : (rank + 1) * 2]
        global_count = du.all_reduce_sum(count_target_tokens(tokens, PAD))
        caption_loss(captioner(tokens), tokens, PAD, global_token_count=global_count).backward()
        results["caption/grads"] = _grads(captioner.module)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        du.cleanup()


def _assert_grads_close(actual: dict, expected: dict) -> None:
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)


def _grads_close(actual: dict, expected: dict) -> bool:
    return all(torch.allclose(actual[n], expected[n], atol=1e-6, rtol=1e-5) for n in expected)


@pytest.mark.distributed
def test_two_rank_gloo_gather_and_loss_gradients(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    _clear_env(monkeypatch)
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

    # collectives
    assert [r["rank_info"] for r in ranks] == [(0, 2, True), (1, 2, False)]
    expected_gathered = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res["gathered"], expected_gathered)
        # rank r's slot rows are 2r, 2r+1; the weight (q + 1) * row summed over ranks q = 1, 2 gives 3 * row
        slot_rows = torch.arange(2.0 * r + 1, 2.0 * r + 3).reshape(2, 1)
        torch.testing.assert_close(res["gather_grad"], (3 * slot_rows).expand(2, 3))
        assert res["gather_no_grad_requires_grad"] is False
        torch.testing.assert_close(res["all_reduce"], torch.tensor([3.0]))
        assert res["broadcast"] == {"from": 0}
        assert res["unwrapped_is_module"]

    # ClipLoss: DDP-averaged gradients vs the single-process loss on the concatenated batch
    x_image, x_text = _clip_data()
    for name, (use_labels, local_loss, with_grad) in CLIP_CONFIGS.items():
        reference_model = _Towers()
        reference_loss = _clip_step(reference_model, x_image, x_text, LABELS if use_labels else None, True, True)
        reference = _grads(reference_model)
        for res in ranks[1:]:
            _assert_grads_close(res[f"{name}/grads"], ranks[0][f"{name}/grads"])  # DDP keeps ranks in sync
        grads = ranks[0][f"{name}/grads"]
        if with_grad:
            _assert_grads_close(grads, reference)
            mean_loss = sum(res[f"{name}/loss"] for res in ranks) / WORLD
            torch.testing.assert_close(mean_loss, reference_loss)
        else:
            # a no-grad gather loses the gradient that other ranks send back: the check can fail
            assert not _grads_close(grads, reference), name
            if not local_loss:  # each rank sees only its own slot: tower gradients are 1/world of the reference
                towers = {k: v / WORLD for k, v in reference.items() if k != "log_scale"}
                _assert_grads_close(grads, towers)

    # caption loss with a global token count equals the global token mean
    captioner = _Captioner()
    tokens = _caption_tokens()
    caption_loss(captioner(tokens), tokens, PAD).backward()
    _assert_grads_close(ranks[0]["caption/grads"], _grads(captioner))


def _clear_env(monkeypatch) -> None:
    for var in ENV_VARS + ("MASTER_PORT",):
        monkeypatch.delenv(var, raising=False)


def test_world_info_defaults(monkeypatch):
    _clear_env(monkeypatch)
    assert du.world_info_from_env() == (0, 0, 1)


def _set_env(monkeypatch, **variables):
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))


def test_world_info_torchrun(monkeypatch):
    _clear_env(monkeypatch)
    _set_env(monkeypatch, LOCAL_RANK=1, RANK=5, WORLD_SIZE=8)
    assert du.world_info_from_env() == (1, 5, 8)


def test_world_info_slurm(monkeypatch):
    _clear_env(monkeypatch)
    _set_env(monkeypatch, SLURM_LOCALID=2, SLURM_PROCID=6, SLURM_NTASKS=16)
    assert du.world_info_from_env() == (2, 6, 16)
    # torchrun inside a SLURM allocation wins
    _set_env(monkeypatch, LOCAL_RANK=0, RANK=3, WORLD_SIZE=4)
    assert du.world_info_from_env() == (0, 3, 4)


def test_slurm_without_master_addr_raises(monkeypatch):
    _clear_env(monkeypatch)
    _set_env(monkeypatch, SLURM_LOCALID=0, SLURM_PROCID=0, SLURM_NTASKS=2)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        du.init_distributed(device="cpu")


def test_single_process_helpers(monkeypatch):
    _clear_env(monkeypatch)
    env = du.init_distributed(device="cpu")
    assert env == du.DistEnv()
    assert not env.is_distributed and env.is_main and not dist.is_initialized()
    assert du.get_rank() == 0 and du.get_world_size() == 1 and du.is_main_process()
    x = torch.randn(3, 2, requires_grad=True)
    assert du.all_gather_with_grad(x) is x
    assert not du.all_gather_no_grad(x).requires_grad
    reduced = du.all_reduce_sum(x)
    torch.testing.assert_close(reduced, x.detach())
    assert reduced.data_ptr() != x.data_ptr()
    assert du.broadcast_object({"a": 1}) == {"a": 1}
    du.barrier()
    du.cleanup()


def test_unwrap_model_strips_wrappers():
    module = nn.Linear(2, 2)
    compiled = torch.compile(module, backend="eager")
    assert du.unwrap_model(compiled) is module
    assert du.unwrap_model(nn.DataParallel(compiled)) is module
    assert du.unwrap_model(module) is module


def test_dist_env_properties():
    env = du.DistEnv(rank=1, local_rank=1, world_size=2, backend="gloo")
    assert env.is_distributed and not env.is_main and env.device == torch.device("cpu")
