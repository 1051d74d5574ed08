"""Tests for the domain-knowledge dictionary (fundus_vlp.data.knowledge)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from fundus_vlp.demo_world import CONDITIONS, FINDINGS, UNSEEN_CONDITIONS
from fundus_vlp.data.knowledge import KnowledgeBase, normalize_label

REAL = Path("/work/shared/data/keepfit_dataframes")


@pytest.mark.parametrize("raw, expected", [
    ("Glaucoma", "glaucoma"),
    ("  age-related   macular_degeneration. ", "age related macular degeneration"),
    ("Proliferative Diabetic Retinopathy.", "proliferative diabetic retinopathy"),
    ("drusen;", "drusen"),
    ("srnv-md.", "srnv md"),
    ("central serous retinopathy (csr)", "central serous retinopathy (csr)"),
    ("", ""),
])
def test_normalize_label(raw, expected):
    assert normalize_label(raw) == expected


def test_variant_spellings_resolve_to_one_entry(kb):
    base = kb.descriptions("age related macular degeneration")
    assert base
    for variant in ("age-related macular degeneration", "Age-Related Macular Degeneration.", "AMD",
                    "age_related_macular_degeneration"):
        assert kb.descriptions(variant) == base, variant
    assert kb.canonical("central serous retinopathy (csr)") == "central serous retinopathy"
    assert kb.canonical("proliferative diabetic retinopathy (pdr)") == "proliferative diabetic retinopathy"
    assert kb.canonical("retinal hemorrhage") == kb.canonical("haemorrhages") == "haemorrhages"
    assert kb.canonical("drusens") == "drusen"
    assert kb.canonical("macular oedema") == "macular edema"
    assert "age-related macular degeneration" in kb
    assert "no such condition at all" not in kb
    assert kb.descriptions("no such condition at all") == [] and kb.synonyms("no such condition") == []
    assert 42 not in kb


def test_returned_lists_are_copies(kb):
    d = kb.descriptions("glaucoma")
    d.append("MUTATED")
    d.clear()
    s = kb.synonyms("glaucoma")
    s.append("MUTATED")
    assert kb.descriptions("glaucoma") and "MUTATED" not in kb.descriptions("glaucoma")
    assert "MUTATED" not in kb.synonyms("glaucoma")
    defs = kb.as_definitions()
    defs["glaucoma"].append("MUTATED")
    assert "MUTATED" not in kb.descriptions("glaucoma")


def test_every_demo_condition_and_finding_is_described(kb):
    for name, cond in CONDITIONS.items():
        assert kb.canonical(name) == name, name
        assert len(kb.descriptions(name)) >= 1
        # The names the demo captions use must be known synonyms, so ban-lists built from the KB catch them.
        assert set(cond.synonyms) <= set(kb.synonyms(name)) | {name}, name
    for f in FINDINGS.values():
        assert kb.descriptions(f.label), f.label


def test_entries_are_well_formed(kb):
    assert len(kb) >= 100
    for key in kb.keys():
        assert key == normalize_label(key)
        desc = kb.descriptions(key)
        assert 1 <= len(desc) <= 5, key
        assert all(d and d == d.strip() and len(d.split()) <= 24 for d in desc), key


def test_unseen_terms_are_distinctive(kb):
    # A held-out condition's names must not be a substring of any *seen* demo condition's names, or a
    # substring ban-list would also remove seen data.
    seen_terms = [t for n, c in CONDITIONS.items() if c.seen for t in kb.terms(n)]
    for name in UNSEEN_CONDITIONS:
        for term in kb.terms(name):
            assert not any(term in s for s in seen_terms), (name, term)


def test_load_from_path_and_errors(tmp_path):
    p = tmp_path / "mini.yaml"
    p.write_text("Foo-Bar:\n  descriptions: [a foo]\n  synonyms: [baz]\n", encoding="utf-8")
    kb = KnowledgeBase.load(p)
    assert kb.keys() == ["foo bar"] and kb.descriptions("BAZ") == ["a foo"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("foo:\n  descriptions: []\n", encoding="utf-8")
    with pytest.raises(ValueError):
        KnowledgeBase.load(bad)
    with pytest.raises(FileNotFoundError):
        KnowledgeBase.load("no_such_packaged_kb")


def _is_free_text(s: str) -> bool:
    # DEN / STARE / ODIR put sentences and patient notes inside `categories`.
    return bool(re.search(r"\d|,", s)) or len(s.split()) > 6


def test_coverage_of_real_pretraining_dataframes(kb):
    import pandas as pd

    files = sorted((REAL / "pretraining").glob("*.csv"))
    if not files:
        pytest.skip(f"real dataframes not available under {REAL}")
    rows = covered = 0
    for f in files:
        df = pd.read_csv(f)
        if "categories" not in df:
            continue  # the MM-Retinal caption file
        for cats in df["categories"]:
            labels = [c for c in ast.literal_eval(cats) if c.strip() and not _is_free_text(c)]
            if labels:
                rows += 1
                covered += any(c in kb for c in labels)
    assert rows > 50_000
    assert covered / rows >= 0.90, f"coverage {covered / rows:.3f}"


def test_transfer_class_names_are_known(kb):
    import pandas as pd

    files = sorted((REAL / "transferability").glob("*.csv"))
    if not files:
        pytest.skip(f"real dataframes not available under {REAL}")
    for f in files:
        if f.name.startswith("TAOP"):
            continue  # opaque class codes '0c'..'4c' with no documented meaning
        classes = {ast.literal_eval(c)[0] for c in pd.read_csv(f)["categories"]}
        missing = [c for c in classes if c not in kb]
        assert not missing, (f.name, missing)
