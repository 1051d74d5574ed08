"""Print the largest differences between imported models and the official outputs recorded in the fixtures
(unit image and text embeddings, zero-shot probabilities), for docs/reference.md#imported-models:

    PYTHONPATH=src python tests/convert/measure_parity.py [NAME[=VARIANT] ...]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_layout import (chinese_vocab, english_vocab, load_fixture, save_container, seeded_state,  # noqa: E402
                             write_test_images, write_vocab)

DEFAULT = ["retfound_mae_small", "retfound_dinov2_small", "vilref_vit_small", "vilref_rn50",
           "ret_clip_vit_small=patient", "ret_clip_vit_small=left", "flair_rn50"]


def max_diff(got, expected) -> float:
    got = np.asarray(torch.as_tensor(got).detach(), dtype=np.float64)
    return float(np.abs(got - np.asarray(expected, dtype=np.float64)).max())


def measure(name: str, variant, work: Path, images) -> dict:
    from fundus_vlp.convert import import_weights
    from fundus_vlp.factory import from_pretrained

    ref = load_fixture(name)
    weights = save_container(seeded_state(ref["shapes"], ref["seed"]), ref["container"], work / "weights.pth")
    vocab = {"vilref": chinese_vocab, "ret-clip": chinese_vocab, "flair": english_vocab}.get(ref["format"])
    tokenizer = write_vocab(vocab(), work / "vocab.txt") if vocab else None
    import_weights(ref["format"], weights, work / name, tokenizer=tokenizer, variant=variant)
    model = from_pretrained(work / name)
    out = ref["views"][variant] if "views" in ref else ref
    row = {"image": max_diff(model.embed_images(images), out["image_embeddings"])}
    if "text_embeddings" in out:
        row["text"] = max_diff(model.embed_texts(ref["prompts"]), out["text_embeddings"])
        probs = model.classify(images, ref["classes"], domain_knowledge=False, templates=ref["templates"])
        row["probs"] = max_diff(probs.to_numpy(), out["probs"])
    return row


def main() -> None:
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="fundus_vlp_parity_"))
    images = write_test_images(work / "images")
    for item in sys.argv[1:] or DEFAULT:
        name, _, variant = item.partition("=")
        row = measure(name, variant or None, work, images)
        print(f"{item:<28}" + "  ".join(f"{k} {v:.1e}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
