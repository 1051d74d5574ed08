"""The Gradio page of ``fundus-vlp serve``: upload fundus images, edit labels, read probabilities.

The page only lays out what ``analysis.py`` computes; every result is also written as text (the
probability table, the captions) so it can be read, copied and tested, not only looked at.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional, Sequence

from ..runtime.extras import require
from .analysis import (MAX_LABELS, NEIGHBOURS_PER_IMAGE, Analyzer, bar_chart, default_labels, gallery_items,
                       neighbours_html, parse_labels, probability_table_html, status_markdown)
from .captions import caption_grounding, captions_html
from .uploads import (ALLOWED_EXTENSIONS, ALLOWED_FORMATS, DEFAULT_MAX_IMAGES, DEFAULT_MAX_UPLOAD_MB, UploadStore,
                      check_uploads)

_logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # local only unless the user asks for more
DEFAULT_PORT = 7860
# Gradio itself refuses uploads above this multiple of the per-image limit (a guard for the server's disk and
# memory); below it, oversize files reach the app and are named in the page with the limit.
HARD_LIMIT_FACTOR = 4
# label text: a label is a short finding name (the text tower reads a few dozen tokens of it anyway)
MAX_LABEL_CHARS = 100
MAX_LABELS_TEXT = MAX_LABELS * (MAX_LABEL_CHARS + 2)

CSS = """
#probabilities { border-collapse: collapse; font-size: 0.9em; margin-top: 0.5em; }
#probabilities caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
#probabilities th, #probabilities td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
#probabilities td:first-child, #probabilities td:nth-child(2) { text-align: left; }
#probabilities td.best { font-weight: 700; }
#probabilities th, #probabilities td { white-space: nowrap; }
/* a wide table scrolls sideways inside its box instead of losing columns at the page edge */
#probabilities-scroll { overflow-x: auto; max-width: 100%; }
#probabilities-caption { font-weight: 600; margin: 0.5em 0 0.3em 0; }
/* gallery captions sit under their thumbnail and wrap, instead of being cut with an ellipsis over the image */
#neighbours .thumbnail-item { aspect-ratio: auto !important; height: auto !important; overflow: visible !important; }
#neighbours .thumbnail-item > img { height: 120px !important; }
#neighbours .caption-label { position: static !important; white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; max-width: none !important; opacity: 1 !important; }
#captions li.low-confidence { color: #777; }
"""


def _gradio():
    """Gradio (the ``app`` extra), imported with no usage statistics or update checks: the app runs offline and
    sends nothing anywhere."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    return require("gradio", "app", "the web app")


def _short(model_dir: Path) -> str:
    """The folder's last two names: exported models are often all called "model"."""
    return "/".join(model_dir.resolve().parts[-2:])


def label_text_problem(text: str) -> Optional[str]:
    """Why the label text is refused before any model call, or None."""
    if len(text or "") > MAX_LABELS_TEXT:
        return f"the label text has {len(text)} characters: at most {MAX_LABELS_TEXT}"
    long = [label for label in parse_labels(text) if len(label) > MAX_LABEL_CHARS]
    if long:
        return f"labels are at most {MAX_LABEL_CHARS} characters each; too long: {long[0][:40]}..."
    return None


def _scrolling_table(result) -> str:
    """The probability table in a box that scrolls sideways (every label column stays reachable in a narrow
    window), with its caption above the box so that it wraps instead of scrolling away."""
    table = probability_table_html(result)
    if not table:
        return ""
    caption = re.search(r"<caption>(.*?)</caption>", table, re.S)
    title = f'<p id="probabilities-caption">{caption.group(1)}</p>' if caption else ""
    return f'{title}<div id="probabilities-scroll">{table.replace(caption.group(0), "") if caption else table}</div>'


