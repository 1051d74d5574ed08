"""ONNX export of the two encoders, and zero-shot classification on them with onnxruntime.

``export_onnx(model, directory)`` writes, next to ``model.safetensors``:

* ``image_encoder.onnx``: ``pixel_values`` (batch×3×S×S float32, the output of the model's evaluation
  transform) -> ``image_embeds`` (batch×D, unit norm);
* ``text_encoder.onnx``: ``input_ids`` (batch×length int64, any length up to the context length) ->
  ``text_embeds`` (batch×D, unit norm); not for an image-only model (e.g. RETFound), which has no text tower.

``OnnxModel.from_pretrained(directory)`` runs them inside the inference unit (``fundus_vlp/inference/``):
images are decoded and preprocessed, texts tokenised, prompts, prototypes and probabilities computed by the
same code as for the PyTorch model; only the encoders run in onnxruntime (torch does the rest, on the CPU).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..constants import WEIGHTS_NAME
from ..runtime.extras import require
from .errors import image_only_error

IMAGE_ONNX = "image_encoder.onnx"
TEXT_ONNX = "text_encoder.onnx"
ONNX_OPSET = 17


def export_onnx(model, directory: str | Path, opset: int = ONNX_OPSET) -> List[Path]:
    """Write the encoder graphs (dynamic batch; dynamic text length) into ``directory``: the image encoder, and
    the text encoder unless the model is image-only."""
    import torch
    from torch import nn

    for module in ("onnx", "onnxscript"):  # torch.onnx.export writes the graph with them
        require(module, "onnx", "ONNX export")

    class Encoder(nn.Module):
        """One tower's normalised embedding (``encode_image`` or ``encode_text``) as a one-input graph."""

        def __init__(self, encode):
            super().__init__()
            self.clip, self.encode = encode.__self__, encode.__name__

        def forward(self, x):
            return getattr(self.clip, self.encode)(x, normalize=True)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    size = model.cfg.preprocess.size
    model = _at_input_size(model.eval().to("cpu"), size)
    image_path, text_path = directory / IMAGE_ONNX, directory / TEXT_ONNX
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python branches in transformers' masking code; they depend only on shapes
        # that stay consistent (mask length = input length), and the parity test checks other lengths.
        warnings.simplefilter("ignore")
        # the TorchScript-based exporter: it works offline and keeps both axes of input_ids symbolic
        torch.onnx.export(Encoder(model.encode_image).eval(), (torch.zeros(2, 3, size, size),), str(image_path),
                          input_names=["pixel_values"], output_names=["image_embeds"], opset_version=opset,
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, dynamo=False)
        if model.is_image_only:
            return [image_path]
        ids = model.tokenizer(["a fundus photograph of glaucoma", "normal"], padding="longest")
        torch.onnx.export(Encoder(model.encode_text).eval(), (ids,), str(text_path), input_names=["input_ids"],
                          output_names=["text_embeds"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "text_embeds": {0: "batch"}})
    return [image_path, text_path]


def _at_input_size(model, size: int):
    """``model`` with a ViT trunk's position table resampled once to the preprocess size (the graph's only image
    size). A trunk built for another size resamples it on every call with an antialiased bicubic resize,
    which ONNX cannot express; resampled here, the call finds the sizes equal and uses the table as it is."""
    trunk = model.visual.trunk
    if not (getattr(trunk, "dynamic_img_size", False) and hasattr(trunk, "set_input_size")):
        return model
    model = copy.deepcopy(model)  # the caller's model keeps its table
    model.visual.trunk.set_input_size(img_size=size)
    return model


