"""Segmentation transfer: Dice/IoU by hand, mask decoding and its errors, trunk -> encoder weights, and
``fundus-vlp eval segmentation`` end to end on a FIVES-like folder with no test-set selection."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundus_vlp.cli.main import main
from fundus_vlp.eval.experiments import Experiment, ExperimentError, get_experiment
from fundus_vlp.eval.segmentation import (WeightTransferError, build_segmenter, configure_encoder,
                                          load_encoder_init, transfer_trunk_weights)
from fundus_vlp.eval.segmentation_data import MaskError, decode_binary_mask, decode_mask, list_pairs, load_pairs
from fundus_vlp.eval.segmentation_metrics import confusion_counts, dice_iou_per_image, segmentation_metrics
from fundus_vlp.eval.segmentation_train import SegTask, constant_baselines, is_trivial

TINY_SEG = {"epochs": 3, "batch_size": 4, "decoder_channels": [16, 16, 8, 8, 8], "size": 32}


# -- metrics ---------------------------------------------------------------------------------------------

def test_dice_iou_match_hand_computation():
    pred = torch.tensor([[[0, 1], [1, 1]]])
    target = torch.tensor([[[0, 1], [0, 1]]])
    # class 1: tp 2, fp 1, fn 0 -> Dice 4/5, IoU 2/3; class 0: tp 1, fp 0, fn 1 -> Dice 2/3, IoU 1/2
    assert confusion_counts(pred, target, 2).tolist() == [[[1, 0, 1], [2, 1, 0]]]
    m = segmentation_metrics(pred, target, ["background", "vessel"])
    assert m["dice_vessel"] == pytest.approx(0.8) and m["iou_vessel"] == pytest.approx(2 / 3)
    assert m["dice_background"] == pytest.approx(2 / 3) and m["iou_background"] == pytest.approx(0.5)
    assert m["dice_mean"] == pytest.approx(0.8)  # foreground only when class 0 is "background"


def test_empty_mask_conventions_and_per_image_mean():
    # image 0: cup absent in truth and prediction (undefined, left out); image 1: cup missed (0);
    # image 2: cup predicted where there is none (0); image 3: cup perfect (1)
    t = torch.tensor([[[0, 0]], [[2, 0]], [[0, 0]], [[2, 2]]])
    p = torch.tensor([[[0, 0]], [[0, 0]], [[2, 0]], [[2, 2]]])
    dice, iou = dice_iou_per_image(confusion_counts(p, t, 3))
    assert math.isnan(dice[0, 2]) and dice[1:, 2].tolist() == [0.0, 0.0, 1.0]
    m = segmentation_metrics(p, t, ["background", "disc", "cup"])
    assert m["dice_cup"] == pytest.approx(1 / 3) and m["iou_cup"] == pytest.approx(1 / 3)
    assert math.isnan(m["dice_disc"])  # in no image and never predicted
    assert m["dice_mean"] == pytest.approx(1 / 3)  # NaN classes are left out of the mean
    # without a class named background every class counts
    assert segmentation_metrics(p, t, ["a", "b", "c"])["dice_mean"] == pytest.approx(
        np.nanmean([m["dice_background"], m["dice_cup"]]))


# -- masks -----------------------------------------------------------------------------------------------

def _png(path: Path, array: np.ndarray, mode=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def test_mask_decoding_rules_and_errors(tmp_path):
    binary = np.array([[0, 255], [255, 0]], np.uint8)
    assert decode_mask(_png(tmp_path / "b.png", binary), ["background", "vessel"]).tolist() == [[0, 1], [1, 0]]
    grey_rgb = np.repeat(binary[..., None], 3, axis=2)  # binary mask saved as RGB
    assert decode_mask(_png(tmp_path / "g.png", grey_rgb), ["background", "vessel"]).tolist() == [[0, 1], [1, 0]]
    refuge = np.array([[255, 128], [0, 255]], np.uint8)
    vals = {255: 0, 128: 1, 0: 2}
    decoded = decode_mask(_png(tmp_path / "r.bmp", refuge), ["background", "disc", "cup"], vals)
    assert decoded.tolist() == [[0, 1], [2, 0]]
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 1] = [255, 0, 0]
    colour[1, 1] = [0, 0, 255]
    colours = {"background": [0, 0, 0], "haemorrhage": [255, 0, 0], "exudate": [0, 0, 255]}
    assert decode_mask(_png(tmp_path / "c.png", colour), ["background", "haemorrhage", "exudate"],
                       mask_colors=colours).tolist() == [[0, 1], [0, 2]]
    with pytest.raises(MaskError, match=r"u\.png.*value\(s\) \[7\]"):
        decode_mask(_png(tmp_path / "u.png", np.array([[0, 7]], np.uint8)), ["background", "vessel"])
    with pytest.raises(MaskError, match=r"c\.png.*no mask_colors"):
        decode_mask(tmp_path / "c.png", ["background", "haemorrhage", "exudate"])
    colour[0, 0] = [9, 9, 9]
    with pytest.raises(MaskError, match=r"c2\.png.*\(9, 9, 9\)"):
        decode_mask(_png(tmp_path / "c2.png", colour), ["background", "haemorrhage", "exudate"], mask_colors=colours)


def _image(rng, size=48):
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_missing_and_mismatched_masks_name_the_file(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        _png(tmp_path / "img" / f"{name}.png", _image(rng))
    _png(tmp_path / "gt" / "a.png", np.zeros((48, 48), np.uint8))
    exp = Experiment(name="t", classes=["background", "vessel"], task="segmentation", image_dir="img",
                     mask_dir="gt", image_root=str(tmp_path))
    with pytest.raises(MaskError, match=r"without a mask.*b\.png"):
        list_pairs(exp)
    _png(tmp_path / "gt" / "b.png", np.zeros((40, 48), np.uint8))
    pairs = list_pairs(exp)
    with pytest.raises(MaskError, match=r"gt/b\.png: mask is 48x40 but image .*b\.png is 48x48"):
        load_pairs(pairs, exp, 32)
    (tmp_path / "pairs.csv").write_text("image,mask\nimg/a.png,gt/a.png\nimg/b.png,gt/missing.png\n")
    csv_exp = Experiment(name="t", classes=["background", "vessel"], task="segmentation", masks="pairs.csv",
                         dataframe_dir=str(tmp_path), image_root=str(tmp_path))
    with pytest.raises(MaskError, match=r"mask .*gt/missing\.png \(.*pairs\.csv, row 2\)"):
        list_pairs(csv_exp)


# -- encoder weights -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    return create_model("tiny")


def test_pretrained_trunk_fills_the_whole_encoder(model):
    seg = build_segmenter(model.cfg.vision, 3, decoder_channels=[16, 16, 8, 8, 8])
    info = load_encoder_init(seg, model, "pretrained")
    trunk = model.visual.trunk.state_dict()
    enc = seg.encoder.model.state_dict()
    assert info["loaded"] == len(trunk) == len(enc)
    assert all(torch.equal(enc[k], trunk[k]) for k in trunk)  # every tensor, BN statistics included
    rand = build_segmenter(model.cfg.vision, 3, decoder_channels=[16, 16, 8, 8, 8])
    load_encoder_init(rand, model, "random")
    assert not torch.equal(rand.encoder.model.state_dict()["conv1.0.weight"], trunk["conv1.0.weight"])
    extra = {**trunk, "layer9.weight": torch.zeros(1)}
    with pytest.raises(WeightTransferError, match="layer9"):
        transfer_trunk_weights(seg, extra)
    with pytest.raises(ValueError, match="imagenet_checkpoint"):
        load_encoder_init(seg, model, "imagenet")


def test_imagenet_init_reads_a_local_timm_checkpoint(model, tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    ref = timm.create_model("test_resnet", num_classes=10)  # a classifier checkpoint: fc.* is skipped
    save_file(ref.state_dict(), str(tmp_path / "in1k.safetensors"))
    seg = build_segmenter(model.cfg.vision, 2, decoder_channels=[16, 16, 8, 8, 8])
    load_encoder_init(seg, model, "imagenet", str(tmp_path / "in1k.safetensors"))
    assert torch.equal(seg.encoder.model.state_dict()["conv1.0.weight"], ref.state_dict()["conv1.0.weight"])


def test_finetune_modes_choose_trainable_encoder_parts(model):
    seg = build_segmenter(model.cfg.vision, 2, decoder_channels=[16, 16, 8, 8, 8])
    enc = seg.encoder.model
    assert configure_encoder(seg, "frozen", model.visual.trunk) == 0
    assert not any(p.requires_grad for p in enc.parameters())
    assert all(p.requires_grad for p in seg.decoder.parameters())
    assert configure_encoder(seg, "last_block", model.visual.trunk) > 0
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("layer4.") for n in trainable)
    configure_encoder(seg, "full", model.visual.trunk)
    assert all(p.requires_grad for p in enc.parameters())


# -- end to end ------------------------------------------------------------------------------------------

def _fives_like(root: Path, n_train: int = 6, n_test: int = 2, size: int = 40) -> None:
    """The FIVES layout: train|test / Original|Ground truth, same file names, binary 0/255 vessel masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            # dark wavy lines on an orange background, the mask marks them
            phase, freq = rng.uniform(0, 6), rng.uniform(0.15, 0.3)
            vessel = np.abs(np.sin(xx * freq + phase) * 8 + size / 2 - yy) < 2.5
            img = np.zeros((size, size, 3), np.uint8) + np.array([200, 90, 40], np.uint8)
            img[vessel] = [90, 20, 15]
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            _png(root / split / "Original" / f"{i + 1}_A.png", img)
            _png(root / split / "Ground truth" / f"{i + 1}_A.png", (vessel * 255).astype(np.uint8))


