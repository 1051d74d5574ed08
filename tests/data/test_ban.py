"""The unseen-class ban list (docs/reference.md#unseen-class-ban-list): official exact filter
vs normalised substring + synonyms."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fundus_vlp.data.ban import OFFICIAL_BANNED, BanList, BanReport, normalise_text
from fundus_vlp.data.dataframes import read_captions, read_categorical

PRETRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "keepfit_dataframes" / "pretraining"
needs_data = pytest.mark.skipif(not PRETRAIN.is_dir(), reason="real KeepFIT dataframes not available")


def _frame(categories):
    return pd.DataFrame({"image": [f"x/{i}.png" for i in range(len(categories))], "atributes": [[]] * len(categories),
                         "categories": categories, "source": "toy.csv", "row": range(1, len(categories) + 1)})


def test_normalisation_and_substring_matching():
    ban = BanList(["macular hole", "myop"])
    assert normalise_text("Lamellar Macular-Hole.") == "lamellar macular hole"
    assert ban.match("Lamellar macular-hole")[0] == "macular hole"
    assert ban.match("high MYOPIA")[0] == "myop"
    assert ban.match("hypermyopia")[0] == "myop"  # OCR run-ons are caught
    assert ban.match("glaucoma") is None
    word = BanList(["retinitis"], word_start=True)
    assert word.match("chorioretinitis") is None and word.match("CMV retinitis") is not None
    assert BanList(["retinitis"]).match("chorioretinitis") is not None


def test_exact_mode_is_the_official_rule():
    ban = BanList(["cataract"], exact=True)
    assert ban.match("cataract") == ("cataract", "cataract")
    assert ban.match("no cataract") is None and ban.match("Cataract") is None


def test_synonyms_from_the_knowledge_base():
    class KB:  # KnowledgeBase.terms: an entry's name followed by its synonyms
        def terms(self, label):
            return [label] + {"pathologic myopia": ["myopic maculopathy"],
                              "retinitis pigmentosa": ["rod-cone dystrophy"]}.get(label, [])

    ban = BanList(["pathologic myopia", "retinitis pigmentosa"], knowledge=KB())
    assert ban.match("a rod cone dystrophy with bone spicules")[0] == "retinitis pigmentosa"
    assert ban.match("myopic maculopathy grade 2")[0] == "pathologic myopia"
    assert BanList(["retinitis pigmentosa"], knowledge=KB(), use_synonyms=False).match("rod-cone dystrophy") is None


def test_real_knowledge_base_synonyms():
    from fundus_vlp.data.knowledge import KnowledgeBase

    kb = KnowledgeBase.load("fundus_en")
    ban = BanList(["pathologic myopia"], knowledge=kb)
    for syn in kb.synonyms("pathologic myopia"):
        assert ban.match(f"fundus with {syn}") is not None
        # banning any one name of a condition bans the condition's other names too
        assert BanList([syn], knowledge=kb).match("fundus with pathologic myopia") is not None


def test_filters_and_report(tmp_path):
    ban = BanList(OFFICIAL_BANNED)
    kept, report = ban.filter_categorical(_frame([["normal"], ["pathologic myopia"], ["no cataract", "glaucoma"],
                                                  ["lamellar macular hole"]]))
    assert kept["categories"].tolist() == [["normal"]]
    assert (report.n_total, report.n_removed, report.n_kept) == (4, 3, 1)
    assert [r["row"] for r in report.removed] == [2, 3, 4] and report.removed[0]["source"] == "toy.csv"
    captions = pd.DataFrame({"image": ["a", "b"], "caption": ["Drusen at the macula.", "A myopic fundus with a "
                                                                                         "tilted disc."],
                             "source": "elite.csv", "row": [1, 2]})
    kept_c, rep_c = ban.filter_captions(captions)
    assert kept_c["image"].tolist() == ["a"] and rep_c.removed[0]["excerpt"].startswith("A myopic")
    paragraphs, rep_p = ban.filter_corpus(["Glaucoma cups the disc.", "Retinitis pigmentosa starts peripherally."])
    assert paragraphs == ["Glaucoma cups the disc."] and rep_p.removed[0]["row"] == 2
    merged = BanReport.merge([report, rep_c, rep_p])
    assert merged.n_removed == 5 and merged.n_total == 8
    out = json.loads(report.to_json(tmp_path / "ban.json").read_text())
    assert out["n_kept"] == 1 and out["by_term"] and "removed 3 of 4" in report.summary()


@pytest.fixture(scope="module")
def public():
    files = [f for f in sorted(PRETRAIN.glob("*.csv")) if not f.name.startswith("39_MM")]
    return pd.concat([read_categorical(f) for f in files], ignore_index=True)


@needs_data
def test_official_exact_filter_on_the_real_categorical_data(public):
    assert len(public) == 91_579  # the 29 categorical CSVs
    kept, report = BanList(OFFICIAL_BANNED, exact=True).filter_categorical(public)
    assert len(kept) == 90_020 and report.n_removed == 1_559


@needs_data
def test_substring_filter_removes_the_leaks(public):
    exact_kept, _ = BanList(OFFICIAL_BANNED, exact=True).filter_categorical(public)
    kept, report = BanList(OFFICIAL_BANNED).filter_categorical(public)
    assert len(kept) < len(exact_kept)
    left = {c for cats in kept["categories"] for c in cats}
    exact_left = {c for cats in exact_kept["categories"] for c in cats}
    for leak in ("pathologic myopia", "lamellar macular hole", "high myopia", "myopic degeneration"):
        assert leak in exact_left and leak not in left
    assert not any("myop" in c or "macular hole" in c or "cataract" in c for c in left)
    print(f"\n{report.summary()}  (exact keeps {len(exact_kept)})")


@needs_data
def test_elite_captions_mentions(capsys):
    captions = read_captions(PRETRAIN / "39_MM_Retinal_dataset.csv")
    kept, report = BanList(OFFICIAL_BANNED).filter_captions(captions)
    # measured on the shipped file (myop* / cataract / macular hole / retinitis pigmentosa)
    assert report.mentions["myop"] == 66
    assert report.mentions["cataract"] == 11
    assert report.mentions["macular hole"] == 32
    assert report.mentions["retinitis pigmentosa"] == 37
    assert len(kept) == len(captions) - report.n_removed
    assert not kept["caption"].str.lower().str.contains("myop|cataract|macular hole|retinitis pigmentosa").any()
