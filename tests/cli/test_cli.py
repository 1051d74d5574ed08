"""Every subcommand explains itself; check-data, export, caption and list-models work end to end."""
from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from conftest import make_image_dataset, pretrain_overrides
from fundus_vlp.cli.main import SUBCOMMANDS, main


@pytest.mark.parametrize("command", [c.replace("_", "-") for c in SUBCOMMANDS])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: fundus-vlp" in out and len(out) > 200
    assert "not available" not in out


def test_module_entry_point_and_list_models():
    out = subprocess.run([sys.executable, "-m", "fundus_vlp", "list-models", "-v"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("tiny", "rn50-bioclinicalbert", "vitb16-bioclinicalbert", "rn50-minilm", "rn18-minilm"):
        assert name in out
    assert "emilyalsentzer/Bio_ClinicalBERT" in out


def test_check_data_reports_bad_rows(tmp_path, capsys):
    ds = make_image_dataset(tmp_path, n_per_class=2, n_elite=2)
    (ds["root"] / "setA" / "normal_1.png").write_bytes(b"\x89PNG broken")
    (ds["root"] / "elite" / "e0.png").unlink()
    code = main(["check-data", "--root", str(ds["root"]), "--dataframe", str(ds["public_csv"]), str(ds["elite_csv"])])
    out = capsys.readouterr().out
    assert code == 1
    assert "rows: 8" in out and "problems: 2" in out
    assert "public.csv, row 2: setA/normal_1.png" in out and "elite.csv, row 1: elite/e0.png: file not found" in out
    assert main(["check-data", "--root", str(ds["root"]), "--dataframe", str(ds["public_csv"]), "--no-decode"]) == 0


def test_export_and_caption_after_keepfit_v2(image_dataset, tiny_overrides, tmp_path, capsys):
    args = ["pretrain"] + pretrain_overrides(image_dataset, tiny_overrides, tmp_path, "keepfit_v2", run_name="v2",
                                             **{"train.max_steps": 2})
    assert main(args) == 0
    assert main(["export", "--run", str(tmp_path / "v2"), "--out", str(tmp_path / "release")]) == 0
    assert (tmp_path / "release" / "model.safetensors").is_file()
    img = tmp_path / "x.png"
    Image.new("RGB", (70, 50), (180, 60, 30)).save(img)
    capsys.readouterr()
    assert main(["caption", "--model", str(tmp_path / "release"), str(img), "--max-length", "8",
                 "--json", str(tmp_path / "c.json")]) == 0
    assert str(img) in capsys.readouterr().out and (tmp_path / "c.json").is_file()
    assert main(["caption", "--model", str(tmp_path / "release"), str(img), "--beams", "2", "--max-length", "6"]) == 0


def test_caption_on_a_model_without_decoder_is_a_clear_error(tiny_model, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "m")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main(["caption", "--model", str(tmp_path / "m"), str(tmp_path / "x.png")]) == 1
    assert "no caption decoder" in capsys.readouterr().err
