"""ONNX export of the two encoders, and zero-shot classification on them with onnxruntime.

``export_onnx(model, directory)`` writes, next to ``model.safetensors``:

* ``image_encoder.onnx``: ``pixel_values`` (batch×3×S×S float32, the output of the model's evaluation
  transform) -> ``image_embeds`` (batch×D, unit norm);
* ``text_encoder.onnx``: ``input_ids`` (batch×length int64, any length up to the context length) ->
  ``text_embeds`` (batch×D, unit norm).

``OnnxModel.from_pretrained(directory)`` runs them: images are decoded and preprocessed by the same
code as the PyTorch model (``models/inference.py``), text is tokenised by the folder's tokenizer, and
prompts, prototypes and probabilities are computed in numpy with the prompt ensembles of
``models/zero_shot.py``; torch is not used beyond preprocessing.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..constants import WEIGHTS_NAME
from ..runtime.extras import require
from .inference import (DEFAULT_TEMPLATES, Batches, Progress, check_labels, expand_inputs, preprocessed_batches,
                        resolve_knowledge)
from .zero_shot import class_prompts, negative_prompts

IMAGE_ONNX = "image_encoder.onnx"
TEXT_ONNX = "text_encoder.onnx"
ONNX_OPSET = 17


def export_onnx(model, directory: str | Path, opset: int = ONNX_OPSET) -> List[Path]:
    """Write the two encoder graphs (dynamic batch; dynamic text length) into ``directory``."""
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
    model = model.eval().to("cpu")
    size = model.cfg.preprocess.size
    ids = model.tokenizer(["a fundus photograph of glaucoma", "normal"], padding="longest")
    image_path, text_path = directory / IMAGE_ONNX, directory / TEXT_ONNX
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python branches in transformers' masking code; they depend only on shapes
        # that stay consistent (mask length = input length), and the parity test checks other lengths.
        warnings.simplefilter("ignore")
        # the TorchScript-based exporter: it works offline and keeps both axes of input_ids symbolic
        torch.onnx.export(Encoder(model.encode_image).eval(), (torch.zeros(2, 3, size, size),), str(image_path),
                          input_names=["pixel_values"], output_names=["image_embeds"], opset_version=opset,
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, dynamo=False)
        torch.onnx.export(Encoder(model.encode_text).eval(), (ids,), str(text_path), input_names=["input_ids"],
                          output_names=["text_embeds"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "text_embeds": {0: "batch"}})
    return [image_path, text_path]


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class OnnxModel:
    """The zero-shot surface of ``FundusCLIP`` (``classify``, ``embed_images``, ``embed_texts``) on ONNX files."""

    def __init__(self, directory: str | Path, providers: Optional[Sequence[str]] = None):
        ort = require("onnxruntime", "onnx", "OnnxModel")

        from ..hub import CheckpointError, load_config
        from .tokenizer import Tokenizer

        self.directory = Path(directory)
        self.cfg = load_config(self.directory)
        missing = [n for n in (IMAGE_ONNX, TEXT_ONNX) if not (self.directory / n).is_file()]
        if missing:
            raise CheckpointError(f"{self.directory}: no {', '.join(missing)}; run "
                                  f"`fundus-vlp export --model {self.directory} --onnx` first")
        self.tokenizer = Tokenizer.from_pretrained(str(self.directory), self.cfg.text.context_length,
                                                   self.cfg.text.padding)
        providers = list(providers or ["CPUExecutionProvider"])
        self.image_session = ort.InferenceSession(str(self.directory / IMAGE_ONNX), providers=providers)
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

    def embed_texts(self, texts: Union[str, Sequence[str]], batch_size: int = 64) -> np.ndarray:
        """P×D unit-norm float32 embeddings."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no texts given")
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer.hf(texts[i:i + batch_size], padding=self.cfg.text.padding, truncation=True,
                                    max_length=self.cfg.text.context_length, return_tensors="np")
            out.append(self.text_session.run(None, {"input_ids": enc["input_ids"].astype(np.int64)})[0])
        return np.concatenate(out).astype(np.float32)

    def embed_images(self, images, batch_size: int = 32, progress: Progress = None,
                     record: Optional[Batches] = None) -> np.ndarray:
        """N×D unit-norm float32 embeddings, in the order of ``classify``'s rows."""
        items = expand_inputs(images)
        if not items:
            raise ValueError("no images given (an empty list, or a folder without image files)")
        out = [self.image_session.run(None, {"pixel_values": batch.numpy().astype(np.float32)})[0]
               for batch in preprocessed_batches(items, self.cfg.preprocess, batch_size, progress=progress,
                                                 record=record)]
        return np.concatenate(out)

    def _prototypes(self, prompt_groups: Sequence[Sequence[str]]) -> np.ndarray:
        """K×D: mean of each group's unit text embeddings, re-normalised (as ``prototypes_from_embeddings``)."""
        return _normalize(np.stack([self.embed_texts(list(group)).mean(axis=0) for group in prompt_groups]))

    def classify(self, images, labels, domain_knowledge=True, multilabel: bool = False, batch_size: int = 32,
                 device=None, progress: Progress = None, templates: Optional[Sequence[str]] = None):
        """Same contract as ``FundusCLIP.classify`` (``device`` is unused: onnxruntime providers decide)."""
        import pandas as pd

        labels = check_labels(labels, multilabel)
        knowledge = resolve_knowledge(domain_knowledge)
        positive = self._prototypes([class_prompts(c, templates or DEFAULT_TEMPLATES, knowledge) for c in labels])
        record = Batches()
        feats = self.embed_images(images, batch_size=batch_size, progress=progress, record=record).astype(np.float64)
        logits = self.logit_scale * feats @ positive.T.astype(np.float64)
        if multilabel:
            negative = self._prototypes([negative_prompts(c) for c in labels]).astype(np.float64)
            probs = 1.0 / (1.0 + np.exp(-(logits - self.logit_scale * feats @ negative.T)))
        else:
            probs = _softmax(logits)
        return pd.DataFrame(probs, index=pd.Index(record.names, name="image"), columns=labels)
