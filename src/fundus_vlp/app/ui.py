"""The Gradio page of ``fundus-vlp serve``: upload fundus images, edit labels, read probabilities.

The page only lays out what ``analysis.py`` computes; every result is also written as text (the
probability table, the captions) so it can be read, copied and tested, not only looked at.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence

from .analysis import (NEIGHBOURS_PER_IMAGE, Analyzer, bar_chart, captions_html, default_labels, gallery_items,
                       neighbours_html, parse_labels, probability_table_html, status_markdown)
from .uploads import ALLOWED_EXTENSIONS, ALLOWED_FORMATS, DEFAULT_MAX_IMAGES, DEFAULT_MAX_UPLOAD_MB, check_uploads

_logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # local only unless the user asks for more
DEFAULT_PORT = 7860
# Gradio itself refuses uploads above this multiple of the per-image limit (a guard for the server's disk and
# memory); below it, oversize files reach the app and are named in the page with the limit.
HARD_LIMIT_FACTOR = 4

CSS = """
#probabilities { border-collapse: collapse; font-size: 0.9em; margin-top: 0.5em; }
#probabilities caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
#probabilities th, #probabilities td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
#probabilities td:first-child, #probabilities td:nth-child(2) { text-align: left; }
#probabilities td.best { font-weight: 700; }
"""


def _quiet_gradio() -> None:
    """No usage statistics or update checks: the app runs offline and sends nothing anywhere."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def _short(model_dir: Path) -> str:
    """The folder's last two names: exported models are often all called "model"."""
    return "/".join(model_dir.resolve().parts[-2:])


def build_app(analyzer: Analyzer, labels: Optional[Sequence[str]] = None,
              max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_images: int = DEFAULT_MAX_IMAGES):
    _quiet_gradio()
    import gradio as gr

    labels = list(labels) if labels else default_labels(analyzer.model_dir)
    model = analyzer.model
    has_index = analyzer.index is not None
    what = ["zero-shot probabilities with and without knowledge descriptions"]
    if analyzer.has_decoder:
        what.append("a generated caption")
    if has_index:
        what.append(f"the nearest of {len(analyzer.index)} elite examples")

    def analyse(files: Optional[List[str]], labels_text: str, multilabel: bool):
        uploads = check_uploads(files, max_upload_mb, max_images)
        try:
            result = analyzer.run(uploads, parse_labels(labels_text), bool(multilabel))
        except (ValueError, RuntimeError) as exc:  # shown in the page; the server keeps serving
            _logger.exception("analysis failed")
            return f"**Could not analyse the images:** {exc}", None, "", "", [], ""
        note = analyzer.index_note
        return (status_markdown(result, note), bar_chart(result, uploads.images), probability_table_html(result),
                captions_html(result), gallery_items(result, analyzer.index),
                neighbours_html(result, analyzer.index))

    with gr.Blocks(title="fundus-vlp") as page:
        gr.Markdown(
            f"## fundus-vlp · `{_short(analyzer.model_dir)}` ({model.cfg.name})\n"
            f"Upload fundus photographs and edit the labels to see {', '.join(what)}. "
            "Research use only: not a medical device, not for clinical decisions.")
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label=f"Fundus images ({', '.join(ALLOWED_FORMATS.values())}; at most "
                                      f"{max_upload_mb:g} MB each, {max_images} per request)",
                                file_count="multiple", file_types=list(ALLOWED_EXTENSIONS), type="filepath",
                                elem_id="uploads")
                labels_box = gr.Textbox(value="\n".join(labels), lines=min(max(len(labels), 4), 10),
                                        label="Labels (one per line, or comma-separated)", elem_id="labels")
                multilabel = gr.Checkbox(value=False, label="multi-label (each label scored alone, uncalibrated)",
                                         elem_id="multilabel")
                button = gr.Button("Classify", variant="primary", elem_id="classify")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=3):
                chart = gr.Plot(label="Zero-shot probabilities", show_label=False, format="png", elem_id="chart")
                table = gr.HTML(elem_id="table")
                captions = gr.HTML(elem_id="captions-box", visible=analyzer.has_decoder)
                gallery = gr.Gallery(label="Nearest elite examples (image retrieval)", columns=NEIGHBOURS_PER_IMAGE,
                                     height=300, object_fit="contain", visible=has_index, elem_id="neighbours")
                neighbours = gr.HTML(elem_id="neighbours-box", visible=has_index)
        button.click(analyse, inputs=[files, labels_box, multilabel],
                     outputs=[status, chart, table, captions, gallery, neighbours], concurrency_limit=1)
    return page


def launch(model_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
           labels: Optional[Sequence[str]] = None, device: str = "cpu",
           max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_images: int = DEFAULT_MAX_IMAGES,
           block: bool = True):
    """Load the model folder and serve the page; returns the Gradio app when ``block`` is False."""
    from ..inference.loading import load_model
    from ..runtime.device import resolve_device

    device = str(resolve_device(device))
    model = load_model(model_dir, device=device).model
    analyzer = Analyzer(model, model_dir, device=device)
    if analyzer.index_note:
        _logger.warning("%s: %s", model_dir, analyzer.index_note)
    page = build_app(analyzer, labels, max_upload_mb, max_images)
    page.queue(default_concurrency_limit=1)
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
                max_file_size=int(max_upload_mb * 1e6 * HARD_LIMIT_FACTOR), footer_links=[], run_history=False,
                mcp_server=False, ssr_mode=False, prevent_thread_lock=not block, quiet=False, css=CSS)
    return page
