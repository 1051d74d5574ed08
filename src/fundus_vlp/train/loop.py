"""The pretraining loop shared by every method (plain torch.distributed + torchrun).

One optimiser step = ``accum_freq`` micro-batches; with ``accum_freq > 1`` the negatives of the full
batch are kept through a feature cache (see ``methods/base.py``). Checkpoints are atomic and carry
everything needed for ``--resume latest`` to continue exactly where a killed run stopped.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..config import ModelCfg
from ..data.loader import build_train_data, format_summary
from ..methods import get_method
from .accumulate import accumulate_gradients
from ..runtime import distributed as dist
from .checkpoint import CheckpointManager, load_checkpoint
from .config import PretrainCfg
from .logger import MetricsWriter
from .optim import build_optimizer, build_scheduler
from .plan import RunPlan, plan_run
from ..runtime.precision import autocast, grad_scaler
from .rundir import prepare_run_dir, read_run_id, record_run_config, release_run_dir, releasing_run_dirs
from ..runtime.seed import capture_rng_state, restore_rng_state, seed_everything

_logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Optional[Path]
    steps: int
    final_loss: float
    seconds: float
    samples_per_second: float
    final_metrics: Dict[str, float] = field(default_factory=dict)  # the method's end-of-run scores (stage 0: val MLM)


def _finite_floats(values: Dict[str, torch.Tensor], step: int) -> Dict[str, float]:
    """The step's values as floats (one wait for the device, on logging steps only); a non-finite loss stops the
    run: a diverged run wastes every later step."""
    out = {k: float(v) for k, v in values.items()}
    if not math.isfinite(out["loss"]):
        raise FloatingPointError(f"loss is {out['loss']} at step {step}; lower optim.lr or check the data")
    return out


def _to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    if isinstance(batch, dict):
        return {k: _to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        non_blocking = device.type == "cuda"
        if channels_last and batch.ndim == 4:
            return batch.to(device, non_blocking=non_blocking, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=non_blocking)
    return batch


class Callback:
    """Hooks into a run without editing the loop (custom logging, early stops, profiling)."""

    def on_step_end(self, trainer: "Trainer", values: Dict[str, torch.Tensor]) -> None:
        """After every optimiser step; ``values`` are this step's losses and gradient norm as detached 0-d tensors
        (rank-local; ``float()`` of one waits for the device), ``trainer.step`` is done."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM stopped training after a checkpoint was written; the CLI exits with 130."""


