"""Shared fixtures: offline, CPU-only, tiny models and tiny datasets built in temp folders."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
if "FUNDUS_VLP_CACHE" not in os.environ:  # generated worlds/feature caches of the tests stay out of ~/.cache
    import tempfile

    os.environ["FUNDUS_VLP_CACHE"] = tempfile.mkdtemp(prefix="fundus_vlp_test_cache_")

import copy  # noqa: E402
import errno  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fundus_vlp.demo_world.presets import PRESETS  # noqa: E402

torch.set_num_threads(2)

TINY_WORLD = copy.deepcopy(PRESETS["tiny"])  # DemoWorldCfg fields of the tests' demo world

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

WORDS = """a an the of with and in at near no normal fundus photograph photo noisy clean glaucoma
cataract retinopathy diabetic mild moderate severe proliferative macular degeneration age related hole
myopia pathologic retinitis pigmentosa drusen haemorrhages hemorrhages microaneurysms exudates hard soft
optic disc cup enlarged round dark red yellow bright spots dots lesion defect fovea macula periphery
vessels small large many few image eye left right consistent findings shows shown""".split()


def free_port() -> int:
    """A free localhost TCP port for a test's process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unit(*shape: int, seed: int) -> torch.Tensor:
    """Seeded random rows of unit L2 norm (embeddings for loss tests)."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)


@pytest.fixture(scope="session")
def kb():
    """The shipped knowledge base (read-only)."""
    from fundus_vlp.data.knowledge import KnowledgeBase

    return KnowledgeBase.load()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A WordPiece vocabulary made here (no download): special tokens, our words, letters and '##' pieces."""
    from transformers import BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny_tokenizer")
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:-()'")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + letters + [f"##{c}" for c in letters]
    vocab = list(dict.fromkeys(vocab))
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary as ``vocab=``; ``vocab_file=`` is ignored (5 special tokens only)
    tok = BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True)
    word_ids = tok.convert_tokens_to_ids(["glaucoma", "macula"])
    assert word_ids == [vocab.index("glaucoma"), vocab.index("macula")], f"tiny vocabulary not loaded: {word_ids}"
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A 2-layer, 32-wide BERT masked-LM folder on the tiny test vocabulary (a stand-in for a hub encoder;
    dropout 0.1, so a run's random state matters)."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(tiny_tokenizer_dir))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    d = tmp_path_factory.mktemp("tiny_mlm")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_overrides(tiny_tokenizer_dir) -> dict:
    return {"text.hf_tokenizer_name": str(tiny_tokenizer_dir)}


@pytest.fixture
def tiny_model(tiny_overrides):
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    return create_model("tiny", **tiny_overrides)


def save_tiny_model(folder: Path, seed: int = 0, **overrides) -> Path:
    """A freshly initialised 'tiny' model (seeded) saved to `folder`; returns `folder`."""
    from fundus_vlp.factory import create_model

    torch.manual_seed(seed)
    create_model("tiny", **overrides).save_pretrained(folder)
    return folder


def write_noise_dataframe(csv: Path, root: Path, rows: list, std: float, shape: tuple, seed: int = 0) -> None:
    """A public dataframe in the real format (unnamed index, list literals) with one noise PNG per row under `root`;
    rows are (relative path, mean grey level, labels), so the brightness tells the classes apart."""
    rng = np.random.default_rng(seed)
    lines = [",image,atributes,categories"]
    for i, (rel, mean, labels) in enumerate(rows):
        arr = np.clip(rng.normal(mean, std, shape), 0, 255).astype(np.uint8)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / rel)
        categories = repr(list(labels))
        if "," in categories:  # CSV-quote a list of several labels
            categories = f'"{categories}"'
        lines.append(f"{i},{rel},[],{categories}")
    csv.write_text("\n".join(lines) + "\n")


CLASSES = ["normal", "glaucoma", "mild diabetic retinopathy"]
CAPTIONS = {
    "normal": "a normal fundus photograph with a clean optic disc",
    "glaucoma": "an enlarged optic cup near the disc consistent with glaucoma",
    "mild diabetic retinopathy": "few small red dots near the macula consistent with mild diabetic retinopathy",
}


