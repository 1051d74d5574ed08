"""ONNX export: both encoders match PyTorch in onnxruntime; OnnxModel.classify matches FundusCLIP.classify."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_tiny_model
from fundus_vlp.cli.main import main
from fundus_vlp.factory import from_pretrained

LABELS = ["normal", "glaucoma", "cataract"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_overrides):
    root = tmp_path_factory.mktemp("onnx")
    save_tiny_model(root / "model", seed=1, **tiny_overrides)
    assert main(["export", "--model", str(root / "model"), "--onnx"]) == 0
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        paths.append(root / f"i{i}.png")
        Image.fromarray(rng.integers(0, 256, (50, 60 + 10 * i, 3), dtype=np.uint8)).save(paths[-1])
    return root / "model", paths


def test_both_encoders_match_pytorch_with_dynamic_batch_and_length(exported):
    import onnxruntime as ort

    model_dir, _ = exported
    assert (model_dir / "image_encoder.onnx").is_file() and (model_dir / "text_encoder.onnx").is_file()
    model = from_pretrained(model_dir)
    image = ort.InferenceSession(str(model_dir / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(str(model_dir / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    size = model.cfg.preprocess.size
    for batch in (1, 5):  # the graph was traced with 2
        x = torch.rand(batch, 3, size, size)
        got = image.run(None, {"pixel_values": x.numpy()})[0]
        np.testing.assert_allclose(got, model.encode_image(x).detach().numpy(), atol=1e-4, rtol=0)
    for texts in (["glaucoma"], ["a fundus photograph of mild diabetic retinopathy", "normal", "cataract eye"]):
        ids = model.tokenizer(texts, padding="longest")
        got = text.run(None, {"input_ids": ids.numpy()})[0]
        np.testing.assert_allclose(got, model.encode_text(ids).detach().numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_onnx_model_classifies_like_the_pytorch_model(exported):
    from fundus_vlp import OnnxModel

    model_dir, paths = exported
    model, onnx = from_pretrained(model_dir), OnnxModel.from_pretrained(model_dir)
    for multilabel in (False, True):
        ref = model.classify(paths, LABELS, multilabel=multilabel)
        got = onnx.classify(paths, LABELS, multilabel=multilabel)
        assert list(got.index) == list(ref.index) and list(got.columns) == LABELS
        np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx.classify(paths, LABELS, domain_knowledge=False).to_numpy(),
                               model.classify(paths, LABELS, domain_knowledge=False).to_numpy(), atol=1e-4)


def test_onnx_classify_never_builds_the_torch_model(exported):
    model_dir, paths = exported
    code = ("import sys; from fundus_vlp import OnnxModel; "
            f"df = OnnxModel.from_pretrained({str(model_dir)!r}).classify({[str(p) for p in paths]!r}, {LABELS!r}); "
            "assert df.shape == (3, 3), df.shape; "
            "bad = [m for m in ('fundus_vlp.models.clip', 'fundus_vlp.models.text', 'transformers.models.bert.modeling_bert') "
            "if m in sys.modules]; assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_image_only_model_exports_its_image_encoder(tmp_path):
    """No text tower: the image graph alone (a ViT built for another size than the preprocess size, whose position
    table is resampled on every call), the same embeddings as PyTorch, and the image-only error for text."""
    from fundus_vlp.factory import create_model
    from fundus_vlp.models.onnx import OnnxModel

    torch.manual_seed(0)
    model = create_model("tiny-image-only")
    assert model.visual.trunk.patch_embed.img_size != (model.cfg.preprocess.size,) * 2
    model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(tmp_path / "m"), "--onnx"]) == 0
    assert (tmp_path / "m" / "image_encoder.onnx").is_file() and not (tmp_path / "m" / "text_encoder.onnx").exists()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8) for _ in range(3)]
    onnx = OnnxModel.from_pretrained(tmp_path / "m")
    np.testing.assert_allclose(onnx.embed_images(images), from_pretrained(tmp_path / "m").embed_images(images),
                               atol=1e-5)
    with pytest.raises(RuntimeError, match="image-only model"):
        onnx.classify(images, LABELS)
