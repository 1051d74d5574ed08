"""``review.html``: one card per pair (image, captions, modality, confidence) with an accept checkbox and a
modality menu; "Export accepted CSV" downloads the accepted pairs, with corrected modalities, in the
elite file format. Self-contained (inline CSS/JS, images by relative path): works offline from disk.
Decisions are kept in the browser's localStorage, so a review can be spread over several sittings.
"""
from __future__ import annotations

import html
import json
from typing import Dict, List, Sequence

from .modality import MODALITIES

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI','Noto Sans CJK SC','PingFang SC','Microsoft YaHei',
 'WenQuanYi Zen Hei',sans-serif;margin:0;background:#f4f5f7;color:#222}
header{position:sticky;top:0;background:#20303f;color:#fff;padding:10px 16px;display:flex;gap:12px;
 align-items:center;flex-wrap:wrap;z-index:1}
header h1{font-size:17px;margin:0 12px 0 0}
header button{font-size:14px;padding:5px 10px;border-radius:4px;border:0;cursor:pointer}
header .primary{background:#2e9b5f;color:#fff}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px;padding:12px}
.pair{background:#fff;border-radius:6px;padding:10px;box-shadow:0 1px 3px rgba(0,0,0,.15);
 display:flex;flex-direction:column;gap:6px;border-left:5px solid #2e9b5f}
.pair.rejected{opacity:.45;border-left-color:#b33}
.pair img{width:100%;max-height:260px;object-fit:contain;background:#111;border-radius:4px}
.pair .caption{font-size:13px;line-height:1.35}
.pair .zh{font-size:13px;color:#345}
.meta{font-size:12px;color:#666;display:flex;gap:8px;flex-wrap:wrap;align-items:center}
.conf{font-weight:600}.conf.low{color:#b33}
label.accept{font-weight:600;font-size:14px}
"""

_JS = r"""
const COLUMNS = JSON.parse(document.getElementById('columns').textContent);
const PAIRS = JSON.parse(document.getElementById('pairs').textContent);
const STORE = 'fundus-vlp-review:' + location.pathname;

function cards() { return Array.from(document.querySelectorAll('.pair')); }

function refresh() {
  let accepted = 0;
  for (const card of cards()) {
    const on = card.querySelector('input.accept').checked;
    card.classList.toggle('rejected', !on);
    if (on) accepted++;
  }
  document.getElementById('count').textContent = accepted + ' of ' + PAIRS.length + ' accepted';
  const state = {};
  for (const card of cards()) {
    state[card.dataset.image] = [card.querySelector('input.accept').checked, card.querySelector('select').value];
  }
  try { localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) { /* storage may be off for file:// */ }
}

function restore() {
  let state = null;
  try { state = JSON.parse(localStorage.getItem(STORE) || 'null'); } catch (e) { state = null; }
  if (!state) return;
  for (const card of cards()) {
    const saved = state[card.dataset.image];
    if (saved) {
      card.querySelector('input.accept').checked = saved[0];
      card.querySelector('select').value = saved[1];
    }
  }
}

function setAll(on) { for (const card of cards()) card.querySelector('input.accept').checked = on; refresh(); }

function csvCell(value) {
  const text = value === null || value === undefined ? '' : String(value);
  return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}

function acceptedRows() {
  const rows = [];
  for (const card of cards()) {
    if (!card.querySelector('input.accept').checked) continue;
    const row = Object.assign({}, PAIRS[Number(card.dataset.index)]);
    row.modality = card.querySelector('select').value;
    rows.push(row);
  }
  return rows;
}

function toCsv(rows) {
  const lines = [COLUMNS.map(csvCell).join(',')];
  for (const row of rows) lines.push(COLUMNS.map(c => csvCell(row[c])).join(','));
  return '\ufeff' + lines.join('\r\n') + '\r\n';
}

function exportCsv() {
  const blob = new Blob([toCsv(acceptedRows())], {type: 'text/csv;charset=utf-8'});
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = 'elite_reviewed.csv';
  document.body.appendChild(link);
  link.click();
  link.remove();
}

document.addEventListener('change', refresh);
restore();
refresh();
"""


def _json_for_script(value) -> str:
    """JSON that cannot close the <script> element it sits in."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _card(i: int, pair: Dict, threshold: float, modalities: Sequence[str]) -> str:
    e = lambda v: html.escape(str(v if v is not None else ""), quote=True)  # noqa: E731
    conf = float(pair.get("confidence") or 0.0)
    low = conf < threshold
    options = "".join(f'<option value="{m}"{" selected" if m == pair.get("modality") else ""}>{m}</option>'
                      for m in modalities)
    panel = f" {e(pair['panel'])}" if pair.get("panel") else ""
    zh = f'<div class="zh" lang="zh">{e(pair["caption_zh"])}</div>' if pair.get("caption_zh") and \
        pair.get("caption_zh") != pair.get("caption") else ""
    return (f'<div class="pair" data-index="{i}" data-image="{e(pair["image"])}">'
            f'<img src="{e(pair["image"])}" alt="{e(pair["image"])}" loading="lazy">'
            f'<label class="accept"><input type="checkbox" class="accept"{"" if low else " checked"}> accept</label>'
            f'<div class="caption">{e(pair["caption"])}</div>{zh}'
            f'<div class="meta"><select title="modality">{options}</select>'
            f'<span class="conf{" low" if low else ""}">confidence {conf:.2f}</span>'
            f'<span>{e(pair["source"])} p.{e(pair["page"])} fig. {e(pair["figure"])}{panel}</span></div></div>')


def write_review_page(pairs: List[Dict], columns: Sequence[str], threshold: float, n_rejected: int = 0,
                      modalities: Sequence[str] = MODALITIES) -> str:
    """The HTML text of the review page for ``pairs`` (rows of the elite file)."""
    clean = [{c: ("" if p.get(c) is None or (isinstance(p.get(c), float) and p.get(c) != p.get(c)) else p.get(c))
              for c in columns} for p in pairs]
    cards = "\n".join(_card(i, p, threshold, modalities) for i, p in enumerate(clean))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fundus-vlp elite review</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<header><h1>Elite pairs review</h1><span id="count">{len(clean)} pairs</span>
<span>({n_rejected} figures rejected automatically: rejected.csv)</span>
<button onclick="setAll(true)">Accept all</button><button onclick="setAll(false)">Reject all</button>
<button class="primary" onclick="exportCsv()">Export accepted CSV</button></header>
<main id="grid">
{cards}
</main>
<script type="application/json" id="columns">{_json_for_script(list(columns))}</script>
<script type="application/json" id="pairs">{_json_for_script(clean)}</script>
<script>{_JS}</script>
</body></html>
"""