class OnnxModel:
    """The inference surface of ``FundusCLIP`` (``classify``, ``embed_images``, ``embed_texts``) on ONNX files.

    It offers what the inference unit asks of a model (``cfg``, ``tokenizer``, ``encode_image``,
    ``encode_text``, ``scale``), so decoding, prompts, prototypes and probabilities are the very code the
    PyTorch model runs; only the two encoders run in onnxruntime.
    """

    training = False

    def __init__(self, directory: str | Path, providers: Optional[Sequence[str]] = None):
        ort = require("onnxruntime", "onnx", "OnnxModel")

        from ..hub import CheckpointError, load_config
        from .tokenizer import Tokenizer

        self.directory = Path(directory)
        self.cfg = load_config(self.directory)
        self.is_image_only = self.cfg.text is None
        needed = (IMAGE_ONNX,) if self.is_image_only else (IMAGE_ONNX, TEXT_ONNX)
        missing = [n for n in needed if not (self.directory / n).is_file()]
        if missing:
            raise CheckpointError(f"{self.directory}: no {', '.join(missing)}; run "
                                  f"`fundus-vlp export --model {self.directory} --onnx` first")
        providers = list(providers or ["CPUExecutionProvider"])
        self.image_session = ort.InferenceSession(str(self.directory / IMAGE_ONNX), providers=providers)
        self.tokenizer = self.text_session = self.logit_scale = None
        if not self.is_image_only:
            self.tokenizer = Tokenizer.from_pretrained(str(self.directory), self.cfg.text.context_length,
                                                       self.cfg.text.padding)
            self.text_session = ort.InferenceSession(str(self.directory / TEXT_ONNX), providers=providers)
            self.logit_scale = self._read_scale()

    @classmethod
    def from_pretrained(cls, directory: str | Path, providers: Optional[Sequence[str]] = None) -> "OnnxModel":
        return cls(directory, providers)

    def _read_scale(self) -> float:
        """exp(clamp(logit_scale)) read from the safetensors file (the ONNX graphs hold only the encoders)."""
        from safetensors import safe_open

        with safe_open(str(self.directory / WEIGHTS_NAME), framework="numpy") as f:
            raw = float(np.asarray(f.get_tensor("logit_scale")).reshape(()))
        return float(np.exp(np.clip(raw, 0.0, self.cfg.logit_scale_max)))

    # -- what the inference unit calls ---------------------------------------------------------------
    def scale(self) -> float:
        if self.logit_scale is None:
            raise image_only_error("an image-text logit scale")
        return self.logit_scale

    def eval(self) -> "OnnxModel":
        return self

    def to(self, device) -> "OnnxModel":  # onnxruntime's providers decide where the graphs run
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        return self

    def encode_image(self, pixel_values, normalize: bool = True, project: bool = True):
        """B×D unit embeddings of preprocessed images (the graph normalises; ``project=False`` is not exported)."""
        import torch

        if not project:
            raise ValueError("the ONNX image encoder holds the projected embedding only")
        out = self.image_session.run(None, {"pixel_values": pixel_values.cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)

    def encode_text(self, input_ids, normalize: bool = True, project: bool = True):
        import torch

        if self.text_session is None:
            raise image_only_error("encode_text")
        out = self.text_session.run(None, {"input_ids": input_ids.cpu().numpy().astype(np.int64)})[0]
        return torch.from_numpy(out)

    # -- the FundusCLIP inference surface -------------------------------------------------------------
    def embed_texts(self, texts: Union[str, Sequence[str]], batch_size: int = 64) -> np.ndarray:
        """P×D unit-norm float32 embeddings."""
        from ..inference.embedding import embed_texts

        return embed_texts(self, texts, batch_size=batch_size).numpy()

    def embed_images(self, images, batch_size: int = 32, progress=None) -> np.ndarray:
        """N×D unit-norm float32 embeddings, in the order of ``classify``'s rows."""
        from ..inference.embedding import embed_images

        return embed_images(self, images, batch_size=batch_size, progress=progress).numpy()

    def classify(self, images, labels, domain_knowledge=True, multilabel: bool = False, batch_size: int = 32,
                 device=None, progress=None, templates: Optional[Sequence[str]] = None, calibration=None):
        """Same contract as ``FundusCLIP.classify`` (``device`` is unused: onnxruntime providers decide)."""
        from ..inference.pipeline import classify

        return classify(self, images, labels, domain_knowledge=domain_knowledge, multilabel=multilabel,
                        batch_size=batch_size, progress=progress, templates=templates, calibration=calibration)
