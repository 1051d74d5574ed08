"""A corpus with every kind of bad input mixed with valid but unusual images: `check-data` and
`pretrain --dry-run` report every bad row (file and row) and accept every valid one; `predict` reports every
bad image file, predicts every valid one and exits non-zero.

``BadCorpus`` knows which rows are bad and which are valid; ``assert_reports_exactly`` checks a command's
output against it (by dataframe file and row), ``assert_reports_bad_images`` by image file, for commands
that take images rather than dataframes: a ``predict`` test is
``code, out = run_cli(["predict", "--model", M, *map(str, corpus.valid_images + corpus.bad_images)], capsys)``
then ``assert code != 0`` and ``assert_reports_bad_images(out, corpus)``.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image

from fundus_vlp.cli.main import main

PUBLIC_HEADER = "image,atributes,categories\n"


def write_png_bomb(path: Path, width: int = 20000, height: int = 20000) -> None:
    """A real, complete 1-bit PNG of width x height zeros: ~50 MB of pixels that compress to a few KB.
    Any decoder that honours the header would allocate gigabytes once converted to RGB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row * 1000) for _ in range(height // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _valid_images(root: Path) -> Dict[str, callable]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (24, 32, 3), np.uint8)
    palette = Image.fromarray(rng.integers(0, 4, (24, 32), np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    palette.info["transparency"] = 0
    big = Image.fromarray(np.linspace(0, 255, 5184, dtype=np.uint8)[None, :].repeat(8, 0)).resize((5184, 3456))
    return {
        "ok/rgba.png": lambda p: Image.fromarray(np.dstack([rgb, np.full((24, 32), 7, np.uint8)]), "RGBA").save(p),
        "ok/la.png": lambda p: Image.new("LA", (32, 24), (120, 200)).save(p),
        "ok/gray16.png": lambda p: Image.fromarray(rng.integers(0, 65535, (24, 32)).astype(np.uint16)).save(p),
        "ok/cmyk.jpg": lambda p: Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(p),
        "ok/palette.png": lambda p: palette.save(p, transparency=0),
        "ok/bilevel.png": lambda p: Image.fromarray(rgb[..., 0] > 128).save(p),
        "ok/rgb.tif": lambda p: Image.fromarray(rgb).save(p),
        "ok/float.tif": lambda p: Image.fromarray(rng.random((24, 32)).astype(np.float32)).save(p),
        "ok/canon_5184x3456.jpg": lambda p: big.convert("RGB").save(p, quality=80),
        "linked/linked.png": None,  # written into a folder outside the root that root/linked points to
    }


@dataclass
class BadCorpus:
    root: Path
    public: Path  # categorical: valid rows and bad image rows
    captions: Path  # image-caption file with one empty caption
    broken_files: Dict[Path, str] = field(default_factory=dict)  # whole files that cannot be used -> what to expect
    bad_rows: List[Tuple[str, int, str]] = field(default_factory=list)  # (csv name, row, expected words)
    valid_rows: List[Tuple[str, int]] = field(default_factory=list)
    bad_images: List[Path] = field(default_factory=list)  # files that exist or not, none of them decodes
    valid_images: List[Path] = field(default_factory=list)  # every unusual but valid image

    @property
    def dataframes(self) -> List[Path]:
        return [self.public, self.captions, *self.broken_files]


def build_bad_corpus(base: Path) -> BadCorpus:
    root = base / "root"
    (root / "ok").mkdir(parents=True)
    (root / "bad").mkdir()
    elsewhere = base / "other_disk" / "dataset"  # a dataset linked into the root, as users do with big sets
    elsewhere.mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(elsewhere / "linked.png")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (base / "outside.png").write_bytes((elsewhere / "linked.png").read_bytes())

    rows: List[str] = []
    corpus = BadCorpus(root, base / "public.csv", base / "captions.csv")
    for rel, write in _valid_images(root).items():
        if write is not None:
            write(root / rel)
        rows.append(f"{rel},[],['normal']")

    write_png_bomb(root / "bad" / "bomb.png")
    (root / "bad" / "empty.png").write_bytes(b"")
    good = root / "ok" / "rgb.tif"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(root / "bad" / "full.jpg")
    (root / "bad" / "truncated.jpg").write_bytes((root / "bad" / "full.jpg").read_bytes()[:400])
    (root / "bad" / "full.jpg").unlink()
    bad = [
        ("bad/bomb.png,[],['normal']", "bomb"),
        ("bad/empty.png,[],['normal']", "empty file"),
        ("bad/truncated.jpg,[],['normal']", "truncated"),
        ("bad/missing.png,[],['normal']", "not found"),
        ("../outside.png,[],['normal']", "escapes the data root"),
        (f"{good},[],['normal']", "absolute"),
        ("ok/rgb.tif,[],\"['glaucoma'\"", "not a Python list literal"),
    ]
    for line, words in bad:
        rows.insert(len(rows) - 2, line)  # bad rows before the last valid ones: nothing may stop at the first
    for i, line in enumerate(rows, start=1):
        match = next((w for l, w in bad if l == line), None)
        if match:
            corpus.bad_rows.append(("public.csv", i, match))
        else:
            corpus.valid_rows.append(("public.csv", i))
    corpus.public.write_text(PUBLIC_HEADER + "\n".join(rows) + "\n")
    corpus.valid_images = [root / rel for rel in _valid_images(root)]
    corpus.bad_images = [root / "bad" / name for name in ("bomb.png", "empty.png", "truncated.jpg", "missing.png")]

    corpus.captions.write_text("image,caption\nok/rgba.png,a normal fundus\nok/la.png,\nok/rgb.tif,optic disc\n")
    corpus.bad_rows.append(("captions.csv", 2, "empty caption"))
    corpus.valid_rows += [("captions.csv", 1), ("captions.csv", 3)]

    dup, header_only, latin = base / "dup_columns.csv", base / "header_only.csv", base / "latin1.csv"
    dup.write_text("image,atributes,categories,categories\nok/rgba.png,[],['normal'],['x']\n")
    header_only.write_text(PUBLIC_HEADER)
    latin.write_bytes((PUBLIC_HEADER + "ok/rgba.png,[],['normal']\nok/la.png,[],['r\u00e9tinopathie']\n").encode("latin-1"))
    corpus.broken_files = {dup: "duplicate column", header_only: "no data rows", latin: "line 3 (data row 2)"}
    return corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> BadCorpus:
    return build_bad_corpus(tmp_path_factory.mktemp("bad_corpus"))


def problem_lines(output: str) -> List[str]:
    return [line.strip() for line in output.splitlines() if ", row " in line or line.strip().endswith(".csv")]


def assert_reports_exactly(output: str, corpus: BadCorpus, broken_files: bool = True) -> None:
    """Every bad row (and broken file) is named with its reason; no valid row is named."""
    for name, row, words in corpus.bad_rows:
        hits = [line for line in output.splitlines() if f"{name}, row {row}:" in line]
        assert hits, f"{name} row {row} ({words}) not reported in:\n{output}"
        assert words in hits[0], (words, hits[0])
    for name, row in corpus.valid_rows:
        assert f"{name}, row {row}:" not in output, f"valid {name} row {row} reported as bad:\n{output}"
    if broken_files:
        for path, words in corpus.broken_files.items():
            hits = [line for line in output.splitlines() if str(path) in line and words in line]
            assert hits, f"{path.name} ({words}) not reported in:\n{output}"


def assert_reports_bad_images(output: str, corpus: BadCorpus) -> None:
    """Every bad image file is named in the output; no valid one is named next to a problem."""
    for path in corpus.bad_images:
        assert path.name in output, f"{path.name} not reported in:\n{output}"
    problems = [line for line in output.splitlines() if any(b.name in line for b in corpus.bad_images)]
    for path in corpus.valid_images:
        assert not any(path.name in line for line in problems), path


def run_cli(args: List[str], capsys) -> Tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_check_data_reports_every_bad_row_and_accepts_every_valid_one(corpus, capsys):
    code, out = run_cli(["check-data", "--root", str(corpus.root), "--workers", "2", "--dataframe",
                         *map(str, corpus.dataframes)], capsys)
    assert code == 1
    assert_reports_exactly(out, corpus)
    assert f"problems: {len(corpus.bad_rows) + len(corpus.broken_files)}" in out
    assert f"images decoded: {len(corpus.valid_rows)}" in out
    assert_reports_bad_images(out, corpus)


def test_check_data_without_decoding_still_finds_missing_empty_and_escaping_files(corpus, capsys):
    code, out = run_cli(["check-data", "--root", str(corpus.root), "--no-decode", "--dataframe", str(corpus.public)],
                        capsys)
    assert code == 1
    for name, row, words in corpus.bad_rows:
        if words in ("not found", "empty file", "escapes the data root", "absolute", "not a Python list literal"):
            assert f"{name}, row {row}:" in out and words in out, (row, words, out)
    for words in ("bomb", "truncated"):  # only decoding finds these
        assert words not in out


def _dry_run_args(corpus: BadCorpus, tiny_overrides, out: Path, public: List[Path], extra=()) -> List[str]:
    ov = ["pretrain", "--dry-run", "--workers", "2", "method=keepfit", "model=tiny", f"output_dir={out}",
          f"data.public=[{{dataframes: {[str(p) for p in public]}, root: '{corpus.root}'}}]",
          f"data.elite=[{{dataframes: ['{corpus.captions}'], root: '{corpus.root}', modality: CFP}}]",
          "train.batch_size=2", "train.epochs=2", "model.preprocess.size=32"]
    return ov + [f"model.{k}={v}" for k, v in tiny_overrides.items()] + list(extra)


def test_pretrain_dry_run_reports_every_bad_row_and_trains_nothing(corpus, tiny_overrides, tmp_path, capsys):
    args = _dry_run_args(corpus, tiny_overrides, tmp_path, [corpus.public, *corpus.broken_files])
    code, out = run_cli(args, capsys)
    assert code == 1
    assert_reports_exactly(out, corpus)
    assert "the run would stop before training" in out and "nothing was trained" in out
    assert not any(tmp_path.iterdir())  # no run folder, no checkpoint


def test_pretrain_dry_run_of_valid_rows_prints_the_plan(corpus, tiny_overrides, tmp_path, capsys):
    valid = tmp_path / "valid.csv"
    lines = corpus.public.read_text().splitlines()
    valid.write_text("\n".join([lines[0]] + [lines[row] for _, row in corpus.valid_rows if _ == "public.csv"]) + "\n")
    captions = tmp_path / "captions_ok.csv"
    captions.write_text("image,caption\nok/rgba.png,a normal fundus\nok/rgb.tif,optic disc\n")
    args = _dry_run_args(corpus, tiny_overrides, tmp_path / "runs", [valid])
    args = [a.replace(str(corpus.captions), str(captions)) for a in args]
    code, out = run_cli(args, capsys)
    assert code == 0, out
    n_valid = sum(1 for name, _ in corpus.valid_rows if name == "public.csv")
    assert "problems: none" in out
    assert "public rows:" in out and f" {n_valid}\n" in out
    assert "{" not in out.split("data:", 1)[1]  # readable lines, not a Python dict
    assert f"-> {2 * (n_valid // 2)} optimiser steps" in out
    assert not (tmp_path / "runs").exists()


def test_training_start_finds_every_bad_path_at_once_and_skip_drops_them(corpus, tiny_overrides, tmp_path):
    """No decoding at the start of a run, but every row's path is checked before the first step."""
    from fundus_vlp.config.loading import build_config
    from fundus_vlp.data.dataframes import DataFormatError
    from fundus_vlp.data.loader import read_sources
    from fundus_vlp.train.config import PretrainCfg

    public = tmp_path / "paths.csv"
    lines = [line for line in corpus.public.read_text().splitlines() if "['glaucoma'" not in line]
    public.write_text("\n".join(lines) + "\n")
    ov = [f"data.public=[{{dataframes: ['{public}'], root: '{corpus.root}'}}]"]
    cfg = build_config(PretrainCfg, [], ov, has_model=True)
    sources = {"public": [(str(public), str(corpus.root))], "elite": []}
    with pytest.raises(DataFormatError) as err:
        read_sources(cfg, sources, use_elite=False)
    message = str(err.value)
    for words in ("not found", "empty file", "escapes the data root", "absolute"):
        assert words in message
    assert "4 problem(s)" in message
    cfg = build_config(PretrainCfg, [], ov + ["data.on_bad_image=skip"], has_model=True)
    frame, _, counts = read_sources(cfg, sources, use_elite=False)
    assert counts["dropped_bad_rows"] == 4
    assert "bad/bomb.png" in set(frame["image"])  # found only when decoded: skipped when drawn


def test_bomb_is_skipped_when_drawn_with_skip(corpus):
    import pandas as pd

    from fundus_vlp.data.datasets import CaptionDataset

    frame = pd.DataFrame({"image": ["bad/bomb.png", "ok/rgba.png"], "caption": ["x", "y"], "source": "c.csv",
                          "row": [1, 2]})
    ds = CaptionDataset(frame, corpus.root, lambda img, rng: img, on_bad_image="skip")
    item = ds.get(0, seed=0)
    assert item["text"] == "y" and item["skipped"][0].reason.startswith("over Pillow's pixel limit")


def test_predict_reports_every_bad_image_and_predicts_every_valid_one(corpus, tiny_model, tmp_path, capsys):
    import pandas as pd

    tiny_model.save_pretrained(tmp_path / "m")
    out = tmp_path / "pred.csv"
    images = [*corpus.valid_images, *corpus.bad_images]
    code, text = run_cli(["predict", "--model", str(tmp_path / "m"), "--classes", "normal,glaucoma",
                          "--out", str(out), *map(str, images)], capsys)
    assert code != 0
    assert_reports_bad_images(text, corpus)
    table = pd.read_csv(out)
    predicted = table[table["error"].isna()]
    assert sorted(Path(p).name for p in predicted["image"]) == sorted(p.name for p in corpus.valid_images)


def test_prepare_on_a_full_disk_is_a_clear_error_and_keeps_what_was_done(corpus, tmp_path, capsys, monkeypatch,
                                                                          disk_fills_after):
    """The disk fills up after a few images: the error names the file, what it needed and the free space; no
    partial file is left; the images already written are in the manifest, so the next run continues."""
    import json

    disk_fills_after(20_000)
    valid = tmp_path / "valid.csv"
    lines = corpus.public.read_text().splitlines()
    valid.write_text("\n".join([lines[0]] + [lines[row] for _, row in corpus.valid_rows if _ == "public.csv"]) + "\n")
    out = tmp_path / "cache"
    code, text = run_cli(["prepare", "--root", str(corpus.root), "--dataframe", str(valid), "--out", str(out),
                          "--size", "64", "--workers", "1"], capsys)
    assert code == 1, text
    assert "no space left on the device" in text and ".png: no space left" in text and "free there" in text
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.undo()
    from fundus_vlp.data.prepare import MANIFEST

    done = json.loads((out / MANIFEST).read_text())["entries"]
    assert done and all((out / name).is_file() for name in done.values())  # kept, and resumed from next time
    code, text = run_cli(["prepare", "--root", str(corpus.root), "--dataframe", str(valid), "--out", str(out),
                          "--size", "64", "--workers", "1"], capsys)
    assert code == 0 and f"already cached: {len(done)}" in text


HOSTILE_CONFIGS = [  # (key path in model_cfg, value, words the error must contain)
    (("embed_dim",), "big", "embed_dim: Value 'big'"),
    (("embed_dim",), 10_000_000, "embed_dim: 10000000 is outside the plausible range"),
    (("decoder", "hidden_size"), 2**40, "decoder.hidden_size"),
    (("preprocess", "size"), "large", "preprocess.size"),
    (("text", "context_length"), -5, "text.context_length"),
    (("text", "hf_config", "hidden_size"), 10_000_000, "text.hf_config.hidden_size: 10000000 is not a plausible"),
    (("vision", "timm_modle_name"), "resnet18", "vision.timm_modle_name"),
]


@pytest.mark.parametrize("keys, value, words", HOSTILE_CONFIGS, ids=lambda v: str(v)[:24])
def test_hostile_model_config_is_refused_with_the_field_named_before_anything_is_built(
        keys, value, words, tiny_model, tmp_path, capsys, monkeypatch):
    """A model folder whose config.json has a wrong type, an implausible size or an unknown key: `predict` and the
    Python API refuse it naming the file and the field, and no model is constructed (nothing allocated)."""
    import json

    from fundus_vlp.factory import create_model_from_pretrained
    from fundus_vlp.hub import CheckpointError
    from fundus_vlp.models.clip import FundusCLIP

    folder = tmp_path / "m"
    tiny_model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    node = config["model_cfg"]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))

    def built(*args, **kwargs):
        raise AssertionError("a model was constructed from a refused config")

    monkeypatch.setattr(FundusCLIP, "__init__", built)
    with pytest.raises(CheckpointError, match="config.json") as err:
        create_model_from_pretrained(folder)
    assert words in str(err.value)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    code, out = run_cli(["predict", "--model", str(folder), "--classes", "normal,glaucoma", str(image)], capsys)
    assert code != 0 and words in out and "config.json" in out and "Traceback" not in out, out


def test_segmentation_names_a_decompression_bomb_mask(corpus, tiny_model, tmp_path, capsys):
    """A DRIVE-style pairs CSV whose second mask is the corpus bomb: a named error before any training."""
    tiny_model.save_pretrained(tmp_path / "m")
    (tmp_path / "pairs.csv").write_text("image,mask\nok/rgb.tif,ok/bilevel.png\nok/rgba.png,bad/bomb.png\n")
    (tmp_path / "seg.yaml").write_text("name: bomb_masks\ntask: segmentation\nclasses: [background, vessel]\n"
                                       "masks: pairs.csv\nmask_values: {0: 0, 1: 1, 255: 1}\nzero_shot: false\n")
    code, text = run_cli(["eval", "segmentation", "--model", str(tmp_path / "m"), "--experiment",
                          str(tmp_path / "seg.yaml"), "--image-root", str(corpus.root), "--dataframe-dir",
                          str(tmp_path), "--output-dir", str(tmp_path / "out"), "progress=false"], capsys)
    assert code != 0
    line = next(line for line in text.splitlines() if "bomb.png" in line)
    assert "mask" in line and "decompression bomb" in line and "pairs.csv, row 2" in line, text
    assert "Traceback" not in text and not (tmp_path / "out" / "results.json").exists()
