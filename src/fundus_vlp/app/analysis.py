"""What the web app computes for a set of uploaded images, kept apart from the page so it is testable alone.

For every accepted image: zero-shot probabilities over the user's labels twice — with the knowledge base's
descriptions in each label's prompt ensemble and with the bare label names — a generated caption when the
model has a caption decoder, and the nearest elite examples when the model folder carries an elite index.
Probabilities and embeddings come from the inference unit (``fundus_vlp.inference``: ``predict``,
``embed_images``) on the uploaded files themselves, so an upload gets the probabilities ``predict`` and
evaluation give the same file. A calibration fitted with ``predict --calibrate-on ... --save-calibration``
and saved in the model folder as ``calibration.json`` is applied to the knowledge prompts when the
labels and the mode are the ones it was fitted for; otherwise the page says the numbers are uncalibrated.
"""
from __future__ import annotations

import html
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
import torch

from ..constants import MODEL_CARD_NAME
from ..inference.calibration import Calibration
from ..inference.embedding import embed_images
from ..inference.inputs import decode
from ..inference.pipeline import predict
from .elite_index import EliteIndex, load_elite_index, weights_fingerprint
from .uploads import CheckedUploads

# Labels offered when the model card names none: common screening findings, each a knowledge-base entry,
# so the "with knowledge" prompts differ from the bare names for every default.
DEFAULT_LABELS = ("normal", "diabetic retinopathy", "glaucoma", "cataract", "age related macular degeneration",
                  "pathologic myopia")
MAX_LABELS = 40
NEIGHBOURS_PER_IMAGE = 3
PROMPT_SETS = (("with knowledge", True), ("names only", False))  # (row label, domain_knowledge)
CALIBRATION_NAME = "calibration.json"  # optional, in the model folder


def card_labels(model_dir: str | Path) -> Optional[List[str]]:
    """``labels:`` from the YAML front matter of the folder's model card, or None when it names none."""
    import yaml

    card = Path(model_dir) / MODEL_CARD_NAME
    if not card.is_file():
        return None
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", card.read_text(encoding="utf-8"), re.S)
    if not match:
        return None
    try:
        front = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return None
    labels = front.get("labels") if isinstance(front, dict) else None
    if not isinstance(labels, list):
        return None
    labels = [str(x).strip() for x in labels if str(x).strip()]
    return labels or None


def default_labels(model_dir: str | Path) -> List[str]:
    return card_labels(model_dir) or list(DEFAULT_LABELS)


def parse_labels(text: str) -> List[str]:
    """One label per line or comma-separated; blanks dropped, repeats kept once, order kept."""
    parts = [p.strip() for line in str(text or "").splitlines() for p in line.split(",")]
    return list(dict.fromkeys(p for p in parts if p))


def label_problem(labels: Sequence[str], multilabel: bool) -> Optional[str]:
    """Why these labels cannot be scored, or None."""
    if len(labels) > MAX_LABELS:
        return f"{len(labels)} labels: at most {MAX_LABELS} per request"
    if len(labels) < (1 if multilabel else 2):
        return ("enter at least two labels (probabilities are shared among them), or tick multi-label "
                "for independent per-label probabilities")
    return None


@dataclass
class Analysis:
    names: List[str] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    multilabel: bool = False
    probabilities: Dict[str, pd.DataFrame] = field(default_factory=dict)  # prompt set -> images × labels
    captions: Optional[List[str]] = None
    neighbours: Optional[List[List[Tuple[float, int]]]] = None  # per image: (cosine, index entry)
    rejected: List[Tuple[str, str]] = field(default_factory=list)
    problem: Optional[str] = None  # nothing was computed, and why
    calibrated: bool = False  # the "with knowledge" probabilities went through the folder's calibration
    calibration_note: Optional[str] = None