@pytest.fixture
def one_thread():
    """Convolutions this small gain nothing from a second thread, and lose much to it on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("seg_model") / "tiny"
    create_model("tiny").save_pretrained(out)
    return out


def _cli(model_dir: Path, root: Path, out: Path) -> dict:
    seg = " ".join(f"segmentation.{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY_SEG.items())
    args = ["eval", "segmentation", "--model", str(model_dir), "--experiment", "13_FIVES_vessels",
            "--image-root", str(root), "--output-dir", str(out), "folds=2", "progress=false",
            "print_table=false", *seg.split()]
    assert main(args) == 0
    return json.loads((out / "results.json").read_text())


def test_fives_folder_end_to_end_and_no_test_set_selection(model_dir, tmp_path, one_thread):
    root = tmp_path / "FIVES"
    _fives_like(root)
    res = _cli(model_dir, root, tmp_path / "run")
    (row,) = res["rows"]
    assert row["mode"] == "segmentation" and row["method"] == "pretrained/frozen" and row["folds"] == 2
    assert row["n_test"] == 2 and row["split"] == "official-test"  # FIVES' own test folder
    assert {"dice_vessel", "iou_vessel", "dice_background", "dice_mean"} <= set(row["metrics"])
    assert row["metrics"]["dice_mean"] == pytest.approx(row["metrics"]["dice_vessel"])
    assert all(h["transfer"]["loaded"] > 0 and h["trainable_encoder_tensors"] == 0 for h in row["hparams"])
    assert (tmp_path / "run" / "masks_pretrained_frozen.png").is_file()
    assert "dice_vessel" in (tmp_path / "run" / "table.txt").read_text()
    # corrupt every test mask (still valid values): the selected epochs and validation scores do not move,
    # the test scores do
    for p in (root / "test" / "Ground truth").iterdir():
        _png(p, 255 - np.asarray(Image.open(p)))
    bad = _cli(model_dir, root, tmp_path / "run_bad")["rows"][0]
    assert [h["best_epoch"] for h in bad["hparams"]] == [h["best_epoch"] for h in row["hparams"]]
    assert [h["best_val_dice_mean"] for h in bad["hparams"]] == [h["best_val_dice_mean"] for h in row["hparams"]]
    assert bad["metrics"]["dice_vessel"] != pytest.approx(row["metrics"]["dice_vessel"])


def test_segmentation_and_classification_do_not_mix(model, tmp_path, capsys):
    from fundus_vlp.eval.config import EvalCfg
    from fundus_vlp.eval.runner import evaluate

    exp = Experiment(name="seg", classes=["background", "vessel"], task="segmentation", masks="x.csv",
                     image_root=str(tmp_path))
    with pytest.raises(ValueError, match="segmentation experiment"):
        evaluate(model, exp, ["linear-probe"], EvalCfg(output_dir=str(tmp_path / "o")))
    with pytest.raises(ExperimentError, match="needs `masks`"):
        list_pairs(Experiment(name="s", classes=["a", "b"], task="segmentation", image_root=str(tmp_path)))
    assert main(["eval", "segmentation", "--model", "m", "--experiment", "e", "segmentation.inits=[imagenet]"]) != 0
    assert "imagenet_checkpoint" in capsys.readouterr().err
    assert get_experiment("25_REFUGE_disc_cup").mask_values == {255: 0, 128: 1, 0: 2}


# -- thin structures with the defaults (DRIVE layout) ----------------------------------------------------

def _drive_like(root: Path, n_train: int = 12, n_test: int = 4, crop: int = 64) -> None:
    """The DRIVE layout: training|test / images (TIFF) and 1st_manual (palette GIF, 0/255) whose stems differ
    from the images' (21_training.tif / 21_manual1.gif), paired by CSVs; the test CSV is the official split.
    Images are crops of skimage's retina photograph, vessels a ridge filter of its green channel thresholded
    over the whole photograph (~10 % of the pixels)."""
    from skimage import data, filters, transform

    retina = transform.resize(data.retina(), (448, 448), anti_aliasing=True)
    ridges = filters.sato(retina[..., 1], sigmas=[1, 2], black_ridges=True)
    vessels = ridges > np.quantile(ridges[100:348, 100:348], 0.9)
    rng = np.random.default_rng(0)
    for split, n, first in (("training", n_train, 21), ("test", n_test, 1)):
        lines = ["image,mask"]
        for i in range(n):
            y, x = rng.integers(100, 348 - crop, 2)
            k = int(rng.integers(4))
            img = np.rot90(retina[y:y + crop, x:x + crop], k)
            vessel = np.rot90(vessels[y:y + crop, x:x + crop], k)
            image = root / split / "images" / f"{first + i:02d}_{split}.tif"
            mask = root / split / "1st_manual" / f"{first + i:02d}_manual1.gif"
            _png(image, (img * 255 + 0.5).astype(np.uint8))
            _png(mask, (vessel * 255).astype(np.uint8))  # an L image saved as GIF: a palette GIF
            lines.append(f"{image.relative_to(root)},{mask.relative_to(root)}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "drive.yaml").write_text("name: DRIVE_like\ntask: segmentation\nclasses: [background, vessel]\n"
                                     "masks: training.csv\ntest_masks: test.csv\nzero_shot: false\n")


def test_constant_predictions_are_trivial_and_are_the_baselines():
    task = SegTask(["background", "vessel"])
    target = torch.zeros(2, 4, 4, dtype=torch.uint8)
    target[:, 0, :2] = 1  # 2 of 16 pixels vessel in each image
    assert is_trivial(torch.ones_like(target), task) and is_trivial(torch.zeros_like(target), task)
    assert not is_trivial(target, task)
    base = constant_baselines(target, task)
    assert base == {"all_background": 0.0, "all_vessel": pytest.approx(2 * 2 / (2 * 2 + 14))}
    lesions = SegTask(["MA", "HE"], multilabel=True)
    assert is_trivial(torch.full_like(target, 3), lesions) and is_trivial(torch.zeros_like(target), lesions)
    assert not is_trivial(target, lesions)  # MA on some pixels: a real prediction


@pytest.mark.slow
def test_drive_layout_vessels_are_learned_beyond_both_constant_predictions(model_dir, tmp_path, one_thread):
    root = tmp_path / "DRIVE"
    _drive_like(root)
    out = tmp_path / "run"
    args = ["eval", "segmentation", "--model", str(model_dir), "--experiment", str(root / "drive.yaml"),
            "--image-root", str(root), "--dataframe-dir", str(root), "--output-dir", str(out), "folds=1",
            "progress=false", "print_table=false", "segmentation.epochs=15",
            "segmentation.decoder_channels=[32,16,16,8,8]"]  # loss, schedule, lr, selection: the defaults
    assert main(args) == 0
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["split"] == "official-test" and row["n_test"] == 4
    consts = row["constant_baselines"]
    assert consts["all_background"] == 0.0 and 0.1 < consts["all_vessel"] < 0.3
    assert row["metrics"]["dice_vessel"] > max(consts.values()) + 0.15, (row["metrics"], consts)
    (hist,) = row["history"]
    (hp,) = row["hparams"]
    assert [h["epoch"] for h in hist] == list(range(len(hist))) and all("val_dice_vessel" in h for h in hist)
    chosen = next(h for h in hist if h["epoch"] == hp["best_epoch"])
    assert not chosen["trivial"] and not hp["selected_trivial"] and hp["stopped"]
    assert 0.02 < chosen["val_fraction_vessel"] < 0.5
    assert (out / "history_pretrained_frozen.png").stat().st_size > 5000


# -- lesion sets: one mask folder per lesion type (IDRiD / FGADR layout) ------------------------------------

IDRID_DIRS = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates", "SE": "4. Soft Exudates"}


def _idrid_like(root: Path, n_train: int = 6, n_test: int = 2, size: int = 48) -> Path:
    """The IDRiD "A. Segmentation" layout: JPEG images, one folder of RGB TIFF masks (red on black) per lesion,
    mask stems with the lesion suffix (IDRiD_01_MA.tif); soft exudates only in every other image (no file
    otherwise); haemorrhages and hard exudates overlap in a band of rows."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    for split, sub, n, first in (("a. Training Set", "train", n_train, 1), ("b. Testing Set", "test", n_test, 55)):
        for i in range(n):
            stem = f"IDRiD_{first + i:02d}"
            cy, cx = rng.integers(12, size - 12, 2)
            lesions = {"HE": (yy - cy) ** 2 + (xx - cx) ** 2 < 30, "EX": (np.abs(yy - cy) < 2) & (xx > cx),
                       "MA": (yy == (cy + 9) % size) & (xx == (cx + 7) % size)}
            if i % 2 == 0:
                lesions["SE"] = (np.abs(yy - 8) < 3) & (np.abs(xx - 8) < 3)
            img = np.zeros((size, size, 3), np.uint8) + np.array([190, 80, 30], np.uint8)
            for name, colour in (("HE", [100, 10, 10]), ("EX", [250, 230, 90]), ("SE", [230, 210, 200]),
                                 ("MA", [120, 20, 20])):
                if name in lesions:
                    img[lesions[name]] = colour
            _png(root / "1. Original Images" / split / f"{stem}.jpg", img)
            for name, m in lesions.items():
                red = np.zeros((size, size, 3), np.uint8)
                red[m, 0] = 255
                _png(root / "2. All Segmentation Groundtruths" / split / IDRID_DIRS[name] / f"{stem}_{name}.tif", red)
    return root


