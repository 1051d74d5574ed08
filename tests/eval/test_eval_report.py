"""``fundus-vlp eval report``: caption metrics by hand, the case memory, decoder/tower set-up, a tiny FFA-IR run
from the CLI and the absence of test-set selection."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundus_vlp.cli.main import main
from fundus_vlp.eval.captioning import caption_metrics, simple_tokenize
from fundus_vlp.eval.config import EvalCfg, ReportCfg
from fundus_vlp.eval.report_generation import TowerTokens, build_decoder_and_tower, case_memory, even_subset
from fundus_vlp.eval.runner import evaluate

@pytest.fixture(autouse=True)
def no_java(monkeypatch):
    """The runs below score with the Python tokeniser and no METEOR: the Java start-up would dominate them
    (METEOR through Java is tested in test_eval_retrieval)."""
    monkeypatch.setattr("fundus_vlp.eval.captioning.java_available", lambda: False)


REPORTS = ["normal angiogram with no leakage", "bright leakage at the macula consistent with edema",
           "dark spots of blocked fluorescence from haemorrhages"]


def test_bleu_and_rouge_by_hand_and_against_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu

    ref, cand = "The cat is on the mat.", "the cat sat on the mat"
    out = caption_metrics({"x": [ref]}, {"x": cand}, use_java=False)
    # unigrams: the x2, cat, on, mat match 5 of 6; bigrams: "the cat", "on the", "the mat" match 3 of 5;
    # equal lengths, so no brevity penalty. ROUGE-L: LCS "the cat on the mat" = 5, P = R = 5/6 -> F = 5/6.
    assert out["bleu_1"] == pytest.approx(5 / 6, abs=1e-6)
    assert out["bleu_2"] == pytest.approx(np.sqrt(5 / 6 * 3 / 5), abs=1e-6)
    assert out["rouge_l"] == pytest.approx(5 / 6, abs=1e-6)
    # a fixed pair through pycocoevalcap directly
    ref2 = "Leakage of dye at the macula, with blocked fluorescence temporal to the fovea."
    cand2 = "leakage at the macula with blocked fluorescence near the fovea"
    bleu, _ = Bleu(4).compute_score({"0": [simple_tokenize(ref2)]}, {"0": [simple_tokenize(cand2)]}, verbose=0)
    got = caption_metrics({"0": [ref2]}, {"0": cand2}, use_java=False)
    assert [got[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    assert "meteor" not in caption_metrics({"0": [ref2]}, {"0": cand2}, use_java=False, meteor=False)


def test_java_tokenizer_chatter_is_held_back_and_shown_when_it_fails(capfd, caplog, monkeypatch):
    import os

    from fundus_vlp.eval import captioning

    if captioning.java_available():  # the real tokenizer reports its speed on fd 2
        captioning.caption_metrics({"a": ["the cat sat"]}, {"a": "the cat"}, use_java=True, meteor=False)
        assert "PTBTokenizer" not in capfd.readouterr().err
    PTB = captioning._scorer("tokenizer.ptbtokenizer", "PTBTokenizer")

    def failing(self, captions):
        os.write(2, b"Exception in thread main: no such class\n")
        raise RuntimeError("tokenizer died")

    monkeypatch.setattr(PTB, "tokenize", failing)
    with pytest.raises(RuntimeError, match="tokenizer died"):
        captioning._tokenize({"a": ["x"]}, use_java=True, language="en")
    assert "no such class" in caplog.text
    os.write(2, b"after\n")  # descriptor 2 is back where it was
    assert "after" in capfd.readouterr().err


def test_paired_caption_bootstrap_separates_a_real_difference_from_noise():
    from fundus_vlp.eval.captioning import paired_caption_bootstrap

    refs = {str(i): [r] for i, r in enumerate(REPORTS * 4)}
    same = {i: r[0] for i, r in refs.items()}
    tie = paired_caption_bootstrap(refs, same, same, "cider", n_boot=50, use_java=False)
    assert (tie.diff, tie.lo, tie.hi, tie.p) == (0.0, 0.0, 0.0, 1.0)
    generic = {i: REPORTS[0] for i in refs}  # one report for every case
    better = paired_caption_bootstrap(refs, same, generic, "bleu_4", n_boot=200, use_java=False)
    full = caption_metrics(refs, same, use_java=False)["bleu_4"] - caption_metrics(refs, generic, use_java=False)["bleu_4"]
    assert better.diff == pytest.approx(full, abs=1e-12) and better.lo > 0 and better.p < 0.05
    # two decodings that differ on one case of twelve: an interval that holds zero
    one_off = {**same, "0": REPORTS[1]}
    noise = paired_caption_bootstrap(refs, same, one_off, "cider", n_boot=200, use_java=False)
    assert noise.diff > 0 and noise.lo <= 0 <= noise.hi
    with pytest.raises(ValueError, match="same, non-empty ids"):
        paired_caption_bootstrap(refs, same, {"0": "x"}, use_java=False)


def test_even_subset_spans_the_sequence():
    assert even_subset(5, 8) == [0, 1, 2, 3, 4]
    idx = even_subset(20, 8)
    assert len(idx) == 8 and idx[0] == 0 and idx[-1] == 19 and idx == sorted(set(idx))


def test_case_memory_masks_empty_image_slots(tiny_overrides):
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides, **{"decoder.enabled": True}).eval()
    bank = torch.randn(3, 4, model.visual.width)  # 3 images x 4 tokens
    tokens = lambda idx: bank[idx]  # noqa: E731
    ids = model.tokenizer(["leakage at the macula"])
    alone, mask = case_memory(tokens, torch.tensor([[2]]))
    assert mask is None and alone.shape == (1, 4, model.visual.width)
    padded, mask = case_memory(tokens, torch.tensor([[2, -1], [0, 1]]))
    assert padded.shape == (2, 8, model.visual.width) and mask[0].tolist() == [1] * 4 + [0] * 4
    with torch.no_grad():
        a = model.decoder(alone, ids)
        b = model.decoder(padded[:1], ids, mask[:1])
        c = model.decoder(padded[:1], ids)  # without the mask the zero slots are attended to
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, c, atol=1e-3)


def test_decoder_and_tower_choices(tiny_overrides, tmp_path):
    from fundus_vlp.factory import create_model

    torch.manual_seed(123)  # not the report seed: the random tower must differ from the model's
    plain = create_model("tiny", **tiny_overrides)  # a CLIP-like model: no decoder
    tower, decoder, info = build_decoder_and_tower(plain, ReportCfg(), seed=0)
    assert info == {"tower": "model", "decoder": "fresh"} and plain.decoder is None
    assert torch.equal(next(iter(tower.state_dict().values())), next(iter(plain.visual.state_dict().values())))
    assert decoder.image_proj[0].in_features == plain.visual.width
    rnd, _, info = build_decoder_and_tower(plain, ReportCfg(tower_init="random"), seed=0)
    assert info["tower"] == "random"
    diff = [not torch.equal(a, b) for a, b in zip(rnd.trunk.parameters(), plain.visual.trunk.parameters())
            if a.ndim > 1]  # (BatchNorm starts at ones and zeros in both)
    assert all(diff)
    with pytest.raises(ValueError, match="imagenet_checkpoint"):
        build_decoder_and_tower(plain, ReportCfg(tower_init="imagenet"), seed=0)
    with pytest.raises(ValueError, match="has no caption decoder"):
        build_decoder_and_tower(plain, ReportCfg(decoder_init="pretrained"), seed=0)
    v2 = create_model("tiny", **tiny_overrides, **{"decoder.enabled": True})
    _, dec, info = build_decoder_and_tower(v2, ReportCfg(), seed=0)
    assert info["decoder"] == "pretrained" and dec is not v2.decoder
    assert all(torch.equal(a, b) for a, b in zip(dec.parameters(), v2.decoder.parameters()))
    # a local timm checkpoint is the offline ImageNet baseline
    ckpt = tmp_path / "trunk.pth"
    torch.save(rnd.trunk.state_dict(), ckpt)
    inet, _, info = build_decoder_and_tower(plain, ReportCfg(tower_init="imagenet", imagenet_checkpoint=str(ckpt)), 0)
    assert all(torch.equal(a, b) for a, b in zip(inet.trunk.parameters(), rnd.trunk.parameters()))


@pytest.mark.parametrize("finetune", ["frozen", "last_block", "full"])
def test_tower_tokens_per_finetune_mode(tiny_overrides, tmp_path, finetune):
    """Every mode gives the tower's own tokens; only the parts that train get gradients."""
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(paths[-1])
    tokens = TowerTokens(model.visual, paths, model.cfg.preprocess, torch.device("cpu"), finetune, batch_size=2)
    tokens.precompute()
    model.visual.eval()
    idx = torch.tensor([2, 0])
    with torch.no_grad():
        expected = model.visual.forward_with_tokens(torch.stack([tokens.files[int(i)] for i in idx]))[1]
    got = tokens(idx)
    assert torch.allclose(got, expected, atol=1e-5)
    trained = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    if finetune == "frozen":
        assert not trained and not got.requires_grad
    else:
        got.sum().backward()
        stage = model.visual.trunk.get_submodule("layer4") if finetune == "last_block" else model.visual.trunk
        grads = {n for n, p in model.visual.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert grads and all(n.startswith("trunk.layer4.") for n in grads) == (finetune == "last_block")
        assert all(p.grad is not None for p in stage.parameters())


def write_cases(root: Path, n_cases: int = 18) -> Path:
    """An FFA-IR JSON of multi-image cases whose report follows the images' brightness pattern."""
    rng = np.random.default_rng(0)
    data = {"train": {}, "val": {}, "test": {}}
    for i in range(n_cases):
        k = i % 3
        split = "val" if i % 6 == 4 else "test" if i % 6 == 5 else "train"
        rels = []
        for j in range(1 + i % 3):
            rel = f"case{i}/frame{j}.png"
            (root / f"case{i}").mkdir(parents=True, exist_ok=True)
            arr = np.clip(rng.normal(50 + 80 * k, 10, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / rel)
            rels.append(rel)
        data[split][f"case{i}"] = {"Image_path": rels, "En_Report": REPORTS[k]}
    path = root / "ffair_annotation.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def tiny_reports(tmp_path_factory, tiny_overrides) -> dict:
    from fundus_vlp.factory import create_model

    root = tmp_path_factory.mktemp("ffair")
    torch.manual_seed(0)
    model_dir = root / "model"
    create_model("tiny", **tiny_overrides, **{"decoder.enabled": True}).save_pretrained(model_dir)
    return {"root": root, "annotations": write_cases(root), "model": model_dir}


def test_cli_report_on_tiny_ffair_json(tiny_reports, tmp_path):
    out = tmp_path / "run"
    rc = main(["eval", "report", "--model", str(tiny_reports["model"]), "--annotations",
               str(tiny_reports["annotations"]), "--image-root", str(tiny_reports["root"]), "--output-dir", str(out),
               "progress=false", "report.epochs=3", "report.batch_size=4", "report.max_length=16",
               "report.num_beams=2", "report.max_images=2"])
    assert rc == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["mode"] == "report" and row["method"] == "case: model tower (frozen), pretrained decoder"
    assert (row["n_train"], row["n_val"], row["n_test"]) == (12, 3, 3)
    assert {"bleu_1", "bleu_4", "rouge_l", "cider"} <= set(row["metrics"])
    assert row["details"]["n_images"] == 6 * 1 + 6 * 2 + 6 * 2  # cases of 3 frames keep max_images=2
    assert len(row["details"]["history"]) == 4  # before fine-tuning + 3 epochs
    md = (out / "results.md").read_text()
    assert "| id | reference | generated |" in md and any(r in md for r in REPORTS)
    preds = json.loads((out / "report_predictions.json").read_text())
    assert [p["id"] for p in preds] == ["case5", "case11", "case17"]
    assert row["details"]["distinct_reports"] == len({p["generated"] for p in preds})
    assert f"{row['details']['distinct_reports']} distinct generated reports for 3 test samples" in md
    decodings = row["details"]["decodings"]
    below = [k for k in decodings["beam"]["metrics"]
             if (decodings["beam"]["metrics"][k] or 0) < (decodings["greedy"]["metrics"][k] or 0)]
    assert row["details"]["beam_below_greedy"] == below
    assert (f"Beam search scores below greedy decoding on {', '.join(below)}." in md) == bool(below)
    versus = row["details"]["beam_minus_greedy"]
    assert versus["metric"] == "cider" and versus["lo"] <= versus["diff"] <= versus["hi"]
    assert versus["diff"] == pytest.approx(decodings["beam"]["metrics"]["cider"] - decodings["greedy"]["metrics"]["cider"])
    assert f"Beam minus greedy cider: {versus['diff']:+.3f}, 95 % interval" in md


def test_beam_below_greedy_names_the_metrics_where_beam_search_loses():
    from fundus_vlp.eval.modes.report import beam_below_greedy

    scores = {"beam": {"bleu_4": 0.2, "cider": 0.5, "meteor": None, "n": 3},
              "greedy": {"bleu_4": 0.25, "cider": 0.3, "meteor": None, "n": 3}}
    assert beam_below_greedy(scores) == ["bleu_4"]
    assert beam_below_greedy({"greedy": scores["greedy"]}) == []


def _run(tiny, out, annotations, **report):
    cfg = EvalCfg(output_dir=str(out), progress=False, print_table=False, image_root=str(tiny["root"]),
                  report=ReportCfg(annotations=str(annotations), epochs=4, batch_size=4, max_length=16,
                                   num_beams=2, **report))
    return evaluate(tiny["model"], None, ["report"], cfg)["rows"][0]


@pytest.mark.parametrize("unit, metric", [("case", "cider"), ("image", "loss")])
def test_no_test_set_selection(tiny_reports, tmp_path, unit, metric):
    clean = _run(tiny_reports, tmp_path / "clean", tiny_reports["annotations"], unit=unit, select_metric=metric)
    data = json.loads(Path(tiny_reports["annotations"]).read_text())
    for entry in data["test"].values():
        entry["En_Report"] = "corrupted words that no model could ever produce"
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(json.dumps(data))
    bad = _run(tiny_reports, tmp_path / "bad", corrupt, unit=unit, select_metric=metric)
    assert bad["hparams"][0]["best_epoch"] == clean["hparams"][0]["best_epoch"]
    assert bad["details"]["history"] == clean["details"]["history"]  # every validation number is unchanged
    preds = {run: json.loads((tmp_path / run / "report_predictions.json").read_text()) for run in ("clean", "bad")}
    # the same weights were chosen and decode the same test reports ...
    assert [p["generated"] for p in preds["bad"]] == [p["generated"] for p in preds["clean"]]
    refs = [p["reference"] for p in preds["bad"]]
    assert set(refs) == {"corrupted words that no model could ever produce"}  # ... scored against the new text
    if unit == "image":
        assert clean["n_test"] == sum(len(e["Image_path"]) for e in data["test"].values())


def test_report_needs_annotations_and_splits(tiny_reports, tmp_path):
    with pytest.raises(ValueError, match="report.annotations"):
        evaluate(tiny_reports["model"], None, ["report"], EvalCfg(output_dir=str(tmp_path / "a"), progress=False))
    data = json.loads(Path(tiny_reports["annotations"]).read_text())
    data["val"] = {}
    path = tmp_path / "noval.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no val cases"):
        _run(tiny_reports, tmp_path / "b", path)
    with pytest.raises(ValueError, match="need an experiment"):
        evaluate(tiny_reports["model"], None, ["zero-shot"], EvalCfg(output_dir=str(tmp_path / "c")))
    with pytest.raises(ValueError, match="report.unit"):
        replace(ReportCfg(), unit="patient")


# ------------------------------------------------------------------------------------------ Chinese reports

REPORTS_ZH = ["造影未见渗漏，血管充盈正常。", "黄斑区晚期荧光渗漏，符合黄斑水肿。", "出血遮蔽荧光形成的暗斑。"]


def test_chinese_reports_are_scored_per_character():
    ref, cand = "视网膜出血。", "视网膜水肿"
    out = caption_metrics({"x": [ref]}, {"x": cand}, use_java=False)
    # per character: 视 网 膜 match 3 of 5 unigrams, "视网" "网膜" 2 of 4 bigrams; ROUGE-L LCS 3 -> F = 3/5
    assert out["language"] == "zh" and out["tokenizer"] == "per character"
    assert out["bleu_1"] == pytest.approx(3 / 5, abs=1e-6)
    assert out["bleu_2"] == pytest.approx(np.sqrt(3 / 5 * 2 / 4), abs=1e-6)
    assert out["rouge_l"] == pytest.approx(3 / 5, abs=1e-6)
    assert out["meteor"] is None and "English-only" in out["notes"]
    assert simple_tokenize("OCT示黄斑裂孔，FTMH 2级。", "zh") == "oct 示 黄 斑 裂 孔 ftmh 2 级"
    with pytest.raises(ValueError, match="no en word after tokenisation"):  # English words of a Chinese report
        caption_metrics({"x": [ref]}, {"x": cand}, use_java=False, language="en")


@pytest.fixture(scope="module")
def zh_model(tmp_path_factory, tiny_tokenizer_dir, tiny_overrides):
    """A tiny model whose vocabulary holds the characters of the Chinese reports (one token each)."""
    from transformers import BertTokenizerFast

    from fundus_vlp.factory import create_model

    d = tmp_path_factory.mktemp("zh_tokenizer")
    chars = sorted({ch for r in REPORTS_ZH for ch in r})
    vocab = (tiny_tokenizer_dir / "vocab.txt").read_text().split("\n")
    (d / "vocab.txt").write_text("\n".join(dict.fromkeys([v for v in vocab if v] + chars)) + "\n")
    BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(str(d))
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("zh_model")
    create_model("tiny", **{**tiny_overrides, "text.hf_tokenizer_name": str(d)}, **{"decoder.enabled": True}
                 ).save_pretrained(out)
    return out


def _bilingual(tiny_reports, tmp_path) -> Path:
    """The FFA-IR layout: each case has ``En_Report`` and ``Cn_Report``."""
    data = json.loads(Path(tiny_reports["annotations"]).read_text())
    for split in data.values():
        for entry in split.values():
            entry["Cn_Report"] = REPORTS_ZH[REPORTS.index(entry["En_Report"])]
    path = tmp_path / "ffair_bilingual.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def test_cli_report_on_chinese_reports(tiny_reports, zh_model, tmp_path):
    annotations = _bilingual(tiny_reports, tmp_path)
    out = tmp_path / "run"
    rc = main(["eval", "report", "--model", str(zh_model), "--annotations", str(annotations), "--image-root",
               str(tiny_reports["root"]), "--output-dir", str(out), "progress=false", "report.report_key=Cn_Report",
               "report.epochs=2", "report.batch_size=6", "report.max_length=24", "report.num_beams=2"])
    assert rc == 0
    result = json.loads((out / "results.json").read_text())
    row = result["rows"][0]
    assert row["details"]["language"] == "zh" and row["details"]["tokenizer"] == "per character"
    assert row["metrics"]["bleu_1"] > 0 and row["metrics"]["cider"] >= 0
    assert not any("[UNK]" in n for n in result["notes"])  # every character has its token
    preds = json.loads((out / "report_predictions.json").read_text())
    assert {p["reference"] for p in preds} <= set(REPORTS_ZH)


def test_a_tokenizer_without_the_report_language_warns_with_the_share(tiny_reports, zh_model, tmp_path):
    from fundus_vlp.models.tokenizer import Tokenizer

    assert Tokenizer.from_pretrained(str(tiny_reports["model"])).unknown_share(REPORTS_ZH) == 1.0
    assert Tokenizer.from_pretrained(str(zh_model)).unknown_share(REPORTS_ZH) == 0.0
    row_notes = evaluate(tiny_reports["model"], None, ["report"], EvalCfg(
        output_dir=str(tmp_path / "run"), progress=False, print_table=False, image_root=str(tiny_reports["root"]),
        report=ReportCfg(annotations=str(_bilingual(tiny_reports, tmp_path)), report_key="Cn_Report", epochs=0,
                         batch_size=6, max_length=16, num_beams=1)))["notes"]
    assert any(n.startswith("100% of the Cn_Report tokens of the training reports are [UNK]") for n in row_notes)


def test_a_fresh_decoder_learns_the_report_characters_its_tokenizer_lacks(tiny_reports, tmp_path):
    """Chinese reports, an English-only tokenizer: the fresh decoder's vocabulary gains every character, so its
    training targets hold no [UNK] and what it writes keeps them (decoding drops [UNK])."""
    result = evaluate(tiny_reports["model"], None, ["report"], EvalCfg(
        output_dir=str(tmp_path / "run"), progress=False, print_table=False, image_root=str(tiny_reports["root"]),
        report=ReportCfg(annotations=str(_bilingual(tiny_reports, tmp_path)), report_key="Cn_Report", epochs=3,
                         decoder_init="fresh", batch_size=6, max_length=24, num_beams=2, lr=3e-3)))
    row = result["rows"][0]
    chars = {ch for r in REPORTS_ZH for ch in r if not ch.isspace()}
    assert set(row["hparams"][0]["added_characters"]) == chars
    assert any(n.startswith("100.0% of the Cn_Report tokens") and f"gains their {len(chars)} characters" in n
               for n in result["notes"])
    written = json.loads((tmp_path / "run" / "report_predictions.json").read_text())
    assert any(set(p["generated"]) & chars for p in written), written[:2]


def test_csv_reports_honour_report_key_and_refuse_empty_reports(tiny_reports, tmp_path):
    """KeepFIT's FFA.csv form (caption in a one-element ``categories`` list) with FFA-IR's Chinese column."""
    from fundus_vlp.data.dataframes import DataFormatError
    from fundus_vlp.data.report_annotations import read_report_annotations

    root = tiny_reports["root"]
    images = sorted(str(p.relative_to(root)) for p in root.glob("case*/frame0.png"))
    rows = [(img, REPORTS[i % 3], REPORTS_ZH[i % 3]) for i, img in enumerate(images)]
    path = tmp_path / "FFA.csv"

    def write(rows):
        lines = ["image,atributes,categories,Cn_Report"]
        lines += [f'{img},"[]","[\'{en}\']",{zh}' for img, en, zh in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    write(rows)
    zh = read_report_annotations(path, root, "Cn_Report", seed=0)
    assert sorted(c.report for c in zh) == sorted(r[2] for r in rows)
    en = read_report_annotations(path, root, "En_Report", seed=0)
    assert [c.report for c in en] == [r[1] for r in rows] and [c.split for c in en] == [c.split for c in zh]
    write([rows[0], (rows[1][0], rows[1][1], ""), *rows[2:]])
    with pytest.raises(DataFormatError, match=r"1 row\(s\) without a 'Cn_Report' report \(rows 2\)"):
        read_report_annotations(path, root, "Cn_Report", seed=0)
    write([rows[0], rows[1], (rows[2][0], "", rows[2][2]), *rows[3:]])
    with pytest.raises(DataFormatError, match=r"without a 'En_Report' report \(rows 3\)"):
        read_report_annotations(path, root, "En_Report", seed=0)
    with pytest.raises(ValueError, match="report_key='Findings'"):
        read_report_annotations(path, root, "Findings", seed=0)


# ------------------------------------------------------------------------------------------ beam search

_FINDINGS = ["microaneurysms", "haemorrhages", "drusen", "exudates", "leakage", "atrophy"]
_CONDITIONS = ["diabetic retinopathy", "macular degeneration", "hypertensive retinopathy", "vein occlusion"]


@pytest.fixture(scope="module")
def trained_decoder(tmp_path_factory):
    """A small decoder trained here, seeded, first on one-sentence captions (as KeepFIT V2 pretrains its
    decoder), then briefly on two-sentence reports (findings, then an impression), on image tokens that carry
    no information (a frozen tower that does not separate the cases), so that it writes from its probabilities
    alone, where an end after the first sentence stays plausible."""
    from fundus_vlp.config import DecoderCfg
    from fundus_vlp.models.decoder import CaptionDecoder
    from fundus_vlp.models.tokenizer import Tokenizer
    from transformers import BertTokenizerFast

    from fundus_vlp.eval.report_generation import ReportSamples, train_report_decoder

    rng = np.random.default_rng(0)
    captions = [f"the right eye shows {a} and {b} at the posterior pole."
                for a, b in (rng.choice(_FINDINGS, 2, replace=False) for _ in range(100))]
    reports = [f"{c} impression: {_CONDITIONS[int(rng.integers(4))]} in the right eye." for c in captions]
    vocab = tmp_path_factory.mktemp("beam_vocab") / "vocab.txt"  # whole words, in a fixed order: seeded ids
    words = sorted({w for r in reports for w in r.replace(".", " .").replace(":", " :").split()})
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = Tokenizer(BertTokenizerFast(vocab=str(vocab), do_lower_case=True), context_length=40)
    feats = torch.randn(100, 2, 8, generator=torch.Generator().manual_seed(0))
    tokens = lambda idx: feats[idx]  # noqa: E731

    def split(texts, lo, hi):
        return ReportSamples([str(i) for i in range(lo, hi)], torch.arange(lo, hi)[:, None], texts[lo:hi])

    torch.manual_seed(0)
    decoder = CaptionDecoder(DecoderCfg(enabled=True, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                        max_length=40, dropout=0.0), 8, len(tok), tok.pad_token_id, tok.bos_token_id,
                             tok.eos_token_id)
    for texts, epochs in ((captions, 6), (reports, 8)):
        cfg = ReportCfg(epochs=epochs, batch_size=10, lr=3e-3, select_metric="loss", patience=None)
        train_report_decoder(decoder, torch.nn.Identity(), tokens, split(texts, 0, 70), split(texts, 70, 80), tok, cfg,
                             40, 0, torch.device("cpu"), progress=False)
    return decoder, tokens, tok, split(reports, 80, 100), reports[:70]


def _decode_and_score(trained_decoder, num_beams, length_penalty, early_stopping, min_new_tokens):
    """(texts, metrics, per-report mean token negative log-likelihood under the decoder) of one decoding."""
    from fundus_vlp.eval.report_generation import batch_loss, generate_reports, score_reports, tokenize_reports

    decoder, tokens, tok, test, _ = trained_decoder
    texts = generate_reports(decoder, tokens, test, tok, 20, 40, num_beams, length_penalty, early_stopping,
                             min_new_tokens)
    scores = score_reports(test, texts, use_java=False, meteor=False)
    ids = tokenize_reports(tok, texts, 40)
    with torch.no_grad():
        nll = [float(batch_loss(decoder, tokens, test.image_idx[i:i + 1], ids[i:i + 1])[0]) for i in range(len(texts))]
    return texts, scores, np.array(nll)


def test_beam_search_writes_whole_reports_and_scores_at_least_greedy(trained_decoder):
    """The default decoding of a run: beam search finds reports at least as probable per token as greedy
    decoding's, for every case, and scores at least as high; the decoding of earlier releases (summed
    log-probabilities, early stopping, no minimum length) ends reports after a few words on the same decoder and
    loses to greedy decoding, so this decoder tells the two apart."""
    from fundus_vlp.eval.report_generation import shortest_report

    cfg = ReportCfg()
    min_new = shortest_report(trained_decoder[2], trained_decoder[4])
    greedy = _decode_and_score(trained_decoder, 1, cfg.length_penalty, cfg.beam_stop, min_new)
    beam = _decode_and_score(trained_decoder, cfg.num_beams, cfg.length_penalty, cfg.beam_stop, min_new)
    assert (beam[2] <= greedy[2] + 1e-5).all(), (beam[2], greedy[2])
    for metric in ("bleu_4", "rouge_l", "cider"):
        assert beam[1][metric] >= greedy[1][metric] - 1e-6, (metric, beam[1], greedy[1], beam[0][:2], greedy[0][:2])
    assert all("impression" in t for t in beam[0]), beam[0][:3]  # no report stops after its findings

    cut_short = _decode_and_score(trained_decoder, cfg.num_beams, 0.0, True, 0)
    assert cut_short[1]["bleu_4"] < greedy[1]["bleu_4"] and cut_short[2].mean() > greedy[2].mean()


def test_image_only_model_generates_reports(tiny_reports, tiny_tokenizer_dir, tmp_path):
    """A model without a text tower (nor tokenizer) trains a fresh decoder on a given vocabulary."""
    from fundus_vlp.factory import create_model

    torch.manual_seed(0)
    small_decoder = {"decoder.hidden_size": 32, "decoder.num_layers": 1, "decoder.num_heads": 2,
                     "decoder.intermediate_size": 64}
    create_model("tiny-image-only", **small_decoder).save_pretrained(tmp_path / "image_only")
    cfg = EvalCfg(output_dir=str(tmp_path / "run"), progress=False, print_table=False,
                  image_root=str(tiny_reports["root"]),
                  report=ReportCfg(annotations=str(tiny_reports["annotations"]), epochs=1, batch_size=4, max_length=16,
                                   num_beams=1, max_images=2, tokenizer=str(tiny_tokenizer_dir)))
    row = evaluate(tmp_path / "image_only", None, ["report"], cfg)["rows"][0]
    assert row["method"] == "case: model tower (frozen), fresh decoder"
    assert {"bleu_1", "rouge_l", "cider"} <= set(row["metrics"]) and row["n_test"] == 3