class Analyzer:
    """A loaded model folder and what the app does with it."""

    def __init__(self, model, model_dir: str | Path, device: str = "cpu",
                 calibration: Optional[Calibration | str | Path] = None, knowledge: str = "fundus_en"):
        self.model, self.model_dir, self.device, self.knowledge = model, Path(model_dir), device, knowledge
        self.index, self.index_note = self._load_index()
        if calibration is None and (self.model_dir / CALIBRATION_NAME).is_file():
            calibration = self.model_dir / CALIBRATION_NAME
        self.calibration = Calibration.load(calibration) if isinstance(calibration, (str, Path)) else calibration

    @property
    def has_decoder(self) -> bool:
        return getattr(self.model, "decoder", None) is not None

    def _load_index(self) -> Tuple[Optional[EliteIndex], Optional[str]]:
        index = load_elite_index(self.model_dir)
        if index is None:
            return None, None
        if index.model_fingerprint != weights_fingerprint(self.model_dir):
            return None, ("the elite index in this folder was built with other weights; rebuild it with "
                          "`fundus-vlp index` to see nearest examples")
        return index, None

    # -- the model calls ------------------------------------------------------------------------------
    def calibration_for(self, labels: Sequence[str], multilabel: bool) -> Tuple[Optional[Calibration], Optional[str]]:
        """The folder's calibration when it was fitted for these labels and this mode, and a note otherwise."""
        cal = self.calibration
        if cal is None:
            return None, None
        if list(labels) != cal.labels or bool(multilabel) != cal.multilabel:
            kind = "multi-label" if cal.multilabel else "single-label"
            return None, (f"{CALIBRATION_NAME} was fitted for the {kind} labels {', '.join(cal.labels)}; "
                          "these probabilities are uncalibrated")
        return cal, f"calibrated with {CALIBRATION_NAME}: " + cal.summary().splitlines()[0]

    def classify(self, paths: Sequence[Path], labels: Sequence[str], domain_knowledge: bool, multilabel: bool,
                 calibration: Optional[Calibration] = None) -> pd.DataFrame:
        knowledge = self.knowledge if domain_knowledge else False
        return predict(self.model, list(paths), list(labels), multilabel=multilabel, knowledge=knowledge,
                       calibration=calibration, device=self.device).probabilities

    @torch.no_grad()
    def caption(self, paths: Sequence[Path]) -> List[str]:
        from ..data.transforms import build_transform

        preprocess = build_transform(self.model.cfg.preprocess, train=False)
        batch = torch.stack([preprocess(decode(p, preprocess)) for p in paths]).to(self.device)
        ids = self.model.generate(batch, max_length=None, num_beams=1)
        return [text.strip() for text in self.model.tokenizer.batch_decode(ids)]

    def nearest(self, paths: Sequence[Path], k: int = NEIGHBOURS_PER_IMAGE) -> List[List[Tuple[float, int]]]:
        queries = embed_images(self.model, list(paths), device=self.device)
        scores, indices = self.index.nearest(queries, k)
        return [[(float(s), int(i)) for s, i in zip(srow, irow)] for srow, irow in zip(scores, indices)]

    # -- one request ---------------------------------------------------------------------------------
    def run(self, uploads: CheckedUploads, labels: Sequence[str], multilabel: bool = False) -> Analysis:
        out = Analysis(names=list(uploads.names), labels=list(labels), multilabel=multilabel,
                       rejected=list(uploads.rejected))
        out.problem = label_problem(labels, multilabel)
        if out.problem is None and not uploads.images:
            out.problem = "upload at least one fundus image" if not uploads.rejected else "no usable image"
        if out.problem is not None:
            return out
        calibration, out.calibration_note = self.calibration_for(labels, multilabel)
        out.calibrated = calibration is not None
        for key, knowledge in PROMPT_SETS:
            frame = self.classify(uploads.paths, labels, knowledge, multilabel, calibration if knowledge else None)
            out.probabilities[key] = frame.set_axis(out.names, axis=0)
        if self.has_decoder:
            out.captions = self.caption(uploads.paths)
        if self.index is not None:
            out.neighbours = self.nearest(uploads.paths)
        return out


# -- presentation (plain HTML / matplotlib, so the page and the tests read the same numbers) ---------------
def probability_table_html(analysis: Analysis, decimals: int = 3) -> str:
    """A table with one row per (image, prompt set) and one column per label; each cell carries
    ``data-image``, ``data-prompts`` and ``data-label`` so it can be found without parsing the layout."""
    if not analysis.probabilities:
        return ""
    esc = html.escape
    head = "".join(f"<th>{esc(label)}</th>" for label in analysis.labels)
    rows = []
    for name in analysis.names:
        for key, _ in PROMPT_SETS:
            values = analysis.probabilities[key].loc[name]
            best = values.idxmax()
            cells = "".join(
                f'<td data-image="{esc(name)}" data-prompts="{esc(key)}" data-label="{esc(label)}"'
                f'{" class=best" if label == best else ""}>{values[label]:.{decimals}f}</td>'
                for label in analysis.labels)
            rows.append(f"<tr><td>{esc(name)}</td><td>{esc(key)}</td>{cells}</tr>")
    kind = ("multi-label: each label scored alone against its negation" if analysis.multilabel
            else "single-label: probabilities over the labels sum to 1")
    kind += "; knowledge prompts calibrated" if analysis.calibrated else (
        "; uncalibrated" if analysis.multilabel else "")
    return (f'<table id="probabilities" class="fundus-probabilities"><caption>Zero-shot probabilities ({kind})'
            f"</caption><thead><tr><th>image</th><th>prompts</th>{head}</tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table>")