def test_idrid_layout_pairs_absent_lesions_and_overlaps(tmp_path):
    from fundus_vlp.eval.segmentation_data import decode_pair

    root = _idrid_like(tmp_path / "A. Segmentation")
    exp = get_experiment("IDRiD_lesions", image_root=str(root))
    assert exp.is_multilabel_segmentation and "background" not in exp.classes
    pairs = list_pairs(exp)
    assert len(pairs) == 8 and pairs.official_test.sum() == 2
    assert sorted(pairs.masks[1]) == ["haemorrhages", "hard_exudates", "microaneurysms"]  # IDRiD_02: no SE file
    _, mask = decode_pair(pairs, 0, exp, 48)
    he, ex = 1 << exp.classes.index("haemorrhages"), 1 << exp.classes.index("hard_exudates")
    assert ((mask & he) & ((mask & ex) >> 1)).any()  # a pixel that is both: classes overlap
    assert (mask & 8).any() and not (decode_pair(pairs, 1, exp, 48)[1] & 8).any()  # SE present / no file: none
    stray = root / "2. All Segmentation Groundtruths" / "a. Training Set" / "1. Microaneurysms" / "IDRiD_77_MA.tif"
    _png(stray, np.zeros((48, 48, 3), np.uint8))
    with pytest.raises(MaskError, match=r"IDRiD_77_MA\.tif: microaneurysms mask without an image"):
        list_pairs(exp)
    stray.unlink()
    green = np.zeros((4, 4, 3), np.uint8)
    green[0, 0] = [0, 255, 0]
    with pytest.raises(MaskError, match=r"g\.tif: a lesion mask must be grey or red"):
        decode_binary_mask(_png(tmp_path / "g.tif", green))
    with pytest.raises(MaskError, match=r"l\.png: a lesion mask must be binary .*\[0, 1, 2\]"):
        decode_binary_mask(_png(tmp_path / "l.png", np.array([[0, 1, 2]], np.uint8)))


