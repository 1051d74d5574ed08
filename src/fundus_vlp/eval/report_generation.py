"""Report generation: fine-tune an image-conditioned caption decoder on case-level reports, epoch chosen on
validation, beam search on the test cases.

* **Samples.** ``unit="case"``: the grid/patch tokens of up to ``max_images`` images of a case are
  concatenated into one memory (empty image slots masked out of the cross-attention), one target per case.
  ``unit="image"``: one sample per image, the case report replicated to every image of the case (the
  official KeepFIT-FFA behaviour); validation and test are then scored per image.
* **Towers.** The decoder cross-attends to the image tower of the evaluated model (or a random / local
  ImageNet-initialised copy of its architecture, the baselines). A frozen tower's tokens are computed once.
* **Selection.** Each validation computes the teacher-forced loss and, unless ``select_metric="loss"``,
  decodes the validation reports and scores them; the best epoch's weights are kept. Test reports are
  read only to score the final test generations: nothing here receives them.
* The vocabulary is the model's tokenizer (a fresh decoder's also holds the characters of the training reports
  it lacks), fixed before any validation or test report is read.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.report_annotations import ReportCase
from ..losses.caption import target_positions, token_cross_entropy
from ..models.decoder import CaptionDecoder
from ..models.vision import ImageTower, last_stage_name
from .captioning import caption_metrics
from .config import ReportCfg
from ..inference.inputs import ImageFiles
from .fit import FitResult, fit_select
from ..data.transforms import build_transform

_logger = logging.getLogger(__name__)

TokenFn = Callable[[torch.Tensor], torch.Tensor]  # image indices -> n×N×C tokens


@dataclass
class ReportSamples:
    """The samples of one split: image indices (S×K, -1 = empty slot), targets and ids."""

    ids: List[str]
    image_idx: torch.Tensor
    reports: List[str]

    def __len__(self) -> int:
        return len(self.ids)


def even_subset(n: int, k: int) -> List[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def build_samples(cases: Sequence[ReportCase], unit: str, max_images: int,
                  image_index: Dict[Path, int]) -> ReportSamples:
    ids, rows, reports = [], [], []
    for case in cases:
        if unit == "image":
            for k, p in enumerate(case.images):
                ids.append(f"{case.case_id}#{k}")
                rows.append([image_index[p]])
                reports.append(case.report)
        else:
            ids.append(case.case_id)
            rows.append([image_index[case.images[i]] for i in even_subset(case.n_images, max_images)])
            reports.append(case.report)
    width = max((len(r) for r in rows), default=1)
    idx = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        idx[i, :len(r)] = torch.as_tensor(r)
    return ReportSamples(ids, idx, reports)


class TowerTokens:
    """Grid/patch tokens of the images through the evaluation transform, for a tower that is ``frozen`` (tokens
    computed once), trains from its ``last_block`` (the inputs of the trunk's last stage computed once, the
    stage itself runs on every call) or trains in ``full`` (the tower runs on every call)."""

    def __init__(self, tower: ImageTower, paths: Sequence[Path], preprocess, device: torch.device,
                 finetune: str = "frozen", batch_size: int = 32, num_workers: int = 0):
        self.tower, self.device, self.finetune = tower, device, finetune
        self.files = ImageFiles(paths, build_transform(preprocess, train=False))
        self.batch_size, self.num_workers = batch_size, num_workers
        self.cache: Optional[torch.Tensor] = None
        self.stage: Optional[nn.Module] = None
        if finetune == "last_block":
            self.stage = tower.trunk.get_submodule(last_stage_name(tower.trunk))
        for p in tower.parameters():
            p.requires_grad_(finetune == "full")
        for p in (self.stage.parameters() if self.stage is not None else ()):
            p.requires_grad_(True)

    @torch.no_grad()
    def precompute(self, progress: bool = False) -> None:
        """Compute what does not train once: the tokens (frozen) or the last stage's inputs (last_block)."""
        from torch.utils.data import DataLoader

        if self.finetune == "full":
            return
        self.tower.eval()
        inputs: List[torch.Tensor] = []
        hook = (self.stage.register_forward_pre_hook(lambda _, args: inputs.append(args[0].float().cpu()))
                if self.stage is not None else None)
        loader = DataLoader(self.files, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
        out = []
        try:
            for x in tqdm(loader, desc="image tokens", disable=None if progress else True, leave=False):
                out.append(self.tower.tokens(self.tower.forward_features(x.to(self.device))).float().cpu())
        finally:
            if hook is not None:
                hook.remove()
        if self.stage is not None:
            self._check_last_stage_gives(out[0], inputs[0])
        self.cache = torch.cat(inputs if self.stage is not None else out)

    def _check_last_stage_gives(self, tokens: torch.Tensor, stage_input: torch.Tensor) -> None:
        again = self.tower.tokens(self.stage(stage_input.to(self.device))).float().cpu()
        if again.shape != tokens.shape or not torch.allclose(again, tokens, atol=1e-4, rtol=1e-3):
            raise ValueError(f"report.finetune=last_block: the last stage of {type(self.tower.trunk).__name__} is not "
                             f"the end of its feature pass (e.g. a norm follows it); use finetune=full or frozen")

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            images = torch.stack([self.files[int(i)] for i in idx]).to(self.device)
            return self.tower.tokens(self.tower.forward_features(images))
        cached = self.cache[idx].to(self.device)
        return cached if self.stage is None else self.tower.tokens(self.stage(cached))


def case_memory(tokens: TokenFn, image_idx: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(memory B×(K·N)×C, mask B×(K·N) or None when no slot is empty) for a batch of samples."""
    valid = image_idx >= 0
    width = int(valid.sum(1).max())
    image_idx, valid = image_idx[:, :width], valid[:, :width]
    flat = tokens(image_idx[valid])
    b, k = image_idx.shape
    n, c = flat.shape[1:]
    if bool(valid.all()):
        return flat.reshape(b, k * n, c), None
    memory = flat.new_zeros(b, k, n, c)
    memory[valid.to(flat.device)] = flat
    mask = valid[:, :, None].expand(b, k, n).reshape(b, k * n).long().to(flat.device)
    return memory.reshape(b, k * n, c), mask


def tokenize_reports(tokenizer, reports: Sequence[str], max_length: int) -> torch.Tensor:
    ids = tokenizer(list(reports), context_length=max_length, padding="max_length")
    used = int((ids != tokenizer.pad_token_id).sum(1).max()) if len(ids) else 1
    return ids[:, :max(used, 2)]


def batch_loss(decoder: CaptionDecoder, tokens: TokenFn, image_idx: torch.Tensor, ids: torch.Tensor,
               label_smoothing: float = 0.0) -> Tuple[torch.Tensor, int]:
    """Mean token cross-entropy of a batch (teacher forcing) and its number of scored tokens."""
    memory, mask = case_memory(tokens, image_idx)
    ids = ids.to(memory.device)
    scored = target_positions(ids, decoder.pad_id)
    logits = decoder.scored_logits(memory, ids, scored, mask)
    return token_cross_entropy(logits, ids[:, 1:][scored], label_smoothing), int(scored.sum())


@torch.no_grad()
def mean_loss(decoder, tokens: TokenFn, samples: ReportSamples, ids: torch.Tensor, batch_size: int) -> float:
    decoder.eval()
    total, count = 0.0, 0
    for start in range(0, len(samples), batch_size):
        sl = slice(start, start + batch_size)
        loss, n = batch_loss(decoder, tokens, samples.image_idx[sl], ids[sl])
        total, count = total + float(loss) * n, count + n
    return total / max(count, 1)


@torch.no_grad()
def generate_reports(decoder: CaptionDecoder, tokens: TokenFn, samples: ReportSamples, tokenizer,
                     batch_size: int, max_length: int, num_beams: int, length_penalty: float = 1.0,
                     early_stopping="never", min_new_tokens: int = 0) -> List[str]:
    decoder.eval()
    out: List[str] = []
    for start in range(0, len(samples), batch_size):
        memory, mask = case_memory(tokens, samples.image_idx[start:start + batch_size])
        ids = decoder.generate(memory, max_length=max_length, num_beams=num_beams, image_mask=mask,
                               length_penalty=length_penalty, early_stopping=early_stopping,
                               min_new_tokens=min_new_tokens)
        out += tokenizer.batch_decode(ids.cpu())
    return out


def report_lengths(tokenizer, reports: Sequence[str]) -> List[int]:
    """Tokens of each report, special tokens excluded."""
    return [len(r) for r in tokenizer.hf(list(reports), add_special_tokens=False)["input_ids"]] if reports else []


def shortest_report(tokenizer, reports: Sequence[str]) -> int:
    """Tokens of the shortest report (special tokens excluded): no report should end before this."""
    return min(report_lengths(tokenizer, reports), default=0)


def score_reports(samples: ReportSamples, generated: Sequence[str], use_java: Optional[bool] = None,
                  meteor: bool = True, language: Optional[str] = None) -> Dict[str, object]:
    return caption_metrics({i: [r] for i, r in zip(samples.ids, samples.reports)}, dict(zip(samples.ids, generated)),
                           use_java=use_java, meteor=meteor, language=language)


def report_tokenizer(model, cfg: ReportCfg):
    """The vocabulary of the reports: ``report.tokenizer`` when set, else the model's; a model without one (image-only,
    e.g. RETFound) gets the offline MiniLM's WordPiece vocabulary for its fresh decoder. (A fresh decoder's
    vocabulary also gains the report characters it lacks: :func:`decoder_tokenizer`.)"""
    from ..constants import MINILM_ALIAS
    from ..models.tokenizer import Tokenizer

    if cfg.tokenizer and uses_pretrained_decoder(model, cfg):
        raise ValueError("report.tokenizer: a pretrained decoder writes with the model's own vocabulary; set "
                         "report.decoder_init=fresh to train a decoder with another tokenizer")
    if cfg.tokenizer or getattr(model, "tokenizer", None) is None:
        return Tokenizer.from_pretrained(cfg.tokenizer or MINILM_ALIAS)
    return model.tokenizer


def decoder_tokenizer(model, cfg: ReportCfg, tokenizer, train_reports: Sequence[str]):
    """(the vocabulary the decoder writes with, the characters added to ``tokenizer``): a fresh decoder learns every
    token embedding, so it also gets each character of the training reports that ``tokenizer`` maps to [UNK];
    a pretrained decoder keeps the vocabulary it was trained with."""
    return (tokenizer, []) if uses_pretrained_decoder(model, cfg) else tokenizer.with_characters_of(train_reports)


def uses_pretrained_decoder(model, cfg: ReportCfg) -> bool:
    return cfg.decoder_init == "pretrained" or (cfg.decoder_init == "auto" and model.decoder is not None)


def build_decoder_and_tower(model, cfg: ReportCfg, seed: int,
                            tokenizer=None) -> Tuple[ImageTower, CaptionDecoder, Dict[str, str]]:
    """The image tower (the model's, or a random / ImageNet-initialised one of the same architecture) and the
    decoder (the model's pretrained one, or a fresh one shaped like the model's decoder config, writing with
    ``tokenizer``, by default :func:`report_tokenizer`'s vocabulary)."""
    vision = model.cfg.vision
    torch.manual_seed(seed)
    if cfg.tower_init == "model":
        tower = copy.deepcopy(model.visual)
    elif cfg.tower_init == "random":
        tower = ImageTower(replace(vision, pretrained=False), model.cfg.embed_dim, model.cfg.projection_bias)
    else:
        if not cfg.imagenet_checkpoint:
            raise ValueError("report.tower_init=imagenet needs report.imagenet_checkpoint=FILE (a local timm "
                             f"checkpoint of {vision.timm_model_name}, .safetensors or .pth): nothing is downloaded")
        tower = ImageTower(replace(vision, pretrained=str(cfg.imagenet_checkpoint)), model.cfg.embed_dim,
                           model.cfg.projection_bias)
    use_pretrained = uses_pretrained_decoder(model, cfg)
    if use_pretrained:
        if model.decoder is None:
            raise ValueError("report.decoder_init=pretrained: this model has no caption decoder (train it with "
                             "method=keepfit_v2, or use decoder_init=fresh)")
        decoder = copy.deepcopy(model.decoder)
    else:
        tok = tokenizer or report_tokenizer(model, cfg)
        length = max(cfg.max_length or 0, model.cfg.decoder.max_length)
        dcfg = replace(model.cfg.decoder, enabled=True, max_length=length)
        torch.manual_seed(seed)
        decoder = CaptionDecoder(dcfg, tower.width, len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
        if dcfg.init_from_text and model.text is not None and not cfg.tokenizer:  # as the pretrained decoder was
            decoder.init_from_text_encoder(model.text.transformer)
    if decoder.image_proj[0].in_features != tower.width:
        raise ValueError(f"the decoder expects {decoder.image_proj[0].in_features}-wide image tokens, the tower gives "
                         f"{tower.width}")
    info = {"tower": cfg.tower_init, "decoder": "pretrained" if use_pretrained else "fresh"}
    if cfg.tokenizer:
        info["tokenizer"] = str(cfg.tokenizer)
    return tower, decoder, info


def decoder_positions(decoder: CaptionDecoder) -> int:
    return int(decoder.lm.config.max_position_embeddings)


def train_report_decoder(decoder: CaptionDecoder, tower: ImageTower, tokens: TokenFn, train: ReportSamples,
                         val: ReportSamples, tokenizer, cfg: ReportCfg, max_length: int, seed: int,
                         device: torch.device, progress: bool = True, language: Optional[str] = None,
                         min_new_tokens: int = 0) -> FitResult:
    """Train on ``train``, choose the epoch on ``val`` (``fit_select``; the initial weights are a candidate, and
    each validation records how many distinct reports it wrote); loads the chosen weights into
    ``decoder`` (and ``tower`` when it is trained). Test samples are not an argument."""
    if len(val) == 0:
        raise ValueError("report generation needs validation cases to choose the checkpoint")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_ids = tokenize_reports(tokenizer, train.reports, max_length)
    val_ids = tokenize_reports(tokenizer, val.reports, max_length)
    groups = [{"params": [p for p in decoder.parameters() if p.requires_grad], "lr": cfg.lr}]
    modules: List[nn.Module] = [decoder]
    tower_params = [p for p in tower.parameters() if p.requires_grad]
    if tower_params:
        groups.append({"params": tower_params, "lr": cfg.tower_lr})
        modules.append(tower)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = max(1, steps_per_epoch * cfg.epochs)
    warmup = min(total // 10, 100)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    def train_epoch(epoch: int) -> Dict[str, float]:
        decoder.train()
        if tower_params:
            tower.train()
        perm = torch.randperm(len(train), generator=gen)
        run, n = 0.0, 0
        for start in range(0, len(train), cfg.batch_size):
            b = perm[start:start + cfg.batch_size]
            loss, _ = batch_loss(decoder, tokens, train.image_idx[b], train_ids[b], cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
            opt.step()
            sched.step()
            run, n = run + loss.item() * len(b), n + len(b)
        return {"train_loss": run / max(n, 1)}

    def validate(epoch: int) -> Dict[str, object]:
        tower.eval()
        rec: Dict[str, object] = {"val_loss": mean_loss(decoder, tokens, val, val_ids, cfg.batch_size)}
        if cfg.select_metric != "loss":
            texts = generate_reports(decoder, tokens, val, tokenizer, cfg.batch_size, max_length,
                                     cfg.validation_beams, cfg.length_penalty, cfg.beam_stop, min_new_tokens)
            scores = score_reports(val, texts, use_java=False, meteor=False, language=language)
            rec.update({k: float(v) for k, v in scores.items() if k.startswith(("bleu", "rouge", "cider"))})
            # in the history, not a selection rule: an untrained decoder's distinct garbage would win over
            # a trained one that writes one generic report
            rec["distinct_reports"] = len(set(texts))
        return rec

    metric, mode = ("val_loss", "min") if cfg.select_metric == "loss" else (cfg.select_metric, "max")
    return fit_select(train_epoch, validate, modules=modules, metric=metric, mode=mode, epochs=cfg.epochs,
                      patience=cfg.patience, eval_every=cfg.eval_every, validate_initial=True,
                      desc="report decoder", progress=progress)