class StopSignals:
    """While active, the first SIGINT/SIGTERM only asks the loop to stop after the current step (so it can
    write a checkpoint: a cluster scheduler sends SIGTERM some time before it kills a job); a second one
    interrupts at once. Handlers can only be installed from the main thread; elsewhere this is inert."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        _logger.warning("%s received: writing a checkpoint after this step, then stopping (send it again to stop "
                        "at once, without a checkpoint)", self.received)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Trainer:
    def __init__(self, cfg: PretrainCfg, env: Optional[dist.DistEnv] = None, callbacks: Sequence[Callback] = ()):
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.plan = plan_run(cfg)
        self.env = env or dist.init_distributed(cfg.train.device)
        self.device = self.env.device
        seed_everything(cfg.train.seed, self.env.rank, cfg.train.deterministic)
        self.run_dir = prepare_run_dir(cfg, self.env)
        self.ckpt = CheckpointManager(self.run_dir / "checkpoints", cfg.train.keep_checkpoints, self.env.is_main)

        # the method decides what a run builds: a dual encoder on image-text data, or (stage 0) a text encoder
        model, self.data, task = get_method(cfg.method).setup(cfg, self.plan, self.env, self.run_dir,
                                                              pin_memory=self.device.type == "cuda")
        self.model, self.task = model, task.to(self.device)
        if cfg.train.channels_last:
            self.task = self.task.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.task, cfg.optim)
        self.plan.count_steps(len(self.data.sampler))
        self.steps_per_epoch, self.total_steps = self.plan.steps_per_epoch, self.plan.total_steps
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.steps_per_epoch, self.total_steps)
        self.scaler = grad_scaler(cfg.train.precision, self.device)
        self.wrapped = self._wrap(self.task)
        self.step = 0
        self.epoch = 0
        self.start_batch = 0
        resume_path = self.ckpt.resolve_resume(cfg.resume) if self.env.is_main else None
        resume_path = dist.broadcast_object(str(resume_path) if resume_path else "")
        if resume_path:
            self._restore(Path(resume_path))
        elif cfg.resume:
            _logger.warning("--resume %s: no checkpoint in %s yet; starting from step 0", cfg.resume, self.ckpt.dir)
        if cfg.resume:  # only now that the checkpoint is restored: a refused resume leaves config.yaml as it was
            record_run_config(cfg, self.run_dir, self.env)
        self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl", self.env.is_main,
                                     self.run_dir / "tensorboard" if cfg.train.tensorboard else None,
                                     resume_step=self.step if resume_path else None,
                                     run_id=read_run_id(self.run_dir) if self.env.is_main else "")
        self._log_setup()

    # -- setup ----------------------------------------------------------------------------------------
    def _wrap(self, task: nn.Module) -> nn.Module:
        wrapped = task
        if self.env.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(task, device_ids=ids)
        if self.cfg.train.compile:
            wrapped = torch.compile(wrapped, backend=self.cfg.train.compile_backend)
        return wrapped

    def _log_setup(self) -> None:
        n_params = sum(p.numel() for p in self.task.parameters())
        n_train = sum(p.numel() for p in self.task.parameters() if p.requires_grad)
        _logger.info("run dir: %s", self.run_dir)
        model_name = getattr(getattr(self.model, "cfg", None), "name", type(self.model).__name__)
        _logger.info("method=%s model=%s params=%.2fM (trainable %.2fM) device=%s world=%d",
                     self.cfg.method, model_name, n_params / 1e6, n_train / 1e6, self.device,
                     self.env.world_size)
        _logger.info("data:\n%s", format_summary(self.data.summary))
        _logger.info("steps: %d per epoch x %d epochs -> %d optimiser steps (global batch %d)",
                     self.steps_per_epoch, self.cfg.train.epochs, self.total_steps,
                     self.cfg.train.batch_size * self.env.world_size)

    # -- checkpoints --------------------------------------------------------------------------------------
    def _state(self) -> Dict[str, Any]:
        rng = capture_rng_state()
        all_rng = [None] * self.env.world_size
        if self.env.is_distributed:
            torch.distributed.all_gather_object(all_rng, rng)
        else:
            all_rng = [rng]
        return {
            "task": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "start_batch": self.start_batch,
            "rng": all_rng,
            "data": self.data.state_dict() if hasattr(self.data, "state_dict") else None,
            "world_size": self.env.world_size,
            "method": self.cfg.method,
        }

    def save_checkpoint(self) -> None:
        state = self._state()  # collective (RNG gather): every rank takes part
        if self.env.is_main:
            path = self.ckpt.save(state, self.step)
            _logger.info("checkpoint: %s (step %d, epoch %d, batch %d)", path, self.step, self.epoch,
                         self.start_batch)
        dist.barrier()

    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get("method") != self.cfg.method:
            raise ValueError(f"{path}: checkpoint of method {ckpt.get('method')!r}, but this run is {self.cfg.method!r}")
        self.task.load_state_dict(ckpt["task"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.start_batch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["start_batch"])
        if ckpt.get("data") is not None and hasattr(self.data, "load_state_dict"):
            self.data.load_state_dict(ckpt["data"])  # e.g. the masking generator of stage 0
        rngs = ckpt["rng"]
        if int(ckpt.get("world_size", 1)) == self.env.world_size:
            restore_rng_state(rngs[self.env.rank])
        else:
            _logger.warning("resuming on %d ranks a run saved on %d: RNG streams restart", self.env.world_size,
                            ckpt.get("world_size"))
        _logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.start_batch)

    # -- one optimiser step -------------------------------------------------------------------------------
    def _sync_context(self, last: bool) -> contextlib.AbstractContextManager:
        if last or not self.env.is_distributed:
            return contextlib.nullcontext()
        return self.wrapped.no_sync()

    def _backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def train_step(self, micro_batches: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        """One optimiser step. Returns detached 0-d tensors: reading them (``float``) waits for the device, which
        the loop does only on logging steps."""
        cfg = self.cfg.train
        amp = autocast(cfg.precision, self.device)
        if len(micro_batches) == 1:
            with amp:
                losses = self.wrapped(micro_batches[0])
            self._backward(losses["loss"])
        elif not self.task.feature_cache:  # independent micro-batches: average their losses
            losses = self._accumulate_mean(micro_batches, amp)
        else:
            losses = accumulate_gradients(self.wrapped, self.task, micro_batches, self._backward, amp,
                                          self._sync_context, pad_id=self.model.tokenizer.pad_token_id)
        clip = self.cfg.optim.grad_clip_norm
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.task.parameters(), clip)
        else:
            grad_norm = torch.tensor(float("nan"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.task.after_step()
        out = {k: v.detach().float() for k, v in losses.items()}
        out["grad_norm"] = grad_norm.detach().float()
        return out

    def _accumulate_mean(self, micro_batches: List[Dict[str, Any]], amp) -> Dict[str, torch.Tensor]:
        total: Dict[str, torch.Tensor] = {}
        for j, mb in enumerate(micro_batches):
            with self._sync_context(j == len(micro_batches) - 1):  # DDP reduces gradients once, at the last
                with amp:
                    losses = self.wrapped(mb)
                self._backward(losses["loss"] / len(micro_batches))
            for k, v in losses.items():
                total[k] = total.get(k, 0) + v.detach() / len(micro_batches)
        return total

    # -- the loop -------------------------------------------------------------------------------------------
    def _reduce_for_logging(self, values: Dict[str, float]) -> Dict[str, float]:
        if not self.env.is_distributed:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], device=self.device, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.env.world_size for k, v in zip(keys, t.tolist())}

    def _epoch_batches(self):
        """Micro-batches of this epoch from the sampler position, grouped per optimiser step."""
        accum = self.cfg.train.accum_freq
        self.data.sampler.set_epoch(self.epoch, self.start_batch)
        # the loader's own seed comes from a dedicated generator, not the global RNG, so creating the
        # iterator mid-epoch on resume does not shift the dropout RNG stream
        self.data.loader.generator = torch.Generator().manual_seed(self.cfg.train.seed + self.epoch)
        group: List[Dict[str, Any]] = []
        t_data = time.perf_counter()
        for batch in self.data.loader:
            group.append(batch)
            if len(group) == accum:
                yield group, time.perf_counter() - t_data
                group = []
                t_data = time.perf_counter()

    def _stop_requested(self, signals: StopSignals) -> bool:
        """Every rank stops at the same step, whichever received the signal."""
        stop = signals.received is not None
        if self.env.is_distributed:
            flag = torch.tensor([float(stop)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _write_loss_curves(self) -> None:
        if not self.env.is_main:
            return
        from .plots import LOSS_CURVES, plot_loss_curves

        try:
            plot_loss_curves({f"{self.cfg.method} ({self.run_dir.name})": self.run_dir / "metrics.jsonl"},
                             self.run_dir / LOSS_CURVES)
        except Exception as exc:  # a figure must never cost the run; say why it is missing
            _logger.warning("could not write %s: %s: %s", LOSS_CURVES, type(exc).__name__, exc)

    def fit(self) -> TrainResult:
        try:
            with StopSignals() as signals:
                return self._fit(signals)
        finally:
            release_run_dir(self.run_dir)

    def _fit(self, signals: StopSignals) -> TrainResult:
        cfg = self.cfg.train
        self.wrapped.train()
        t_start = time.perf_counter()
        samples_done = 0
        last_loss = math.nan
        last_values: Dict[str, torch.Tensor] = {}
        skipped_total = 0
        while self.epoch < cfg.epochs and self.step < self.total_steps:
            skipped: Dict[str, Any] = {}
            for group, data_time in self._epoch_batches():
                t0 = time.perf_counter()
                for mb in group:
                    for s in mb.get("skipped", ()):
                        skipped[s.path] = s
                batches = [_to_device({k: v for k, v in mb.items() if k != "skipped"}, self.device,
                                      cfg.channels_last) for mb in group]
                values = self.train_step(batches)
                self.step += 1
                self.start_batch += len(group)
                step_time = time.perf_counter() - t0
                n = sum(self.task.samples_in(b) for b in batches) * self.env.world_size
                samples_done += n
                last_values = values
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    self._log_step(_finite_floats(values, self.step), step_time, data_time, n)
                if cfg.save_every_steps and self.step % cfg.save_every_steps == 0:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback.on_step_end(self, values)
                if self._stop_requested(signals):
                    self._report_skipped(skipped)
                    self.save_checkpoint()
                    self.metrics.close()
                    self._write_loss_curves()
                    raise RunInterrupted(f"{signals.received or 'a stop signal on another rank'}: stopped at step "
                                         f"{self.step}; checkpoint in {self.ckpt.dir}; continue with --resume latest "
                                         f"run_name={self.run_dir.name} output_dir={self.run_dir.parent}")
                if self.step >= self.total_steps:
                    break
            if self.start_batch >= self.steps_per_epoch * cfg.accum_freq:  # the epoch's last whole step is done
                self.epoch += 1
                self.start_batch = 0
            skipped_total += self._report_skipped(skipped)
            self.save_checkpoint()
        if last_values:
            last_loss = _finite_floats(last_values, self.step)["loss"]
        seconds = time.perf_counter() - t_start
        final = self.task.final_metrics()
        if final:
            self.metrics.write({"kind": "val", "step": self.step, **final})
        model_dir = self._export() if self.env.is_main else None
        dist.barrier()
        self.metrics.write({"kind": "summary", "step": self.step, "seconds": seconds,
                            "samples_per_second": samples_done / max(seconds, 1e-9), "skipped_images": skipped_total})
        self.metrics.close()
        self._write_loss_curves()
        return TrainResult(self.run_dir, model_dir, self.step, last_loss, seconds, samples_done / max(seconds, 1e-9),
                           final)

    def _log_step(self, values: Dict[str, float], step_time: float, data_time: float, n: int) -> None:
        values = self._reduce_for_logging(values)
        extra = self.task.log_scalars()
        record = {"kind": "train", "step": self.step, "epoch": self.epoch, **values,
                  "lr": self.optimizer.param_groups[0]["lr"], **extra,
                  "samples_per_s": n / max(step_time + data_time, 1e-9), "data_time": data_time,
                  "step_time": step_time}
        self.metrics.write(record)
        parts = " ".join(f"{k}={v:.4f}" for k, v in values.items() if k not in ("loss", "grad_norm"))
        parts = f" [{parts}]" if parts else ""  # a single-loss method (stage-0 MLM) has no parts to list
        scale = f" scale {extra['logit_scale']:.2f}" if "logit_scale" in extra else ""
        _logger.info("step %d/%d ep %d loss %.4f%s lr %.2e%s %.1f samples/s data %.2fs",
                     self.step, self.total_steps, self.epoch, values["loss"], parts, record["lr"], scale,
                     record["samples_per_s"], data_time)

    def _report_skipped(self, skipped: Dict[str, Any]) -> int:
        if not skipped:
            return 0
        lines = [f"  {s.path} ({s.where}): {s.reason}" for s in list(skipped.values())[:20]]
        _logger.warning("epoch %d: skipped %d unreadable image(s) (data.on_bad_image=skip):\n%s%s", self.epoch,
                        len(skipped), "\n".join(lines), "\n  ..." if len(skipped) > 20 else "")
        self.metrics.write({"kind": "skipped", "step": self.step, "epoch": self.epoch, "count": len(skipped),
                            "images": [f"{s.path} ({s.where}): {s.reason}" for s in skipped.values()]})
        return len(skipped)

    def _export(self) -> Path:
        out = self.task.export(self.run_dir, self.step, self.cfg.data.source)
        _logger.info("model exported to %s", out)
        return out


def pretrain(cfg: PretrainCfg, callbacks: Sequence[Callback] = ()) -> TrainResult:
    env = dist.init_distributed(cfg.train.device)
    try:
        with releasing_run_dirs():
            return Trainer(cfg, env, callbacks).fit()
    finally:
        dist.cleanup()


@dataclass
class DryRunPlan:
    """What ``pretrain --dry-run`` found: the data check and, when the data can be built, the plan."""

    report: Any  # data.check.CheckReport
    run_dir: Path
    summary: Dict[str, Any]
    run: RunPlan  # the run's plan; its step counts are filled once the data could be built
    error: str = ""  # why the datasets could not be built (the run would stop here too)

    def ok(self, on_bad_image: str) -> bool:
        """The run would start and meet no bad data (with ``skip``: it would start, bad rows dropped or skipped)."""
        return not self.error and (self.report.ok or on_bad_image == "skip")


def dry_run(cfg: PretrainCfg, workers: Optional[int] = None, progress: bool = False) -> DryRunPlan:
    """Build every dataset of the run and validate everything (every dataframe row, every image decoded at
    reduced size) without building the model, touching the run folder or training."""
    from ..data.check import check_sources
    from ..data.loader import run_sources
    from ..factory import get_tokenizer
    from .rundir import resolve_run_dir

    run = plan_run(cfg)
    needs = run.needs
    sources = run_sources(cfg)
    use_elite = needs.elite or needs.pool_elite
    triples = [(csv, root, "categorical") for csv, root in sources["public"]]
    triples += [(csv, root, "captions") for csv, root in sources["elite"]] if use_elite else []
    report = check_sources(triples, workers, decode=True, progress=progress, encoding=cfg.data.encoding,
                           on_empty_caption=cfg.data.on_empty_caption, max_pixels=cfg.data.max_image_pixels)
    run_dir = resolve_run_dir(cfg.output_dir, cfg.run_name, cfg.method, cfg.resume)
    plan = DryRunPlan(report, run_dir, {}, run)
    try:
        tokenizer = get_tokenizer(run.init)
        model_cfg = run.init
        if not isinstance(model_cfg, ModelCfg):
            from ..hub import load_config

            model_cfg = load_config(run.init)
        data = build_train_data(cfg, model_cfg, tokenizer, needs, run.batches, out_dir=None)
        run.count_steps(len(data.sampler))
    except (ValueError, OSError, RuntimeError) as exc:
        plan.error = str(exc)
        return plan
    plan.summary = data.summary
    return plan