def test_pixel_aupr_by_hand():
    from fundus_vlp.eval.segmentation_metrics import pixel_aupr

    target = torch.tensor([[[1, 0, 0, 1]]], dtype=torch.uint8)  # class "a" (bit 0) on pixels 0 and 3
    probs = torch.tensor([0.9, 0.8, 0.1, 0.7]).view(1, 1, 1, 4)
    # ranking 0 (hit), 1 (miss), 3 (hit): AP = (1/1 + 2/3) / 2
    assert pixel_aupr(probs, target, ["a"])["aupr_a"] == pytest.approx(5 / 6)


def test_idrid_lesions_end_to_end_multilabel_scores_per_lesion(model_dir, tmp_path, one_thread):
    root = _idrid_like(tmp_path / "A. Segmentation")
    out = tmp_path / "run"
    seg = [f"segmentation.{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY_SEG.items()]
    assert main(["eval", "segmentation", "--model", str(model_dir), "--experiment", "IDRiD_lesions", "--image-root",
                 str(root), "--output-dir", str(out), "folds=1", "progress=false", "print_table=false", *seg]) == 0
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["details"]["multilabel"] and row["split"] == "official-test" and row["n_test"] == 2
    for lesion in ("microaneurysms", "haemorrhages", "hard_exudates", "soft_exudates"):
        assert {f"dice_{lesion}", f"iou_{lesion}", f"aupr_{lesion}"} <= set(row["metrics"])
    assert 0.0 <= row["metrics"]["aupr_haemorrhages"] <= 1.0
    assert set(row["constant_baselines"]) == {"nothing", "every_label_everywhere"}
    assert (out / "masks_pretrained_frozen.png").is_file() and (out / "history_pretrained_frozen.png").is_file()


def test_fgadr_layout_lists_one_folder_per_lesion(tmp_path):
    root = tmp_path / "Seg-set"
    exp = get_experiment("FGADR_lesions", image_root=str(root))
    for name in ("0001_1", "0002_1"):
        _png(root / "Original_Images" / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
    for folder in ("Microaneurysms_Masks", "Hemohedge_Masks", "HardExudate_Masks", "SoftExudate_Masks", "IRMA_Masks",
                   "Neovascularization_Masks"):
        (root / folder).mkdir()
    _png(root / "HardExudate_Masks" / "0002_1.png", np.full((8, 8), 255, np.uint8))
    pairs = list_pairs(exp)
    assert pairs.masks == [{}, {"hard_exudates": root / "HardExudate_Masks" / "0002_1.png"}]
    assert not pairs.official_test.any()


# -- dataset scale: decoded once into a memory-mapped cache; DPT decoder sized to its ViT ---------------------

def test_cache_decodes_once_streams_from_disk_and_follows_file_changes(tmp_path):
    from fundus_vlp.eval.segmentation_data import cached_arrays

    root = tmp_path / "FIVES"
    _fives_like(root, n_train=4, n_test=2)
    exp = get_experiment("13_FIVES_vessels", image_root=str(root))
    pairs = list_pairs(exp)
    ref_images, ref_masks = load_pairs(pairs, exp, 32)
    images, masks, info = cached_arrays(pairs, exp, 32, tmp_path / "cache")
    assert not info["hit"] and isinstance(images, np.memmap) and isinstance(masks, np.memmap)
    assert np.array_equal(images, ref_images) and np.array_equal(masks, ref_masks)
    again_images, _, again = cached_arrays(pairs, exp, 32, tmp_path / "cache")
    assert again["hit"] and again["folder"] == info["folder"] and np.array_equal(again_images, ref_images)
    mask = root / "test" / "Ground truth" / "2_A.png"  # an edited mask is a new cache, decoded again
    _png(mask, 255 - np.asarray(Image.open(mask)))
    _, new_masks, changed = cached_arrays(list_pairs(exp), exp, 32, tmp_path / "cache")
    assert not changed["hit"] and changed["folder"] != info["folder"]
    assert np.array_equal(new_masks[-1], 1 - ref_masks[-1])
    _png(mask, np.full((40, 40), 7, np.uint8))  # a bad mask: the error, and no (partial) cache left behind
    with pytest.raises(MaskError, match=r"2_A\.png.*value\(s\) \[7\]"):
        cached_arrays(list_pairs(exp), exp, 32, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [Path(info["folder"]).name, Path(changed["folder"]).name])


def test_dpt_decoder_is_sized_to_its_vit_and_configurable():
    from fundus_vlp.factory import create_model

    vit = create_model("tiny-vit").cfg.vision

    def n_params(module):
        return sum(p.numel() for p in module.parameters())

    seg = build_segmenter(vit, 2, "dpt", 64)
    assert n_params(seg.decoder) < 4 * n_params(seg.encoder)  # smp's default (ViT-L widths) is ~28 M here
    narrow = build_segmenter(vit, 2, "dpt", 64, decoder_channels=[8, 8, 16, 16, 8])
    assert n_params(narrow.decoder) < n_params(seg.decoder)
    with torch.no_grad():
        assert narrow(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
