"""Optional features are optional dependencies: the core imports and runs without them, and a missing extra is a
one-line message naming `pip install 'fundus-vlp[EXTRA]'`, at every place that imports one."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from fundus_vlp.runtime.extras import EXTRAS, MissingExtraError, require

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "fundus_vlp"
OPTIONAL = {"gradio": "app", "fitz": "elite", "pymupdf": "elite", "onnx": "onnx", "onnxscript": "onnx",
            "onnxruntime": "onnx", "segmentation_models_pytorch": "seg", "pycocoevalcap": "report"}


def _block(monkeypatch, *modules: str) -> None:
    """Make `import MODULE` fail as if the package were not installed (and re-import our modules that use it)."""
    for name in list(sys.modules):
        if name.split(".")[0] in modules or name.startswith(("fundus_vlp.elite_builder", "fundus_vlp.app.ui")):
            monkeypatch.delitem(sys.modules, name)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_every_optional_import_goes_through_require():
    direct = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            direct += [f"{path.relative_to(PACKAGE)}:{node.lineno} {n}" for n in names if n.split(".")[0] in OPTIONAL]
    assert direct == [], "import these through fundus_vlp.runtime.extras.require: " + ", ".join(direct)
    assert set(OPTIONAL.values()) == set(EXTRAS)


def test_missing_module_names_the_extra_in_one_line(monkeypatch):
    _block(monkeypatch, "gradio")
    with pytest.raises(MissingExtraError) as err:
        require("gradio", "app", "the web app")
    message = str(err.value)
    assert "\n" not in message and message.endswith("pip install 'fundus-vlp[app]'") and "gradio" in message
    assert isinstance(err.value, ImportError) and isinstance(err.value, RuntimeError)
    assert require("json", "app", "x").dumps(1) == "1"  # an installed module is returned as is


def test_each_optional_feature_says_which_extra_it_needs(monkeypatch, tiny_model, tmp_path, capsys):
    from fundus_vlp.cli.main import main

    folder = tmp_path / "m"
    tiny_model.save_pretrained(folder)
    pdf = tmp_path / "atlas.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    commands = {"app": ["serve", "--model", str(folder)],
                "elite": ["build-elite", str(pdf), "--out", str(tmp_path / "elite")],
                "onnx": ["export", "--model", str(folder), "--onnx"]}
    for extra, args in commands.items():
        with monkeypatch.context() as patch:
            _block(patch, *[m for m, e in OPTIONAL.items() if e == extra])
            assert main(args) == 1
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"pip install 'fundus-vlp[{extra}]'" in err, err
    assert not (folder / "image_encoder.onnx").exists()

    from fundus_vlp.config.registry import get_model_config
    from fundus_vlp.eval.captioning import caption_metrics
    from fundus_vlp.eval.segmentation import build_segmenter
    from fundus_vlp.models.onnx import OnnxModel

    _block(monkeypatch, *OPTIONAL)
    for extra, call in (("report", lambda: caption_metrics({"a": ["x"]}, {"a": "x"}, use_java=False)),
                        ("seg", lambda: build_segmenter(get_model_config("tiny").vision, 2)),
                        ("onnx", lambda: OnnxModel(folder))):
        with pytest.raises(MissingExtraError, match=rf"pip install 'fundus-vlp\[{extra}\]'"):
            call()


def test_the_core_imports_and_builds_a_model_without_any_extra(tiny_tokenizer_dir):
    """`pip install fundus-vlp` (no extras): training, evaluation and the Python API import and run."""
    blocked = sorted(OPTIONAL)
    code = f"""
import importlib, pkgutil, sys
for name in {blocked!r}:
    sys.modules[name] = None
import fundus_vlp
from fundus_vlp.cli.main import build_parser
build_parser()
for unit in ("config", "data", "models", "losses", "methods", "train", "eval", "runtime"):
    package = importlib.import_module("fundus_vlp." + unit)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
model = fundus_vlp.create_model("tiny", **{{"text.hf_tokenizer_name": {str(tiny_tokenizer_dir)!r}}})
print("core ok", type(model).__name__)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "core ok FundusCLIP" in done.stdout, done.stderr[-3000:]
