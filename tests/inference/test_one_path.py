"""One inference path: a large JPEG (decoded at reduced size by the transform's rule) and labels named by the
knowledge base's display names (in the positive and the "no <label>" prompts of multi-label pairs) give the same
probabilities through ``model.classify``, ``fundus-vlp predict``,
the web app's analysis, ``OnnxModel.classify`` and ``eval zero-shot``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fundus_vlp.app.analysis import Analyzer
from fundus_vlp.app.uploads import check_uploads
from fundus_vlp.cli.main import main
from fundus_vlp.data.images import load_image
from fundus_vlp.data.transforms import build_transform
from fundus_vlp.eval.config import EvalCfg
from fundus_vlp.eval.context import EvalContext
from fundus_vlp.eval.experiments import Experiment
from fundus_vlp.eval.modes.zero_shot import zero_shot_probs_all
from fundus_vlp.factory import create_model
from fundus_vlp.inference.features import FeatureCache
from fundus_vlp.inference.zero_shot import load_knowledge

LABELS = ["normal", "glaucoma", "cataract"]
KNOWLEDGE = "fundus_zh"  # every label has a display name of its own (its Chinese name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_overrides):
    root = tmp_path_factory.mktemp("one_path")
    torch.manual_seed(0)
    model = create_model("tiny", **tiny_overrides).eval()
    model.save_pretrained(root / "model")
    yy, xx = np.mgrid[:600, :760]
    rng = np.random.default_rng(0)
    arr = np.stack([128 + 100 * np.sin(xx / 7.0 + c) * np.cos(yy / 11.0) for c in range(3)], -1)
    arr = np.clip(arr + rng.normal(0, 20, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(root / "large.jpg", quality=90)
    pd.DataFrame({"image": ["large.jpg"], "atributes": ["[]"], "categories": ["['glaucoma']"]}).to_csv(root / "one.csv")
    return root, model


def test_the_same_jpeg_gets_the_same_probabilities_everywhere(setup, capsys):
    root, model = setup
    jpeg = root / "large.jpg"
    transform = build_transform(model.cfg.preprocess, train=False)
    assert load_image(jpeg, draft_size=transform.draft_size).shape[1] < 600  # reduced-size decoding applies
    kb = load_knowledge(KNOWLEDGE)
    assert all(kb.display_name(c) != c for c in LABELS)

    reference = model.classify([jpeg], LABELS, domain_knowledge=KNOWLEDGE, multilabel=True).to_numpy()

    assert main(["predict", "--model", str(root / "model"), "--classes", ",".join(LABELS), "--knowledge", KNOWLEDGE,
                 "--multilabel", str(jpeg), "--out", str(root / "x.csv")]) == 0
    capsys.readouterr()
    cli = pd.read_csv(root / "x.csv", index_col="image")[LABELS].to_numpy()

    analysis = Analyzer(model, root / "model", knowledge=KNOWLEDGE).run(check_uploads([jpeg]), LABELS, multilabel=True)
    app = analysis.probabilities["with knowledge"].to_numpy()

    cfg = EvalCfg(output_dir=str(root / "run"), progress=False, print_table=False)
    cfg.zero_shot.knowledge = KNOWLEDGE
    experiment = Experiment(name="one_row", classes=LABELS, dataframe=str(root / "one.csv"), image_root=str(root),
                            task="multilabel")
    ctx = EvalContext(model, "tiny", "fp", experiment, cfg, root / "run", FeatureCache(None), torch.device("cpu"))
    evaluation = zero_shot_probs_all(ctx)

    for name, got in (("predict", cli), ("web app", app), ("eval zero-shot", evaluation)):
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6, err_msg=name)

    from fundus_vlp import OnnxModel
    from fundus_vlp.models.onnx import export_onnx

    export_onnx(model, root / "model")
    onnx = OnnxModel.from_pretrained(root / "model").classify([jpeg], LABELS, domain_knowledge=KNOWLEDGE,
                                                                 multilabel=True)
    np.testing.assert_allclose(onnx.to_numpy(), reference, rtol=0, atol=1e-4)

    # the check is sensitive to both rules it guards: full-size decoding and prompts without display names move
    # the probabilities by more than the tolerance
    full = model.classify([load_image(jpeg)], LABELS, domain_knowledge=KNOWLEDGE, multilabel=True).to_numpy()
    english = model.classify([jpeg], LABELS, domain_knowledge=True, multilabel=True).to_numpy()
    assert np.abs(full - reference).max() > 1e-5 and np.abs(english - reference).max() > 1e-4
