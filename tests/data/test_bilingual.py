"""Bilingual (English/Chinese) text: readers, caption-language sampling, ban list, knowledge, prompts, demo text."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fundus_vlp.data.ban import BanList, normalise_text
from fundus_vlp.data.config import BanCfg, DataCfg
from fundus_vlp.data.dataframes import DataFormatError, read_captions, read_corpus
from fundus_vlp.data.datasets import CaptionDataset
from fundus_vlp.data.knowledge import KnowledgeBase

BOM = "\ufeff"


@pytest.mark.parametrize("bom", [False, True])
def test_caption_reader_keeps_chinese_with_and_without_bom(tmp_path, bom):
    text = "image,caption,caption_zh\na.png,Macular hole.,右眼黄斑裂孔，周围灰色晕环。\nb.png,,仅有中文\n"
    path = tmp_path / "pairs.csv"
    path.write_text((BOM if bom else "") + text, encoding="utf-8")
    frame = read_captions(path)
    assert list(frame.columns[:3]) == ["image", "caption", "caption_zh"]  # the BOM is not part of "image"
    assert frame["caption_zh"].tolist() == ["右眼黄斑裂孔，周围灰色晕环。", "仅有中文"]
    assert frame["caption"].tolist() == ["Macular hole.", ""]  # a Chinese-only row is kept


@pytest.mark.parametrize("header,zh", [("Image_ID,en_caption,zh_caption", "zh_caption"),
                                       ("image,caption,Cn_Report", "Cn_Report")])
def test_mm_retinal_and_ffa_ir_chinese_columns(tmp_path, header, zh):
    path = tmp_path / "x.csv"
    path.write_text(f"{header}\nimg1,Drusen.,玻璃膜疣\n", encoding="utf-8")
    frame = read_captions(path)
    assert frame.loc[0, "image"] == "img1" and frame.loc[0, "caption_zh"] == "玻璃膜疣"


def test_row_without_any_language_is_an_error_naming_the_row(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("image,caption,caption_zh\na.png,,\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"x\.csv, row 1\b.*empty caption"):
        read_captions(path)


def test_corpus_bom_is_not_text(tmp_path):
    (tmp_path / "a.txt").write_text(BOM + "青光眼是一种视神经病变。\n\nGlaucoma.\n", encoding="utf-8")
    assert read_corpus([tmp_path]) == ["青光眼是一种视神经病变。", "Glaucoma."]


def _pairs(tmp_path, en, zh):
    for i in range(len(en)):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    return pd.DataFrame({"image": [f"{i}.png" for i in range(len(en))], "caption": en, "caption_zh": zh,
                         "source": "pairs.csv", "row": range(1, len(en) + 1)})


def _dataset(tmp_path, language, en=("glaucoma", "cataract", ""), zh=("青光眼", "", "白内障")):
    frame = _pairs(tmp_path, list(en), list(zh))
    return CaptionDataset(frame, tmp_path, lambda img, rng: torch.zeros(1), language=language)


def test_caption_language_en_and_zh_fall_back_per_row(tmp_path):
    en = _dataset(tmp_path, "en")
    assert [en.get(i, 0)["text"] for i in range(3)] == ["glaucoma", "cataract", "白内障"]
    zh = _dataset(tmp_path, "zh")
    assert [zh.get(i, 0)["text"] for i in range(3)] == ["青光眼", "cataract", "白内障"]
    assert en.language_counts() == {"both": 1, "en_only": 1, "zh_only": 1, "fallback": 1}
    assert _dataset(tmp_path, "both").language_counts()["fallback"] == 2


def test_caption_language_both_draws_each_language_reproducibly(tmp_path):
    ds = _dataset(tmp_path, "both")
    texts = [ds.get(0, seed)["text"] for seed in range(40)]
    assert set(texts) == {"glaucoma", "青光眼"}
    assert 10 <= texts.count("青光眼") <= 30
    assert texts == [ds.get(0, seed)["text"] for seed in range(40)]  # seeded: a resumed run draws the same
    assert {ds.get(1, s)["text"] for s in range(10)} == {"cataract"}  # one language only: always that one


def test_caption_language_is_validated():
    with pytest.raises(ValueError, match="caption_language"):
        DataCfg(caption_language="fr")


def test_normalise_text_keeps_chinese():
    assert normalise_text("Right eye: 黄斑裂孔（全层）!") == "right eye 黄斑裂孔 全层"


def test_chinese_names_of_banned_conditions_are_banned():
    ban = BanList.from_cfg(BanCfg(terms=["cataract", "myopia"]), "fundus_en")
    assert ban.match("右眼彩色眼底照相示眼底朦胧，考虑白内障。")[0] == "cataract"
    assert ban.match("晶状体混浊明显")[0] == "cataract"  # a Chinese synonym, no word boundaries needed
    assert ban.match("豹纹状眼底，符合高度近视")[0] == "myopia"  # the English synonym reaches the Chinese entry
    assert ban.match("视盘倾斜，青光眼") is None
    assert BanList.from_cfg(BanCfg(terms=["cataract"], extra_knowledge=[]), "fundus_en").match("白内障") is None


def test_chinese_caption_column_is_filtered_too():
    frame = pd.DataFrame({"image": ["a", "b"], "caption": ["Fundus photograph.", "Fundus photograph."],
                          "caption_zh": ["正常眼底", "黄斑裂孔"], "source": "e.csv", "row": [1, 2]})
    kept, report = BanList.from_cfg(BanCfg(terms=["macular hole"]), "fundus_en").filter_captions(frame)
    assert kept["image"].tolist() == ["a"] and report.removed[0]["row"] == 2


def test_fundus_zh_covers_fundus_en():
    en, zh = KnowledgeBase.load("fundus_en"), KnowledgeBase.load("fundus_zh")
    assert set(zh.keys()) == set(en.keys())
    cjk = lambda s: any("\u4e00" <= ch <= "\u9fff" for ch in s)  # noqa: E731
    for key in zh.keys():
        assert cjk(zh.name(key)) and all(cjk(d) for d in zh.descriptions(key)), key
    assert zh.display_name("Macular hole") == "黄斑裂孔" and zh.canonical("黄斑裂孔") == "macular hole"
    assert en.display_name("Macular hole") == "Macular hole"  # English entries have no separate name


def test_chinese_zero_shot_prompts():
    from fundus_vlp.eval.config import ZeroShotCfg
    from fundus_vlp.inference.zero_shot import class_prompts, display_names

    cfg = ZeroShotCfg(language="zh")
    assert cfg.knowledge == "fundus_zh" and cfg.templates == ["一张[CLS]的眼底照片"]
    assert ZeroShotCfg(language="zh", templates=["[CLS]"]).templates == ["[CLS]"]  # explicit values kept
    kb = KnowledgeBase.load(cfg.knowledge)
    names = display_names(kb, ["normal", "cataract"])
    assert names == ["正常眼底", "白内障"]
    prompts = class_prompts(names[1], cfg.templates, kb)
    assert prompts[0] == "一张白内障的眼底照片" and len(prompts) == 1 + len(kb.descriptions("cataract"))


def test_demo_world_chinese_caption_describes_the_same_case():
    from fundus_vlp.demo_world.scene import sample_case
    from fundus_vlp.demo_world.text_zh import make_caption_zh, make_corpus_zh

    for cond, name in [("macular hole", "裂孔"), ("retinitis pigmentosa", "色素"), ("cataract", "")]:
        case = sample_case(cond, "CFP", np.random.default_rng(3))
        text = make_caption_zh(case, np.random.default_rng(0))
        assert name in text and text.endswith("。") and "{" not in text
    corpus = make_corpus_zh(12, np.random.default_rng(0))
    assert sum(len(v) for v in corpus.values()) == 12 and len(corpus) == 6
    assert all("{" not in p and any("\u4e00" <= ch <= "\u9fff" for ch in p) for v in corpus.values() for p in v)


def test_english_only_demo_world_keeps_its_cache_key():
    from fundus_vlp.demo_world.presets import demo_world_cfg

    en, zh = demo_world_cfg("tiny", 0), demo_world_cfg("tiny", 0, chinese=True)
    assert "chinese" not in en.to_dict() and zh.to_dict()["chinese"] is True
    assert en.cache_key() != zh.cache_key()
