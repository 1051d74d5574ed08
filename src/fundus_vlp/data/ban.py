"""The unseen-class protocol: remove every trace of held-out conditions from pre-training data.

The official filter drops a categorical row only when a category *equals* a banned string and never
looks at the elite captions, so "unseen" ODIR200x3 / 05_20x3 classes leak through "pathologic myopia",
"lamellar macular hole", "high myopia" and dozens of MM-Retinal captions
(docs/reference.md#unseen-class-ban-list).
:class:`BanList` matches **normalised** text (case, hyphens, punctuation) by **substring**, so
"myop" also catches OCR run-ons such as "hypermyopia" or "tomacular hole" found in the MM-Retinal captions;
``word_start=True`` only matches at word starts (keeps "chorioretinitis" when "retinitis" is banned, the
over-removal of FLAIR's substring filter). It optionally adds the knowledge base's synonyms of each term, and
applies the same rule to categories, captions and the text corpus. ``exact=True`` reproduces the official
exact-equality filter. Each filter returns the kept data and a :class:`BanReport` of what was removed
(source, row, matched term, excerpt), with per-term mention counts.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pandas as pd

OFFICIAL_BANNED = ("myopia", "cataract", "macular hole", "retinitis pigmentosa", "myopic", "myope", "myop",
                   "retinitis")  # the official default list


def normalise_text(text: str) -> str:
    """Lower case; hyphens, underscores and punctuation become spaces; single spaces.

    CJK ideographs are kept (Chinese terms and captions are matched too). Chinese is written without
    spaces, so a Chinese term matches anywhere in a run of characters: substring matching needs no word
    boundaries there, and ``word_start`` never blocks a match after another ideograph."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


# CJK Unified Ideographs (+ extension A and the compatibility block); CJK punctuation becomes a space
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_NON_WORD = re.compile(rf"[^0-9a-z{_CJK}]+")


@dataclass
class BanReport:
    """What a filter removed; ``removed`` lists one entry per removed item."""

    kind: str
    terms: List[str]
    exact: bool
    n_total: int = 0
    n_removed: int = 0
    by_term: Dict[str, int] = field(default_factory=dict)  # removed items, by the first term that matched
    mentions: Dict[str, int] = field(default_factory=dict)  # removed items mentioning each term (overlapping)
    removed: List[Dict[str, object]] = field(default_factory=list)

    @property
    def n_kept(self) -> int:
        return self.n_total - self.n_removed

    def to_dict(self) -> Dict[str, object]:
        return {**asdict(self), "n_kept": self.n_kept}

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        return path

    def summary(self) -> str:
        terms = ", ".join(f"{t}: {n}" for t, n in sorted(self.by_term.items(), key=lambda kv: -kv[1]))
        return (f"ban list ({'exact' if self.exact else 'substring'}) on {self.kind}: removed {self.n_removed} of "
                f"{self.n_total}, kept {self.n_kept}" + (f" ({terms})" if terms else ""))

    @staticmethod
    def merge(reports: Sequence["BanReport"], kind: str = "all") -> "BanReport":
        out = BanReport(kind, list(reports[0].terms) if reports else [], reports[0].exact if reports else False)
        counts: Counter = Counter()
        mentions: Counter = Counter()
        for r in reports:
            out.n_total += r.n_total
            out.n_removed += r.n_removed
            out.removed += r.removed
            counts.update(r.by_term)
            mentions.update(r.mentions)
        out.by_term, out.mentions = dict(counts), dict(mentions)
        return out


