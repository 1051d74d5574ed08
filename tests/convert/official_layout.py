"""Seeded weights in the official checkpoint layouts, the test images and prompts, and the recorded outputs of
the official code (``fixtures/*.json``, made by ``make_references.py``; docs/reference.md#imported-models).

The weights are a pure function of (seed, key, shape): the reference script fills the official model with
them, the tests rebuild them from the recorded key list without the official code."""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"

# Chinese prompts: full-width punctuation, ASCII words and digits, curly quotes, and 龘 (not in the vocabulary)
PROMPTS_ZH = ["眼底照片：糖尿病视网膜病变。", "“青光眼”的照片", "正常眼底 (normal fundus), OCT 3mm", "黄斑裂孔，右眼龘"]
CLASSES_ZH = ["正常眼底", "青光眼", "糖尿病视网膜病变"]
TEMPLATES_ZH = ["{}的照片", "质量差的{}的照片", "一张眼底照片：{}。"]
PROMPTS_EN = ["A fundus photograph of glaucoma", "A fundus photograph of mild diabetic retinopathy", "normal"]
CLASSES_EN = ["normal", "glaucoma", "cataract"]
TEMPLATES_EN = ["A fundus photograph of [CLS]"]


def chinese_vocab() -> List[str]:
    """A WordPiece vocabulary for the prompts ([PAD] = 0, as in the Chinese BERT vocabulary); 龘 is left out."""
    text = "".join(PROMPTS_ZH + CLASSES_ZH + TEMPLATES_ZH).replace("龘", "")
    chars = sorted({c for c in text if not c.isspace() and not c.isascii()})
    words = ["normal", "fundus", "oct", "3", "mm", "##mm", "(", ")", ",", '"', "{", "}", "."]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars


def english_vocab() -> List[str]:
    words = sorted({w for t in PROMPTS_EN + CLASSES_EN + TEMPLATES_EN for w in t.lower().replace("[cls]", "").split()})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + ["no", "with"]


def write_vocab(tokens: List[str], path: Path) -> Path:
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def seeded_tensor(key: str, shape: List[int], seed: int) -> torch.Tensor:
    """A tensor for ``key`` drawn from its own generator: scale by role so activations stay alive through
    deep towers (He-scaled convolutions, unit-ish norms, BN statistics near 0/1, a logit scale in range)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.tensor(0, dtype=torch.long)
    if name.startswith("logit_scale"):
        return torch.tensor(2.5 + torch.rand((), generator=g).item())
    if name == "position_ids":
        return torch.arange(shape[-1]).reshape(shape)
    if name == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    if name == "running_mean":
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) <= 1 and name in ("weight", "gamma"):
        return 1.0 + 0.1 * torch.randn(shape, generator=g)  # norm scales, LayerScale
    if len(shape) <= 1 and name != "class_embedding":
        return 0.05 * torch.randn(shape, generator=g)  # biases, norm shifts
    if any(s in key for s in ("pos", "embedding", "token")) or name == "class_embedding":
        return 0.1 * torch.randn(shape, generator=g)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    gain = 2.0 if len(shape) == 4 else 1.0  # ReLU convolutions
    return torch.randn(shape, generator=g) * (gain / fan_in) ** 0.5


def seeded_state(shapes: Dict[str, List[int]], seed: int) -> Dict[str, torch.Tensor]:
    return {k: seeded_tensor(k, list(s), seed) for k, s in shapes.items()}


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def write_test_images(folder: Path) -> List[Path]:
    """The square ``skimage.data.retina()`` (1411×1411) and a 650×900 crop of it, as PNG files."""
    from PIL import Image
    from skimage import data

    retina = data.retina()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "retina.png", folder / "retina_wide.png"]
    Image.fromarray(retina).save(paths[0], compress_level=1)
    Image.fromarray(retina[300:950, 250:1150]).save(paths[1], compress_level=1)
    return paths


def fixed_input(size: int) -> torch.Tensor:
    """An already-normalised input: separates the model from the preprocessing."""
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(7))


def save_container(state: Dict[str, torch.Tensor], container: str, path: Path) -> Path:
    """Write ``state`` as the official code saves it."""
    if container == "chinese_clip_train":  # ViLReF training/main.py
        torch.save({"epoch": 3, "step": 100, "name": "seeded",
                    "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif container == "module_state_dict":  # RET-CLIP: the state dict itself, DDP prefix
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif container == "mae":  # RETFound MAE: {'model': ...}
        torch.save({"model": state}, path)
    elif container == "dinov2":  # RETFound DINOv2: {'teacher': backbone.* + heads}
        torch.save({"teacher": {(k if k.startswith(("dino_head.", "ibot_head.")) else f"backbone.{k}"): v
                                for k, v in state.items()}}, path)
    elif container == "flair":  # FLAIR: a flat state dict
        torch.save(state, path)
    else:
        raise ValueError(container)
    return path


def assert_close(got, expected, what: str, atol: float = 1e-5, relative: bool = False) -> None:
    """max |Δ| < atol; ``relative``: Δ measured in units of the largest expected magnitude (unnormalised
    features, whose scale on random weights can be in the thousands)."""
    got, expected = (x.detach().cpu().to(torch.float64) if isinstance(x, torch.Tensor)
                     else torch.from_numpy(np.array(x, dtype=np.float64))  # a copy: the array may be read-only
                     for x in (got, expected))
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    diff = (got - expected).abs().max().item()
    if relative:
        diff /= max(expected.abs().max().item(), 1e-12)
    assert diff < atol, f"{what}: max |Δ| {diff:.3g} >= {atol}{' (relative)' if relative else ''}"


def predict_probs(model_dir: Path, images: List[Path], classes: List[str], template: str, capsys) -> np.ndarray:
    """``fundus-vlp predict --json`` probabilities (images × classes) with one template and no knowledge base."""
    from fundus_vlp.cli.main import main

    capsys.readouterr()
    assert main(["predict", "--model", str(model_dir), "--classes", ",".join(classes), "--template", template,
                 "--no-domain-knowledge", "--json", "--device", "cpu", *map(str, images)]) == 0
    document = json.loads(capsys.readouterr().out)
    return np.array([[row["probs"][c] for c in classes] for row in document["images"]])
