"""Run directories: one run per folder, owned by one process, with the resolved config, git commit and package
versions of every run (traceable results).

A folder is locked by the process that runs in it (``run.lock``: host, PID, start); a lock whose process is
gone is taken over and reported. A folder that holds a run is only continued (``--resume``) or, with
``--overwrite``, moved aside: never replaced. Nothing inside a run folder names the folder itself, so a copied
or renamed run resumes where it now lies."""
from __future__ import annotations

import atexit
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..runtime import distributed as dist
from ..runtime.files import write_text_atomic

_logger = logging.getLogger(__name__)
_PACKAGES = ("torch", "torchvision", "timm", "transformers", "tokenizers", "safetensors", "numpy", "scikit-learn",
             "omegaconf", "pillow", "fundus-vlp")


def environment_info() -> Dict[str, Any]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                                    cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    import torch

    return {"git_commit": commit, "git_dirty": dirty, "packages": versions, "python": sys.version.split()[0],
            "platform": platform.platform(), "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "command": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def resolve_run_dir(output_dir: str, run_name: str, prefix: str, resume: str) -> Path:
    if resume and resume != "latest" and not run_name:
        return Path(resume).resolve().parent.parent  # <run>/checkpoints/step_N.pt
    if resume == "latest" and not run_name:
        raise ValueError("--resume latest needs run_name=<the run to continue> (or a checkpoint path)")
    name = run_name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(output_dir) / name


# fields that say how this invocation continues a run, not what the run is
_RESUME_FIELDS = ("resume", "allow_config_change", "overwrite")
# fields that say where the run folder is: a copied or renamed run is the same run
_LOCATION_FIELDS = ("output_dir", "run_name")


def _flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """``key: old -> new`` lines for every leaf that differs (lists compare whole); where the run folder lies
    (``output_dir``, ``run_name``) and how it is continued are not part of what a run is."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in _RESUME_FIELDS + _LOCATION_FIELDS:
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return lines


def _next_config_version(run_dir: Path) -> Path:
    n = 1
    while (run_dir / f"config.{n}.yaml").exists():
        n += 1
    return run_dir / f"config.{n}.yaml"


# -- one process owns a run folder ------------------------------------------------------------------------------
LOCK_FILE = "run.lock"
RUN_FILE = "run.json"  # the run's id (kept across resumes), so every metrics row names the run it belongs to
CONFIG_FILE = "config.yaml"
# what makes a folder "hold a run": anything a run writes that another run would replace or mix into
_RUN_MARKERS = (CONFIG_FILE, "metrics.jsonl", "checkpoints", "model", "text_model", RUN_FILE)


class RunFolderError(ValueError):
    """A run folder that this process may not use (held by another process, or holding another run)."""


def _resumed_config_changes(cfg, run_dir: Path) -> Tuple[List[str], str]:
    """On resume: (differences from the run's config.yaml, error message or "")."""
    from omegaconf import OmegaConf

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return [], ""
    old = OmegaConf.to_container(OmegaConf.load(path))
    new = OmegaConf.to_container(OmegaConf.structured(cfg))
    diff = config_differences(old, new)
    if not diff or getattr(cfg, "allow_config_change", False):
        return diff, ""
    listing = "\n  ".join(diff)
    return diff, (f"{path}: the config differs from the run being resumed:\n  {listing}\n"
                  f"resume with the same config, or pass --allow-config-change (the old config is kept as "
                  f"config.N.yaml)")


def _process_start(pid: int) -> Optional[str]:
    """The start time of a process in clock ticks since boot (Linux): tells a reused PID apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = _process_start(pid)
    return start is None or now is None or now == start


@dataclass
class RunLock:
    """``run.lock`` in a run folder: host, PID, process start and start time of the process that owns it."""

    path: Path
    info: Dict[str, Any]

    def describe(self) -> str:
        i = self.info
        return f"process {i.get('pid')} on {i.get('host')} (started {i.get('started')})"

    def release(self) -> None:
        _held.pop(str(self.path.parent), None)
        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if held.get("token") == self.info.get("token"):
            self.path.unlink(missing_ok=True)


_held: Dict[str, RunLock] = {}  # run folder -> this process's lock on it


def _read_lock(path: Path) -> Optional[RunLock]:
    try:
        return RunLock(path, json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return RunLock(path, {})  # half-written by a process killed at that moment


def _stale_reason(lock: RunLock, run_dir: Path) -> Optional[str]:
    """Why a lock no longer protects anything, or None while its process may still be running."""
    i = lock.info
    if not i:
        return "the lock file is unreadable"
    if i.get("folder") and i["folder"] != str(run_dir.resolve()):
        return f"the lock came with the folder from {i['folder']}"
    if i.get("host") != socket.gethostname():
        return None  # another machine's processes cannot be looked at from here
    if not _alive(int(i.get("pid", -1)), i.get("process_start")):
        return f"{lock.describe()} is no longer running"
    return None


def acquire_run_lock(run_dir: Path) -> RunLock:
    """Make this process the owner of ``run_dir``; a lock left by a dead process is taken over and reported.
    Raises ``RunFolderError`` naming the owner while another live process holds it."""
    run_dir = Path(run_dir)
    if str(run_dir) in _held:  # this process already owns it (a second Trainer in the same program)
        return _held[str(run_dir)]
    path = run_dir / LOCK_FILE
    info = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "folder": str(run_dir.resolve()),
            "token": uuid.uuid4().hex}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            lock = _read_lock(path)
            if lock is None:
                continue  # released just now
            reason = _stale_reason(lock, run_dir)
            if reason is None:
                raise RunFolderError(
                    f"{run_dir}: in use by {lock.describe()} ({path}). Wait for it to finish, or choose another "
                    f"run_name. If that process is gone (another machine, or a crash), delete {path}") from None
            _logger.warning("%s: taking over a stale lock: %s", path, reason)
            aside = path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
            try:
                os.replace(path, aside)  # one process wins the take-over; the others then meet its new lock
                aside.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info, indent=2))
        lock = RunLock(path, info)
        _held[str(run_dir)] = lock
        return lock
    raise RunFolderError(f"{run_dir}: could not take {path}; other processes keep changing it")


def release_run_dir(run_dir: Path) -> None:
    """Give up this process's ownership of ``run_dir`` (also done at exit)."""
    lock = _held.get(str(run_dir))
    if lock is not None:
        lock.release()


@atexit.register
def _release_all() -> None:
    for lock in list(_held.values()):
        lock.release()


@contextmanager
def releasing_run_dirs() -> Iterator[None]:
    """Release, on the way out, every run folder taken inside the block (also when the run's setup failed)."""
    before = set(_held)
    try:
        yield
    finally:
        for key in set(_held) - before:
            _held[key].release()


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in _RUN_MARKERS)


def _move_aside(run_dir: Path) -> Path:
    """``--overwrite``: the old run moves to ``<name>.replaced-<time>``; nothing is deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    os.replace(run_dir, aside)
    (aside / LOCK_FILE).unlink(missing_ok=True)  # this process's lock, moved with the folder
    _held.pop(str(run_dir), None)
    _logger.warning("--overwrite: the previous run in %s was moved to %s", run_dir, aside)
    return aside


def _refusal(run_dir: Path) -> str:
    ckpts = run_dir / "checkpoints"
    state = "" if ckpts.is_dir() and any(ckpts.iterdir()) else " (it has no checkpoint yet)"
    return (f"{run_dir}: this folder already holds a run{state}; a new run would replace its config, checkpoints "
            f"and model. Choose one: continue it with --resume latest; start a new run with another run_name=...; "
            f"or pass --overwrite to move the old run aside (to {run_dir.name}.replaced-<time>; nothing is deleted)")


def read_run_id(run_dir: Path) -> str:
    """The id of the run in ``run_dir`` ("" for a folder without one)."""
    try:
        return str(json.loads((Path(run_dir) / RUN_FILE).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _claim(cfg, run_dir: Path) -> str:
    """Rank 0: own ``run_dir`` and check that this invocation may use it. Returns an error message or ""."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        acquire_run_lock(run_dir)
    except RunFolderError as exc:
        return str(exc)
    error = ""
    if getattr(cfg, "resume", ""):
        _, error = _resumed_config_changes(cfg, run_dir)
    elif holds_run(run_dir):
        if getattr(cfg, "overwrite", False):
            _move_aside(run_dir)
            run_dir.mkdir(parents=True)
            acquire_run_lock(run_dir)
        else:
            error = _refusal(run_dir)
    if error:
        release_run_dir(run_dir)
        return error
    if not read_run_id(run_dir):
        write_text_atomic(run_dir / RUN_FILE, json.dumps({"run_id": uuid.uuid4().hex[:12],
                                                          "created": time.strftime("%Y-%m-%d %H:%M:%S %z")}))
    return ""


def record_run_config(cfg, run_dir: Path, env: dist.DistEnv) -> None:
    """Write ``config.yaml`` and ``env.json`` (rank 0). A resumed run calls this once its checkpoint is restored,
    so a refused resume leaves the run's config untouched; an allowed config change keeps the old one as
    ``config.<n>.yaml``."""
    from ..config.loading import save_resolved

    if env.is_main:
        if getattr(cfg, "resume", ""):
            diff, _ = _resumed_config_changes(cfg, run_dir)
            if diff:
                kept = _next_config_version(run_dir)
                os.replace(run_dir / CONFIG_FILE, kept)
                _logger.warning("resuming with a changed config (old one kept as %s):\n  %s", kept.name,
                                "\n  ".join(diff))
        save_resolved(cfg, run_dir / CONFIG_FILE)
        write_text_atomic(run_dir / "env.json", json.dumps({**environment_info(), "world_size": env.world_size},
                                                           indent=2))
    dist.barrier()


def prepare_run_dir(cfg, env: dist.DistEnv, prefix: str | None = None) -> Path:
    """Own (rank 0) and agree on (all ranks) the run directory.

    The folder is locked to this process (``run.lock``). A folder that already holds a run is refused unless
    resuming, or ``cfg.overwrite`` (the old run is then moved aside). On resume a config that differs from the
    run's ``config.yaml`` is refused (all ranks raise) unless ``cfg.allow_config_change``, and ``config.yaml`` is
    left for the caller to write with ``record_run_config`` once the checkpoint is restored."""
    run_dir = resolve_run_dir(cfg.output_dir, cfg.run_name, prefix or cfg.method, getattr(cfg, "resume", ""))
    run_dir = Path(dist.broadcast_object(str(run_dir)))
    error = _claim(cfg, run_dir) if env.is_main else ""
    error = dist.broadcast_object(error)
    if error:
        raise RunFolderError(error)
    if getattr(cfg, "resume", ""):
        dist.barrier()
    else:
        record_run_config(cfg, run_dir, env)
    return run_dir