def build_app(analyzer: Analyzer, labels: Optional[Sequence[str]] = None,
              max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_images: int = DEFAULT_MAX_IMAGES,
              store: Optional[UploadStore] = None):
    """The page. Uploads land in ``store`` (a private folder) and are deleted after every analysis."""
    store = store or UploadStore()
    os.environ["GRADIO_TEMP_DIR"] = str(store.root)  # where the framework writes uploads (read per upload)
    gr = _gradio()

    labels = list(labels) if labels else default_labels(analyzer.model_dir)
    model = analyzer.model
    has_index = analyzer.index is not None
    what = ["zero-shot probabilities with and without knowledge descriptions"]
    if analyzer.has_decoder:
        what.append("a generated caption")
    if has_index:
        what.append(f"the nearest of {len(analyzer.index)} elite examples")

    def analyse(files: Optional[List[str]], labels_text: str, multilabel: bool):
        try:
            return _analyse(files, labels_text, multilabel) + (None,)  # the uploads are gone: clear the box
        finally:
            store.discard(files)  # accepted and rejected alike

    def _analyse(files: Optional[List[str]], labels_text: str, multilabel: bool):
        problem = label_text_problem(labels_text)
        if problem:
            return f"**Nothing to show:** {problem}.", None, "", "", [], ""
        uploads = check_uploads(files, max_upload_mb, max_images)
        try:
            result = analyzer.run(uploads, parse_labels(labels_text), bool(multilabel))
            grounding = (caption_grounding(analyzer.model, uploads.images, result.captions, analyzer.device)
                         if result.captions else None)
        except (ValueError, RuntimeError) as exc:  # shown in the page; the server keeps serving
            _logger.exception("analysis failed")
            return f"**Could not analyse the images:** {exc}", None, "", "", [], ""
        note = analyzer.index_note
        return (status_markdown(result, note), bar_chart(result, uploads.images), _scrolling_table(result),
                captions_html(result.names, result.captions, grounding), gallery_items(result, analyzer.index),
                neighbours_html(result, analyzer.index))

    # outputs the framework writes beside the uploads (gallery thumbnails, charts): dropped after 10 minutes
    with gr.Blocks(title="fundus-vlp", delete_cache=(600, 600)) as page:
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
                                        max_length=MAX_LABELS_TEXT, elem_id="labels",
                                        label=f"Labels (one per line, or comma-separated; at most {MAX_LABELS}, "
                                              f"{MAX_LABEL_CHARS} characters each)")
                multilabel = gr.Checkbox(value=False, label="multi-label (each label scored alone, uncalibrated)",
                                         elem_id="multilabel")
                button = gr.Button("Classify", variant="primary", elem_id="classify")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=3):
                chart = gr.Plot(label="Zero-shot probabilities", show_label=False, format="png", elem_id="chart")
                table = gr.HTML(elem_id="table")
                captions = gr.HTML(elem_id="captions-box", visible=analyzer.has_decoder)
                gallery = gr.Gallery(label="Nearest elite examples (image retrieval)", columns=NEIGHBOURS_PER_IMAGE,
                                     height="auto", object_fit="contain", visible=has_index, elem_id="neighbours")
                neighbours = gr.HTML(elem_id="neighbours-box", visible=has_index)
        button.click(analyse, inputs=[files, labels_box, multilabel],
                     outputs=[status, chart, table, captions, gallery, neighbours, files], concurrency_limit=1)
    return page


def launch(model_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
           labels: Optional[Sequence[str]] = None, device: str = "cpu",
           max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_images: int = DEFAULT_MAX_IMAGES,
           block: bool = True):
    """Load the model folder and serve the page; returns the Gradio app when ``block`` is False."""
    from ..inference.loading import load_model
    from ..runtime.device import resolve_device

    _gradio()  # before the model is loaded: a missing extra is the first thing said
    device = str(resolve_device(device))
    model = load_model(model_dir, device=device).model
    analyzer = Analyzer(model, model_dir, device=device)
    if analyzer.index_note:
        _logger.warning("%s: %s", model_dir, analyzer.index_note)
    store = UploadStore()  # removed at exit, whatever else is left in it (e.g. uploads refused mid-transfer)
    page = build_app(analyzer, labels, max_upload_mb, max_images, store)
    page.queue(default_concurrency_limit=1)
    if block and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped server still runs its cleanup
    try:
        page.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
                    max_file_size=int(max_upload_mb * 1e6 * HARD_LIMIT_FACTOR), footer_links=[], run_history=False,
                    mcp_server=False, ssr_mode=False, prevent_thread_lock=not block, quiet=False, css=CSS)
    finally:
        if block:
            store.close()
    return page
