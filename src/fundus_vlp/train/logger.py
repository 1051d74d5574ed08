"""Logging: rank-0 console lines, JSONL metrics always, TensorBoard when installed."""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, Optional

_logger = logging.getLogger(__name__)


def setup_logging(level: str = "INFO", rank: int = 0, log_file: Optional[Path] = None) -> None:
    """Rank 0 logs at `level`; other ranks only warnings (their lines would repeat rank 0's)."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # only ours: leave handlers of the host application/pytest alone
        if getattr(handler, "_fundus_vlp", False):
            root.removeHandler(handler)
    lvl = getattr(logging, str(level).upper(), logging.INFO) if rank == 0 else logging.WARNING
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s" if rank == 0
                            else f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    console._fundus_vlp = True
    root.addHandler(console)
    if log_file is not None:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        fh._fundus_vlp = True
        root.addHandler(fh)
    root.setLevel(lvl)
    for noisy in ("PIL", "matplotlib", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """Append-only JSONL (one record per logged step) + optional TensorBoard; only rank 0 writes.

    On resume, records after the resumed step are dropped first, so the file always describes one
    continuous run even after a kill. Every record carries ``run`` (the run id) when one is given.
    """

    def __init__(self, path: Path, enabled: bool = True, tensorboard_dir: Optional[Path] = None,
                 resume_step: Optional[int] = None, run_id: str = ""):
        self.path = Path(path)
        self.enabled = enabled
        self.run_id = run_id
        self._tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                _logger.info("TensorBoard is not installed; metrics go to %s only", self.path)

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if "step" not in rec or rec["step"] <= step:
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {k: _plain(v) for k, v in record.items()}
        if self.run_id:
            rec["run"] = self.run_id
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None and "step" in rec:
            prefix = rec.get("kind", "train")
            for key, value in rec.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{prefix}/{key}", value, rec["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path, kind: str = "train"):
    """The records of one kind from a metrics.jsonl."""
    out = []
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind", "train") == kind:
            out.append(rec)
    return out
