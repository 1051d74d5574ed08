"""The elite index: built from caption files with the model's own embeddings, saved beside the weights,
read back without unpickling, refused when malformed, and reported stale when the weights change."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import make_image_dataset
from fundus_vlp.app.analysis import Analyzer
from fundus_vlp.app.elite_index import (INDEX_META, INDEX_WEIGHTS, build_elite_index, load_elite_index,
                                        make_thumbnail, save_elite_index)
from fundus_vlp.cli.main import main
from fundus_vlp.data.images import load_image
from fundus_vlp.hub import CheckpointError


@pytest.fixture
def saved(tiny_model, tmp_path):
    ds = make_image_dataset(tmp_path / "data", n_per_class=1, n_elite=5)
    model_dir = tiny_model.save_pretrained(tmp_path / "model")
    return tiny_model.eval(), model_dir, ds


def test_index_round_trip_and_nearest(saved):
    model, model_dir, ds = saved
    index = build_elite_index(model, model_dir, [ds["elite_csv"]], ds["root"], thumbnail_size=32, progress=False)
    save_elite_index(index, model_dir)
    loaded = load_elite_index(model_dir)
    paths = [ds["root"] / f"elite/e{i}.png" for i in range(5)]
    # the index holds exactly the model's embeddings of the listed images, in the file's row order
    torch.testing.assert_close(loaded.embeddings, model.embed_images(paths), atol=1e-5, rtol=0)
    assert [e["image"] for e in loaded.entries] == [f"elite/e{i}.png" for i in range(5)]
    assert [e["row"] for e in loaded.entries] == [1, 2, 3, 4, 5]
    assert loaded.entries[1]["caption"].startswith("an enlarged optic cup")
    assert loaded.thumbnails.dtype == torch.uint8 and tuple(loaded.thumbnails.shape) == (5, 32, 32, 3)
    assert torch.equal(loaded.thumbnails[3], make_thumbnail(load_image(paths[3]), 32))
    # an elite image is its own nearest example (cosine 1); the rest follow in decreasing similarity
    scores, idx = loaded.nearest(model.embed_images([paths[2]]), k=3)
    assert int(idx[0, 0]) == 2 and float(scores[0, 0]) == pytest.approx(1.0, abs=1e-5)
    assert scores[0].tolist() == sorted(scores[0].tolist(), reverse=True)
    meta = json.loads((model_dir / INDEX_META).read_text())
    assert meta["count"] == 5 and meta["embed_dim"] == 32 and meta["thumbnail_size"] == 32


def test_index_without_thumbnails(saved):
    model, model_dir, ds = saved
    save_elite_index(build_elite_index(model, model_dir, [ds["elite_csv"]], ds["root"], thumbnail_size=0,
                                       progress=False), model_dir)
    loaded = load_elite_index(model_dir)
    assert loaded.thumbnails is None and loaded.thumbnail(0) is None and len(loaded) == 5


def test_a_folder_without_index_has_none_and_a_malformed_one_is_refused(saved):
    model, model_dir, ds = saved
    assert load_elite_index(model_dir) is None
    save_elite_index(build_elite_index(model, model_dir, [ds["elite_csv"]], ds["root"], progress=False), model_dir)
    meta = json.loads((model_dir / INDEX_META).read_text())
    meta["entries"] = meta["entries"][:3]
    (model_dir / INDEX_META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match 3 entries"):
        load_elite_index(model_dir)
    (model_dir / INDEX_META).write_text("{not json")
    with pytest.raises(CheckpointError, match="elite_index.json: not an elite index"):
        load_elite_index(model_dir)
    (model_dir / INDEX_META).unlink()
    with pytest.raises(CheckpointError, match="elite_index.json: missing"):
        load_elite_index(model_dir)
    (model_dir / INDEX_META).write_text(json.dumps(meta | {"entries": meta["entries"]}))
    (model_dir / INDEX_WEIGHTS).write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="elite_index.safetensors: unreadable"):
        load_elite_index(model_dir)


def test_an_index_of_other_weights_is_reported_stale_not_used(saved):
    model, model_dir, ds = saved
    save_elite_index(build_elite_index(model, model_dir, [ds["elite_csv"]], ds["root"], progress=False), model_dir)
    assert Analyzer(model, model_dir).index is not None
    with torch.no_grad():
        model.logit_scale.add_(0.1)  # re-exported weights: the stored embeddings no longer belong to them
    index_files = {n: (model_dir / n).read_bytes() for n in (INDEX_META, INDEX_WEIGHTS)}
    model.save_pretrained(model_dir)
    for name, data in index_files.items():
        (model_dir / name).write_bytes(data)
    analyzer = Analyzer(model, model_dir)
    assert analyzer.index is None and "built with other weights" in analyzer.index_note


def test_index_command_writes_the_files_and_names_a_missing_image_row(saved, capsys):
    model, model_dir, ds = saved
    assert main(["index", "--model", str(model_dir), "--elite", str(ds["elite_csv"]), "--image-root",
                 str(ds["root"]), "--thumbnail-size", "16"]) == 0
    assert "indexed 5 elite images" in capsys.readouterr().out
    assert load_elite_index(model_dir).thumbnails.shape[1] == 16
    (ds["root"] / "elite" / "e3.png").unlink()
    assert main(["index", "--model", str(model_dir), "--elite", str(ds["elite_csv"]), "--image-root",
                 str(ds["root"])]) == 1
    assert "elite.csv, row 4: image 'elite/e3.png' not found" in capsys.readouterr().err