class BanList:
    """Banned condition terms matched against categories, captions and corpus paragraphs.

    Args:
        terms: the banned terms (e.g. :data:`OFFICIAL_BANNED`).
        knowledge: a ``KnowledgeBase`` or a list of them (e.g. English and Chinese); with ``use_synonyms``
            each term's names and synonyms in every one of them are banned too.
        exact: reproduce the official rule (a category equal to a term).
        word_start: match only at the start of a word instead of anywhere (less conservative).
    """

    def __init__(self, terms: Iterable[str], knowledge=None, use_synonyms: bool = True, exact: bool = False,
                 word_start: bool = False):
        self.terms = [t for t in terms if t and t.strip()]
        if not self.terms:
            raise ValueError("a ban list needs at least one term")
        self.exact = exact
        self._exact_terms = set(self.terms)
        self.variants: Dict[str, str] = {}  # normalised variant -> the banned term it stands for
        bases = [] if knowledge is None else list(knowledge) if isinstance(knowledge, (list, tuple)) else [knowledge]
        for term in self.terms:
            self.variants.setdefault(normalise_text(term), term)
            if use_synonyms and not exact:
                for syn in _names_in(bases, term):  # the entry's names and synonyms, whichever one was banned
                    self.variants.setdefault(normalise_text(syn), term)
        self.variants.pop("", None)
        self.word_start = word_start
        self._pattern = _pattern(self.variants, word_start)
        self._per_term = {t: _pattern([v for v, u in self.variants.items() if u == t], word_start) for t in self.terms}

    @classmethod
    def from_cfg(cls, cfg, knowledge=None, exact: bool = False) -> Optional["BanList"]:
        """The ban list of a ``BanCfg`` (``data.ban`` of pretraining, ``ban`` of stage 0); None without terms.

        ``knowledge`` is a ``KnowledgeBase`` or its name, joined by the ``extra_knowledge`` bases of ``cfg``
        (the Chinese names by default); ``exact`` is ``bug_compat.exact_match_ban``."""
        if not cfg.terms:
            return None
        from .knowledge import KnowledgeBase

        bases = [KnowledgeBase.load(knowledge) if isinstance(knowledge, str) else knowledge]
        bases += [KnowledgeBase.load(name) for name in cfg.extra_knowledge]
        return cls(cfg.terms, knowledge=[b for b in bases if b is not None], use_synonyms=cfg.use_synonyms,
                   exact=exact)

    def match(self, text: str) -> Optional[Tuple[str, str]]:
        """(banned term, matched text) for the first match in ``text``, else None."""
        if not isinstance(text, str):
            return None
        if self.exact:
            return (text, text) if text in self._exact_terms else None
        norm = normalise_text(text)
        m = self._pattern.search(norm)
        return (self.variants[m.group(0)], m.group(0)) if m else None

    def _report(self, kind: str, n_total: int) -> BanReport:
        return BanReport(kind, list(self.terms), self.exact, n_total=n_total)

    def mentioned_terms(self, text: str) -> List[str]:
        """Every banned term that ``text`` mentions (a text can mention several)."""
        if self.exact:
            return [text] if text in self._exact_terms else []
        norm = normalise_text(text)
        return [t for t, p in self._per_term.items() if p.search(norm)]

    def _record(self, report: BanReport, source, row, term: str, text: str, matched: str,
                items: Optional[Sequence[str]] = None) -> None:
        report.n_removed += 1
        report.by_term[term] = report.by_term.get(term, 0) + 1
        mentioned = {t for item in (items if items is not None else [text]) for t in self.mentioned_terms(item)}
        for t in sorted(mentioned):
            report.mentions[t] = report.mentions.get(t, 0) + 1
        report.removed.append({"source": str(source), "row": int(row), "term": term, "matched": matched,
                               "excerpt": _excerpt(text, matched)})

    def filter_categorical(self, frame: pd.DataFrame) -> Tuple[pd.DataFrame, BanReport]:
        """Drop rows with any banned category (``categories`` holds parsed lists, see ``read_categorical``)."""
        report = self._report("categorical", len(frame))
        keep = []
        for i, (cats, source, row) in enumerate(zip(frame["categories"], _col(frame, "source"), _col(frame, "row", 1))):
            hit = next(((c, m) for c in cats if (m := self.match(c))), None)
            keep.append(hit is None)
            if hit is not None:
                category, (term, matched) = hit
                self._record(report, source, row, term, category, matched, cats)
        return frame[keep].reset_index(drop=True), report

    def filter_captions(self, frame: pd.DataFrame, column: str = "caption") -> Tuple[pd.DataFrame, BanReport]:
        """Drop image–caption pairs whose caption mentions a banned condition (the elite set); with a
        ``caption_zh`` column, a mention in either language drops the pair."""
        report = self._report("captions", len(frame))
        columns = [column] + (["caption_zh"] if column == "caption" and "caption_zh" in frame.columns else [])
        keep = []
        for i, (source, row) in enumerate(zip(_col(frame, "source"), _col(frame, "row", 1))):
            texts = [frame[c].iloc[i] for c in columns]
            hit, text = next(((h, t) for t in texts for h in [self.match(t)] if h is not None), (None, ""))
            keep.append(hit is None)
            if hit is not None:
                self._record(report, source, row, hit[0], text, hit[1])
        return frame[keep].reset_index(drop=True), report

    def filter_corpus(self, paragraphs: Sequence[str], source: str = "corpus") -> Tuple[List[str], BanReport]:
        """Drop corpus paragraphs that mention a banned condition (row = 1-based paragraph index)."""
        report = self._report("corpus", len(paragraphs))
        kept = []
        for i, text in enumerate(paragraphs, start=1):
            hit = self.match(text)
            if hit is None:
                kept.append(text)
            else:
                self._record(report, source, i, hit[0], text, hit[1])
        return kept, report


def _names_in(bases: Sequence, term: str) -> List[str]:
    """Every name of ``term``'s entry in every knowledge base. The entry is found by the term itself or by
    the key it resolves to in any base, so an English term also reaches its entry in a Chinese base."""
    keys = [kb.canonical(term) for kb in bases if hasattr(kb, "canonical")]
    queries = dict.fromkeys([term] + [k for k in keys if k])
    return [name for kb in bases for q in queries for name in kb.terms(q)]  # an unknown query gives itself


def _pattern(variants: Iterable[str], word_start: bool) -> re.Pattern:
    """Any variant (longest first) anywhere, or only at a word start, in normalised text."""
    alternatives = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
    return re.compile(rf"(?<![0-9a-z])(?:{alternatives})" if word_start else alternatives)


def _col(frame: pd.DataFrame, name: str, start: Optional[int] = None):
    if name in frame.columns:
        return frame[name]
    return range(start, start + len(frame)) if start is not None else ["?"] * len(frame)


def _excerpt(text: str, matched: str, width: int = 60) -> str:
    """About ``2·width`` characters of ``text`` around the (normalised) match."""
    low = text.lower()
    first = matched.split()[0] if matched else ""
    at = low.find(first) if first else -1
    if at < 0 or len(text) <= 2 * width:
        return text if len(text) <= 2 * width else text[:2 * width] + "…"
    start, end = max(0, at - width), min(len(text), at + width)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")