def neighbours_html(analysis: Analysis, index: Optional[EliteIndex]) -> str:
    """The nearest elite examples as text: full captions and similarities (the gallery shows the images)."""
    if not analysis.neighbours or index is None:
        return ""
    esc = html.escape
    items = []
    for name, hits in zip(analysis.names, analysis.neighbours):
        for rank, (score, i) in enumerate(hits, 1):
            items.append(f'<li data-image="{esc(name)}" data-rank="{rank}"><b>{esc(name)}</b> #{rank} '
                         f'(cosine {score:.2f}, {esc(index.entries[i]["image"])}): {esc(index.entries[i]["caption"])}</li>')
    return f'<div id="neighbour-captions"><h3>Nearest elite examples</h3><ol>{"".join(items)}</ol></div>'


def status_markdown(analysis: Analysis, index_note: Optional[str] = None) -> str:
    lines = []
    if analysis.problem:
        lines.append(f"**Nothing to show:** {analysis.problem}.")
    for name, reason in analysis.rejected:
        lines.append(f"**{name}** was not analysed: {reason}.")
    if index_note:
        lines.append(f"Note: {index_note}.")
    if not lines and analysis.names:
        lines.append(f"Analysed {len(analysis.names)} image(s) with {len(analysis.labels)} labels.")
    if analysis.calibration_note and analysis.probabilities:
        lines.append(f"Note: {analysis.calibration_note}.")
    return "\n\n".join(lines)


def bar_chart(analysis: Analysis, images: Optional[Sequence[torch.Tensor]] = None):
    """One row per image: its thumbnail (when given) and grouped horizontal bars, with / without knowledge."""
    from matplotlib.figure import Figure

    if not analysis.probabilities:
        return None
    n, k = len(analysis.names), len(analysis.labels)
    row_h = max(1.6, 0.42 * k + 0.8)
    fig = Figure(figsize=(9, row_h * n), dpi=100, layout="constrained")
    grid = fig.add_gridspec(n, 2, width_ratios=[1, 3.2])
    colours = {"with knowledge": "#2a6fb0", "names only": "#e49b3a"}
    positions = torch.arange(k).float()
    height = 0.38
    for r, name in enumerate(analysis.names):
        if images is not None:
            thumb = fig.add_subplot(grid[r, 0])
            thumb.imshow(images[r].permute(1, 2, 0).clamp(0, 1).numpy())
            thumb.set_title(textwrap.fill(name, 22), fontsize=9)  # wrapped, never cut by the column
            thumb.axis("off")
        ax = fig.add_subplot(grid[r, 1] if images is not None else grid[r, :])
        for j, (key, _) in enumerate(PROMPT_SETS):
            values = analysis.probabilities[key].loc[name, analysis.labels].to_numpy()
            ax.barh(positions + (j - 0.5) * height, values, height=height, color=colours[key], label=key)
        ax.set_yticks(positions.tolist(), [textwrap.fill(label, 28) for label in analysis.labels], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        if r == 0:
            ax.legend(fontsize=8, loc="lower right")
    return fig


def gallery_items(analysis: Analysis, index: Optional[EliteIndex]) -> List[Tuple[object, str]]:
    """(thumbnail, caption) pairs of the nearest elite examples, for every analysed image in turn."""
    if not analysis.neighbours or index is None:
        return []
    items = []
    for name, hits in zip(analysis.names, analysis.neighbours):
        for rank, (score, i) in enumerate(hits, 1):
            entry = index.entries[i]
            image = index.thumbnail(i)
            if image is None:
                image = _thumbnail_from_disk(Path(index.image_root) / entry["image"])
            if image is not None:
                items.append((image, f"{name} · #{rank} (cos {score:.2f}): {entry['caption']}"))
    return items


def _thumbnail_from_disk(path: Path, size: int = 160):
    """An index built without thumbnails shows the original image when it is still where it was indexed."""
    from ..data.images import BadImageError, load_image
    from .elite_index import make_thumbnail

    try:
        return make_thumbnail(load_image(path), size).numpy()
    except BadImageError:
        return None
