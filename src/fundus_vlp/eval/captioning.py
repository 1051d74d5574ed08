"""Caption metrics with pycocoevalcap: BLEU-1..4, ROUGE-L, CIDEr, and METEOR when Java is present.

KeepFIT reports these for FFA report generation. METEOR and the PTB tokenizer of
pycocoevalcap run Java; without ``java`` on the PATH, captions are tokenised in Python (lower case,
words and numbers, the PTB punctuation removed) and METEOR is skipped with a message in the result.
Chinese reports (FFA-IR's ``Cn_Report``) are scored per character, the FFA-IR convention: every CJK
ideograph is one token, Latin words and numbers inside them stay whole, punctuation is dropped; METEOR
(English stems and synonyms) is not computed for them. The language is the references' unless given.
Model selection never uses test captions (the official FFA trainer keeps a "best test" row).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence

from ..runtime.extras import require

_logger = logging.getLogger(__name__)

LANGUAGES = ("en", "zh")
_IDEOGRAPH = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK unified (+ extension A, compatibility)
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_ZH_TOKEN = re.compile(rf"[{_IDEOGRAPH}]|[a-z0-9]+")
_LETTER = re.compile(rf"[{_IDEOGRAPH}]|[a-z]")
_IDEOGRAPH_RE = re.compile(rf"[{_IDEOGRAPH}]")


def simple_tokenize(text: str, language: str = "en") -> str:
    """Java-free tokenisation close to the PTB tokenizer + punctuation removal used by pycocoevalcap
    (``en``), or one token per Chinese character (``zh``)."""
    pattern = _ZH_TOKEN if language == "zh" else _WORD
    return " ".join(pattern.findall(text.lower().replace("\n", " ")))


def text_language(texts: Sequence[str]) -> str:
    """``zh`` when Chinese characters are most of the letters of ``texts``, else ``en``."""
    joined = " ".join(texts).lower()
    letters = len(_LETTER.findall(joined))
    return "zh" if letters and len(_IDEOGRAPH_RE.findall(joined)) * 2 > letters else "en"


def _scorer(module: str, name: str):
    """A class of pycocoevalcap (the ``report`` extra)."""
    return getattr(require(f"pycocoevalcap.{module}", "report", "caption metrics"), name)


def java_available() -> bool:
    return shutil.which("java") is not None


@contextlib.contextmanager
def _child_stderr_kept_back():
    """The Java tokenizer reports its speed on the standard error it inherits (file descriptor 2, which
    ``redirect_stderr`` does not reach): hold it in a temporary file, shown only if the call fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            _logger.error("the Java tokenizer wrote: %s", held.read().decode(errors="replace").strip())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _tokenize(captions: Mapping[str, Sequence[str]], use_java: bool, language: str) -> Dict[str, List[str]]:
    if use_java and language == "en":
        PTBTokenizer = _scorer("tokenizer.ptbtokenizer", "PTBTokenizer")
        with contextlib.redirect_stdout(io.StringIO()), _child_stderr_kept_back():
            return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return {k: [simple_tokenize(c, language) for c in v] for k, v in captions.items()}


