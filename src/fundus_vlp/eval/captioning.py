"""Caption metrics with pycocoevalcap: BLEU-1..4, ROUGE-L, CIDEr, and METEOR when Java is present.

KeepFIT reports these for FFA report generation. METEOR and the PTB tokenizer of
pycocoevalcap run Java; without ``java`` on the PATH, captions are tokenised in Python (lower case,
words and numbers, the PTB punctuation removed) and METEOR is skipped with a message in the result.
Model selection never uses test captions (the official FFA trainer keeps a "best test" row).
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
from typing import Dict, List, Mapping, Optional, Sequence

from ..runtime.extras import require

_logger = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")


def simple_tokenize(text: str) -> str:
    """Java-free tokenisation close to the PTB tokenizer + punctuation removal used by pycocoevalcap."""
    return " ".join(_WORD.findall(text.lower().replace("\n", " ")))


def _scorer(module: str, name: str):
    """A class of pycocoevalcap (the ``report`` extra)."""
    return getattr(require(f"pycocoevalcap.{module}", "report", "caption metrics"), name)


def java_available() -> bool:
    return shutil.which("java") is not None


def _tokenize(captions: Mapping[str, Sequence[str]], use_java: bool) -> Dict[str, List[str]]:
    if use_java:
        PTBTokenizer = _scorer("tokenizer.ptbtokenizer", "PTBTokenizer")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}


def caption_metrics(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str],
                    use_java: Optional[bool] = None, meteor: bool = True) -> Dict[str, object]:
    """Corpus-level scores of ``candidates`` (one caption per id) against ``references`` (one or more per id).

    Returns ``bleu_1..bleu_4, rouge_l, cider`` and ``meteor`` (None when Java is absent, with ``notes``).
    ``meteor=False`` skips METEOR without a note (e.g. per-epoch validation, where the Java start-up
    would dominate).
    """
    Bleu, Cider, Rouge = (_scorer(f"{n.lower()}.{n.lower()}", n) for n in ("Bleu", "Cider", "Rouge"))

    ids = sorted(references)
    if set(ids) != set(candidates):
        raise ValueError("references and candidates must have the same ids")
    if not ids:
        raise ValueError("no captions to score")
    java = java_available() if use_java is None else use_java
    gts = _tokenize({i: list(references[i]) for i in ids}, java)
    res = _tokenize({i: [candidates[i]] for i in ids}, java)
    out: Dict[str, object] = {"n": len(ids), "tokenizer": "ptb (java)" if java else "python"}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its BLEU internals
        bleu, _ = Bleu(4).compute_score(gts, res)
        out.update({f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
        out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
        out["cider"] = float(Cider().compute_score(gts, res)[0])
    if not meteor:
        return out
    if java:
        out["meteor"] = _meteor(gts, res)
    else:
        out["meteor"] = None
        out["notes"] = "METEOR skipped: it needs Java (`java` not found on PATH)"
        _logger.warning(out["notes"])
    return out


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
