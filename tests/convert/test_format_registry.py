"""`fundus-vlp import`: formats, variants and tokenizer requirements give clear errors before any work."""
from __future__ import annotations

import argparse

import pytest
import torch

from fundus_vlp.convert import FORMATS, import_weights
from fundus_vlp.convert.checkpoint import read_checkpoint
from fundus_vlp.hub import CheckpointError


def test_every_issue_format_is_registered():
    assert set(FORMATS) == {"flair", "keepfit", "vilref", "ret-clip", "retfound"}


def test_bad_requests_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="unknown import format 'clip'"):
        import_weights("clip", tmp_path / "w.pth", tmp_path / "m")
    with pytest.raises(ValueError, match="retfound has no variant 'vit'; choose one of mae, dinov2"):
        import_weights("retfound", tmp_path / "w.pth", tmp_path / "m", variant="vit")
    with pytest.raises(ValueError, match="vilref: --tokenizer is required"):
        import_weights("vilref", tmp_path / "w.pth", tmp_path / "m")
    with pytest.raises(CheckpointError, match="image-only model: it has no tokenizer"):
        import_weights("retfound", tmp_path / "w.pth", tmp_path / "m", tokenizer=tmp_path)
    with pytest.raises(CheckpointError, match="w.pth: not found"):
        import_weights("retfound", tmp_path / "w.pth", tmp_path / "m")


class Payload:
    """Any class outside the allow-list: unpickling it could run code."""


def test_checkpoints_are_read_without_unpickling_objects(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-3)}, tmp_path / "finetuned.pth")
    assert read_checkpoint(tmp_path / "finetuned.pth")["args"].lr == 1e-3  # RETFound's fine-tuned files
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError, match="not a safe checkpoint"):
        read_checkpoint(tmp_path / "unsafe.pth")