def caption_metrics(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str],
                    use_java: Optional[bool] = None, meteor: bool = True,
                    language: Optional[str] = None) -> Dict[str, object]:
    """Corpus-level scores of ``candidates`` (one caption per id) against ``references`` (one or more per id).

    Returns ``bleu_1..bleu_4, rouge_l, cider`` and ``meteor`` (None when Java is absent or the reports are
    Chinese, with ``notes``), the ``language`` scored and the ``tokenizer`` used. ``language``: ``en``, ``zh``
    or None (from the references, :func:`text_language`). ``meteor=False`` skips METEOR without a note
    (e.g. per-epoch validation, where the Java start-up would dominate).
    """
    Bleu = _scorer("bleu.bleu", "Bleu")

    ids = sorted(references)
    if set(ids) != set(candidates):
        raise ValueError("references and candidates must have the same ids")
    if not ids:
        raise ValueError("no captions to score")
    language = language or text_language([r for i in ids for r in references[i]])
    if language not in LANGUAGES:
        raise ValueError(f"caption language must be one of {LANGUAGES}, got {language!r}")
    java = (java_available() if use_java is None else use_java) and language == "en"
    gts = _tokenize({i: list(references[i]) for i in ids}, java, language)
    empty = [i for i in ids if not any(t.strip() for t in gts[i])]
    if empty:
        raise ValueError(f"{len(empty)} reference(s) have no {language} word after tokenisation (e.g. id "
                         f"{empty[0]!r}: {references[empty[0]][0][:60]!r}); is the report language right?")
    res = _tokenize({i: [candidates[i]] for i in ids}, java, language)
    out: Dict[str, object] = {"n": len(ids), "language": language,
                              "tokenizer": "ptb (java)" if java else "per character" if language == "zh" else "python"}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its BLEU internals
        bleu, _ = Bleu(4).compute_score(gts, res)
    out.update({f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    out.update({k: _corpus_score(k, gts, res) for k in ("rouge_l", "cider")})
    if not meteor:
        return out
    if java:
        out["meteor"] = _meteor(gts, res)
    elif language == "zh":
        out["meteor"] = None
        out["notes"] = "METEOR not computed: its stemmer, synonyms and paraphrases are English-only"
    else:
        out["meteor"] = None
        out["notes"] = "METEOR skipped: it needs Java (`java` not found on PATH)"
        _logger.warning(out["notes"])
    return out


SCORED = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")  # what _corpus_score computes


def _corpus_score(metric: str, gts: Dict[str, List[str]], res: Dict[str, List[str]]) -> float:
    """One corpus-level metric (:data:`SCORED`) of tokenised candidates ``res`` against references ``gts``."""
    if metric not in SCORED:
        raise ValueError(f"caption metric must be one of {SCORED}, got {metric!r}")
    name = "Bleu" if metric.startswith("bleu") else "Rouge" if metric == "rouge_l" else "Cider"
    scorer = _scorer(f"{name.lower()}.{name.lower()}", name)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its BLEU internals
        if name == "Bleu":
            return float(scorer(4).compute_score(gts, res)[0][int(metric[-1]) - 1])
        return float(scorer().compute_score(gts, res)[0])


def paired_caption_bootstrap(references: Mapping[str, Sequence[str]], candidates_a: Mapping[str, str],
                             candidates_b: Mapping[str, str], metric: str = "cider", n_boot: int = 500,
                             seed: int = 0, use_java: Optional[bool] = None, language: Optional[str] = None,
                             level: float = 0.95):
    """``metric`` of captions A minus captions B written for the same ids, with a paired bootstrap over the ids.

    Each replicate draws ids with replacement and scores both sets of captions on that draw (for CIDEr the
    document frequencies come from the draw's references, as for any corpus). Percentile interval and two-sided
    p-value as for the classification metrics (:func:`fundus_vlp.eval.stats.bootstrap_comparison`). Captions
    are tokenised once, as :func:`caption_metrics` does."""
    import numpy as np

    from .stats import bootstrap_comparison

    ids = sorted(references)
    if not ids or set(ids) != set(candidates_a) or set(ids) != set(candidates_b):
        raise ValueError("references and both candidate sets must have the same, non-empty ids")
    language = language or text_language([r for i in ids for r in references[i]])
    java = (java_available() if use_java is None else use_java) and language == "en"
    gts = _tokenize({i: list(references[i]) for i in ids}, java, language)
    res = [_tokenize({i: [c[i]] for i in ids}, java, language) for c in (candidates_a, candidates_b)]

    def difference(draw: Sequence[int]) -> float:
        keys = [f"{n}" for n in range(len(draw))]  # a drawn id may repeat: one key per draw
        g = {k: gts[ids[j]] for k, j in zip(keys, draw)}
        a, b = ({k: r[ids[j]] for k, j in zip(keys, draw)} for r in res)
        return _corpus_score(metric, g, a) - _corpus_score(metric, g, b)

    rng = np.random.default_rng(seed)
    replicates = np.array([difference(rng.integers(0, len(ids), len(ids))) for _ in range(n_boot)])
    return bootstrap_comparison(difference(range(len(ids))), replicates, level)


def _meteor(gts: Dict[str, List[str]], res: Dict[str, List[str]]) -> float:
    Meteor = _scorer("meteor.meteor", "Meteor")

    res = {k: [v[0] if v[0].strip() else "empty"] for k, v in res.items()}  # an empty line would stall the jar
    scorer = Meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    finally:
        proc = scorer.meteor_p
        with contextlib.suppress(Exception):
            proc.stdin.close()
        proc.kill()
        proc.wait()
