"""Readers on the real public dataframes (read from ../shared/data, never copied) and on bad input."""
from __future__ import annotations

import pytest

from conftest import SHARED_DATA
from fundus_vlp.data.dataframes import (DataFormatError, read_captions, read_categorical, read_corpus,
                                        resolve_image_path)

PRETRAIN = SHARED_DATA / "keepfit_dataframes" / "pretraining"
TRANSFER = SHARED_DATA / "keepfit_dataframes" / "transferability"
needs_shared = pytest.mark.skipif(not PRETRAIN.is_dir(), reason="../shared/data is not beside the repo")

# row counts of the shipped dataframes (23_HRF is shipped too; 45 rows)
PRETRAIN_ROWS = {
    "01_EYEPACS": 3375, "03_IDRID": 467, "04_RFMid": 3200, "06_DEN": 15710, "07_LAG": 4854, "08_ODIR": 10053,
    "09_PAPILA": 141, "10_PARAGUAY": 757, "11_STARE": 397, "12_ARIA": 129, "14_AGAR300": 28, "15_APTOS": 3662,
    "16_FUND-OCT": 179, "17_DiaRetDB1": 86, "18_DRIONS-DB": 110, "19_Drishti-GS1": 101, "20_E-ophta": 463,
    "21_G1020": 1020, "23_HRF": 45, "24_ORIGA": 650, "26_ROC": 100, "27_BRSET": 16266, "28_OIA-DDR": 13673,
    "30_SUSTech-SYSU": 1219, "31_JICHI": 9939, "32_CHAKSU": 1344, "33_DR1-2": 2013, "34_Cataract": 601,
    "35_ScarDat": 997,
}
TRANSFER_ROWS = {"25_REFUGE": 400, "13_FIVES": 800, "08_ODIR200x3": 600, "AMD": 400, "TAOP_train": 3000,
                 "TAOP_test": 297, "02_MESSIDOR": 1744, "36_ACRIMA": 705, "37_DeepDRiD_train_eval": 1600,
                 "37_DeepDRiD_test": 400}


@needs_shared
def test_all_real_categorical_dataframes_parse_with_documented_counts():
    total = 0
    for name, rows in PRETRAIN_ROWS.items():
        frame = read_categorical(PRETRAIN / f"{name}.csv")
        assert len(frame) == rows, name
        assert all(isinstance(c, list) for c in frame["categories"])
        total += rows
    assert total == 91579  # the shipped categorical dataframes
    for name, rows in TRANSFER_ROWS.items():
        assert len(read_categorical(TRANSFER / f"{name}.csv")) == rows, name


@needs_shared
def test_real_caption_files_parse():
    mm = read_captions(PRETRAIN / "39_MM_Retinal_dataset.csv")
    assert len(mm) == 2167 and (mm["caption"].str.len() > 0).all()
    ffa = read_captions(SHARED_DATA / "mm_retinal_v1" / "FFA.csv")  # caption in a one-element list
    assert len(ffa) == 1947 and ffa["image"].str.contains("FFA").all()


@needs_shared
def test_categorical_reader_keeps_free_text_and_multilabel():
    den = read_categorical(PRETRAIN / "06_DEN.csv")
    assert max(len(c) for c in den["categories"]) > 2
    messidor = read_categorical(TRANSFER / "02_MESSIDOR.csv")
    assert messidor["atributes"].iloc[0] == ["clean"]


def test_raw_mm_retinal_form_and_extension_probing(tmp_path):
    (tmp_path / "CFP").mkdir()
    (tmp_path / "CFP" / "figure1.png").write_bytes(b"x")
    (tmp_path / "raw.csv").write_text("Image_ID,Label,en_caption\nCFP/figure1,Normal,Normal fundus of the right eye\n")
    frame = read_captions(tmp_path / "raw.csv")
    assert list(frame["caption"]) == ["Normal fundus of the right eye"]
    assert resolve_image_path(tmp_path, frame["image"][0]).name == "figure1.png"


def test_wrong_columns_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,labels\na.png,x\n")
    with pytest.raises(DataFormatError, match="bad.csv: missing column"):
        read_categorical(bad)
    with pytest.raises(DataFormatError, match="not a caption file"):
        read_captions(bad)


def test_bad_list_literal_names_file_and_row(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("image,atributes,categories\na.png,[],['ok']\nb.png,[],\"__import__('os').system('x')\"\n")
    with pytest.raises(DataFormatError, match=r"d.csv, row 2: column 'categories'"):
        read_categorical(f)
    f.write_text("image,atributes,categories\na.png,[],\"[1, 2]\"\n")
    with pytest.raises(DataFormatError, match="list of strings"):
        read_categorical(f)


def test_empty_captions_are_reported_with_rows_or_skipped(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("image,caption\na.png,fine\nb.png,\nc.png,  \n")
    with pytest.raises(DataFormatError, match=r"c.csv, row 2: b.png: empty caption[^\n]*\n.*c.csv, row 3: c.png: empty"):
        read_captions(f)
    assert list(read_captions(f, on_empty="skip")["image"]) == ["a.png"]


def test_paths_outside_the_root_are_rejected(tmp_path):
    with pytest.raises(DataFormatError, match=r"x.csv, row 4: .*absolute"):
        resolve_image_path(tmp_path, "/etc/passwd", "x.csv", 4)
    with pytest.raises(DataFormatError, match="escapes the data root"):
        resolve_image_path(tmp_path, "../../secret.png", "x.csv", 5)
    assert resolve_image_path(tmp_path, "12_ARIA/images//a.tif") == (tmp_path / "12_ARIA/images/a.tif").resolve()


def test_corpus_paragraphs(tmp_path):
    (tmp_path / "a.txt").write_text("Glaucoma enlarges the cup.\nIt thins the rim.\n\n\nDrusen are yellow.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Macular hole.\n")
    assert read_corpus([tmp_path]) == ["Glaucoma enlarges the cup. It thins the rim.", "Drusen are yellow.", "Macular hole."]
    with pytest.raises(DataFormatError, match="no .txt files"):
        read_corpus([])
    with pytest.raises(DataFormatError, match="corpus path not found"):
        read_corpus([tmp_path / "missing_dir"])