def _draw(label: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2 - 1) ** 2
    img[fov] = (170 + rng.integers(-10, 10), 70, 40)
    cup = 3 if label != "glaucoma" else 8
    cy, cx = size // 2, size // 3
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < cup ** 2] = (250, 230, 180)
    if label == "mild diabetic retinopathy":
        for _ in range(6):
            y, x = rng.integers(size // 3, 2 * size // 3, 2)
            img[y:y + 2, x:x + 2] = (90, 0, 0)
    return img


def make_image_dataset(root: Path, n_per_class: int = 8, n_elite: int = 6, seed: int = 0) -> dict:
    """A small real-format dataset: PNGs under root/setA, a categorical CSV and an elite caption CSV."""
    rng = np.random.default_rng(seed)
    rows, elite = [], []
    (root / "setA").mkdir(parents=True, exist_ok=True)
    (root / "elite").mkdir(parents=True, exist_ok=True)
    for label in CLASSES:
        for i in range(n_per_class):
            rel = f"setA/{label.replace(' ', '_')}_{i}.png"
            Image.fromarray(_draw(label, rng)).save(root / rel)
            rows.append({"image": rel, "atributes": "[]", "categories": repr([label])})
    for i in range(n_elite):
        label = CLASSES[i % len(CLASSES)]
        rel = f"elite/e{i}.png"
        Image.fromarray(_draw(label, rng)).save(root / rel)
        elite.append({"image": rel, "caption": CAPTIONS[label]})
    pub_csv, elite_csv = root / "public.csv", root / "elite.csv"
    pd.DataFrame(rows).to_csv(pub_csv)
    pd.DataFrame(elite).to_csv(elite_csv)
    return {"root": root, "public_csv": pub_csv, "elite_csv": elite_csv}


@pytest.fixture(scope="session")
def image_dataset(tmp_path_factory) -> dict:
    return make_image_dataset(tmp_path_factory.mktemp("imgdata"))


def pretrain_overrides(ds: dict, tiny_overrides: dict, out: Path, method: str, **extra) -> list:
    """Config overrides of a tiny pretraining run on `image_dataset`."""
    ov = [
        f"method={method}", "model=tiny", f"output_dir={out}", "data.num_workers=0",
        f"data.public=[{{dataframes: ['{ds['public_csv']}'], root: '{ds['root']}'}}]",
        f"data.elite=[{{dataframes: ['{ds['elite_csv']}'], root: '{ds['root']}', modality: CFP}}]",
        "train.batch_size=4", "train.epochs=1", "train.log_every=1", "train.tensorboard=false",
        "model.preprocess.size=64", "optim.warmup_steps=0",
    ]
    ov += [f"model.{k}={v}" for k, v in tiny_overrides.items()]
    ov += [f"{k}={v}" for k, v in extra.items()]
    return ov


def build_trainer(method: str, ds: dict, tiny_overrides: dict, out: Path, model: str = "tiny", batch: int = 4,
                  **extra):
    """A Trainer (task, data, optimiser) of a tiny run on `ds`, without running the loop."""
    from fundus_vlp.config.loading import build_config
    from fundus_vlp.train.config import PretrainCfg
    from fundus_vlp.train.loop import Trainer

    ov = pretrain_overrides(ds, tiny_overrides, out, method, run_name="t", **extra)
    ov = [o for o in ov if not o.startswith("model=")] + [f"model={model}", f"train.batch_size={batch}"]
    return Trainer(build_config(PretrainCfg, [], ov, has_model=True))


def first_batch(trainer) -> dict:
    batch = next(iter(trainer.data.loader))
    batch.pop("skipped")
    return batch


class _FillingDisk:
    """A file opened by ``runtime.files.atomic_write`` on a disk with ``room`` bytes left (shared by every file):
    a write that does not fit fails with ENOSPC, as on a full disk, and the partial file's space comes back."""

    room = 0

    def __init__(self, path, mode, encoding):
        self.f, self.written = open(path, mode, encoding=encoding), 0

    def write(self, data):
        if len(data) > _FillingDisk.room:
            _FillingDisk.room += self.written  # the caller removes the partial file
            raise OSError(errno.ENOSPC, "No space left on device")
        _FillingDisk.room -= len(data)
        self.written += len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def disk_fills_after(monkeypatch):
    """``disk_fills_after(n)``: from now on the disk under ``atomic_write`` has ``n`` bytes free (a fake ENOSPC)."""
    import fundus_vlp.runtime.files as files

    def fill(room: int) -> None:
        _FillingDisk.room = room
        monkeypatch.setattr(files, "_open_temp", _FillingDisk)
    return fill


@pytest.fixture(scope="session")
def official_images(tmp_path_factory):
    """The import tests' official-code test images (tests/convert/official_layout.py), written once per session."""
    from official_layout import write_test_images  # tests/convert is on the path of the tests that use this

    return write_test_images(tmp_path_factory.mktemp("official_images"))
