"""Figure captions: find them by their figure label, split bilingual blocks, cut multi-panel captions.

A caption starts with a label (``Fig. 3-12``, ``Figure 3.12``, ``FIGURE 3-12``, ``图3-12``, ``图 3-12``);
the number, with ``.``/dashes normalised to ``-``, is the key that joins a figure's English and Chinese
captions. Panel markers are ``A.``, ``A．``, ``A：``, ``A:``, ``A)``, ``(a)``, ``（A）``; a marker only counts
as part of a run ``A, B, C, ...`` in order, which keeps "vitamin A." or "Dr. B." out of the split.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

_NUMBER = r"(\d+(?:\s*[-‐–—.．]\s*\d+)*)"
LABEL_RE = re.compile(r"(?:(?i:fig(?:ure)?)\s*\.?|图)\s*" + _NUMBER + r"(?![\d])")
_AFTER_LABEL = re.compile(r"^[\s.．:：,，、　]*")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SEPARATORS = "\\s。；;，,.．:：)）\\]"
PANEL_RE = re.compile(
    rf"(?<![^{_SEPARATORS}])"  # at the start or after a separator
    r"(?:\(([A-Za-z])\)|（([A-Za-z])）|([A-Z])[.．:：)）])"
    r"(?=\s|$|[^\x00-\x7f]|[A-Z(\"'])"
)


def normalise_number(number: str) -> str:
    """``3.12`` / ``3–12`` / ``3 - 12`` -> ``3-12``."""
    return re.sub(r"\s*[-‐–—.．]\s*", "-", number.strip())


def is_chinese(text: str) -> bool:
    letters = [c for c in text if not c.isspace() and not c.isdigit()]
    return bool(letters) and sum(bool(_CJK.match(c)) for c in letters) / len(letters) > 0.15


@dataclass
class CaptionText:
    """One caption in one language, its label removed."""

    figure: str  # normalised figure number, e.g. "3-12"
    text: str
    language: str  # "en" or "zh"


def parse_caption_block(block: str) -> List[CaptionText]:
    """The captions a text block starts with; [] when the block does not start with a figure label.

    A block may hold the Chinese and the English caption of one figure one after the other
    (``图3-12 ... Fig. 3-12 ...``): it is cut at every label that repeats the first label's number, so a
    reference to another figure inside the text (``see Fig. 3-11``) does not cut it.
    """
    text = " ".join(block.split())
    first = LABEL_RE.match(text)
    if not first:
        return []
    number = normalise_number(first.group(1))
    cuts = [first] + [m for m in LABEL_RE.finditer(text, first.end()) if normalise_number(m.group(1)) == number]
    out = []
    for i, m in enumerate(cuts):
        end = cuts[i + 1].start() if i + 1 < len(cuts) else len(text)
        body = _AFTER_LABEL.sub("", text[m.end():end]).strip()
        if body:
            out.append(CaptionText(number, body, "zh" if is_chinese(body) else "en"))
    return out


@dataclass
class PanelSplit:
    lead_in: str  # the part before the first marker (the diagnosis): kept with every panel
    panels: Dict[str, str] = field(default_factory=dict)  # "A" -> that panel's own text

    def caption_for(self, letter: str, chinese: bool = False) -> str:
        own = self.panels[letter]
        if not self.lead_in:
            return own
        if chinese:
            lead = self.lead_in if self.lead_in[-1] in "。：:；;，," else self.lead_in + "。"
            return lead + own
        lead = self.lead_in if self.lead_in[-1] in ".:;,!?" else self.lead_in + "."
        return f"{lead} {own}"


def _marker_chain(text: str) -> List[Tuple[str, int, int]]:
    """(letter, start, end) of the markers A, B, C, ... in order; [] when fewer than two."""
    found = []
    for m in PANEL_RE.finditer(text):
        found.append(((m.group(1) or m.group(2) or m.group(3)).upper(), m.start(), m.end()))
    chain: List[Tuple[str, int, int]] = []
    for letter, start, end in found:
        expected = chr(ord("A") + len(chain))
        if letter == expected:
            chain.append((letter, start, end))
    return chain if len(chain) >= 2 else []


def split_panels(caption: str) -> Optional[PanelSplit]:
    """Cut a multi-panel caption at its markers; None when it has no run of at least two markers."""
    chain = _marker_chain(caption)
    if not chain:
        return None
    split = PanelSplit(lead_in=caption[:chain[0][1]].strip())
    for i, (letter, _, end) in enumerate(chain):
        stop = chain[i + 1][1] if i + 1 < len(chain) else len(caption)
        split.panels[letter] = caption[end:stop].strip().rstrip(";；,，").strip()
    return split
