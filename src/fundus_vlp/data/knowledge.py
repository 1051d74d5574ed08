"""Domain-knowledge dictionary: category -> expert descriptions and synonyms.

It plays the role of FLAIR's ``definitions`` (docs/reference.md#flair-knowledge-dictionary): descriptions feed prompt
augmentation during pre-training and prompt ensembles for zero-shot classification; synonyms make lookups
robust to spelling variants and let ban-lists catch every name of a held-out condition.

Differences from the official dictionary, on purpose:

* lookups normalise case, hyphens/underscores, spacing and trailing punctuation, fold British/American
  spellings and plural ``s``, and try a trailing parenthesised abbreviation, so ``"age-related macular
  degeneration"``, ``"Drusen."`` and ``"central serous retinopathy (csr)"`` all resolve;
* every accessor returns a fresh list, so callers can never mutate the shared table (FLAIR's helper appends to them);
* the packaged ``fundus_en.yaml`` is written for fundus-vlp, not copied; ``fundus_zh.yaml`` has the same
  entries (keyed by the English label, so experiment class names resolve) with a Chinese ``name``, Chinese
  synonyms and Chinese descriptions, for Chinese zero-shot prompts and Chinese ban-list terms.

Example::

    kb = KnowledgeBase.load()
    kb.descriptions("Age-related macular degeneration")   # -> ['yellow drusen clustered around the fovea', ...]
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Iterable

import yaml

__all__ = ["normalize_label", "KnowledgeBase"]

_PACKAGE_DIR = "configs/knowledge"
_TRAILING_PUNCT = ".,;:!?"
# British -> American spelling folds applied to keys and queries alike (lookup only, never to stored text).
_FOLDS = (("haemorrh", "hemorrh"), ("oedema", "edema"), ("haemangi", "hemangi"), ("ischaem", "ischem"),
          ("colour", "color"), ("fibres", "fibers"), ("naevus", "nevus"), ("neovascularis", "neovasculariz"))
_PAREN = re.compile(r"^(?P<head>.*?)\s*\((?P<abbr>[^()]*)\)$")


def normalize_label(text: str) -> str:
    """Canonical form of a label: lower case, hyphens/underscores -> spaces, single spaces, no trailing punctuation.

    >>> normalize_label("  Age-Related_Macular   Degeneration. ")
    'age related macular degeneration'
    """
    s = str(text).lower().replace("-", " ").replace("_", " ")
    s = " ".join(s.split())
    return s.rstrip(_TRAILING_PUNCT + " ").strip()


def _fold(s: str) -> str:
    for a, b in _FOLDS:
        s = s.replace(a, b)
    return s


class KnowledgeBase:
    """An immutable mapping from normalised category names to descriptions and synonyms.

    Build it with :meth:`load` (packaged name or YAML path) or directly from a dict
    ``{key: {"descriptions": [...], "synonyms": [...]}}``.
    """

    def __init__(self, entries: dict[str, dict[str, Iterable[str]]], source: str = "<dict>") -> None:
        self.source = source
        self._desc: dict[str, tuple[str, ...]] = {}
        self._syn: dict[str, tuple[str, ...]] = {}
        self._name: dict[str, str] = {}  # the entry's name in the knowledge base's language, when it has one
        self._index: dict[str, str] = {}  # folded spelling -> key
        for raw_key, entry in entries.items():
            key = normalize_label(raw_key)
            if key in self._desc:
                raise ValueError(f"{source}: duplicate key {raw_key!r} (normalises to {key!r})")
            entry = entry or {}
            unknown = set(entry) - {"descriptions", "synonyms", "name"}
            if unknown:
                raise ValueError(f"{source}: entry {raw_key!r} has unknown fields {sorted(unknown)}")
            desc = tuple(str(d).strip() for d in entry.get("descriptions") or [])
            syn = tuple(normalize_label(s) for s in entry.get("synonyms") or [])
            if not desc:
                raise ValueError(f"{source}: entry {raw_key!r} needs at least one description")
            self._desc[key] = desc
            self._syn[key] = syn
            if entry.get("name"):
                self._name[key] = normalize_label(entry["name"])
        # Keys win over names, names over synonyms; among synonyms the first entry that claims a spelling keeps it.
        for key in self._desc:
            self._index[_fold(key)] = key
        for key, name in self._name.items():
            self._index.setdefault(_fold(name), key)
        for key, syn in self._syn.items():
            for s in syn:
                self._index.setdefault(_fold(s), key)

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, name_or_path: str | Path = "fundus_en") -> "KnowledgeBase":
        """Load a packaged knowledge base by name (``fundus_en``) or any YAML file by path."""
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") or path.exists():
            text, source = path.read_text(encoding="utf-8"), str(path)
        else:
            res = resources.files("fundus_vlp").joinpath(f"{_PACKAGE_DIR}/{name_or_path}.yaml")
            if not res.is_file():
                raise FileNotFoundError(f"no packaged knowledge base named {name_or_path!r} (looked for {res})")
            text, source = res.read_text(encoding="utf-8"), f"fundus_vlp:{_PACKAGE_DIR}/{name_or_path}.yaml"
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping at the top level")
        return cls(data, source=source)

    # ------------------------------------------------------------------ lookup
    def canonical(self, label: str) -> str | None:
        """The key ``label`` resolves to, or ``None``.

        Tries, in order: the normalised label (and its synonyms), the label without a trailing parenthesised
        abbreviation (``"... (csr)"``) or the abbreviation alone, then the singular / plural form.
        """
        norm = normalize_label(label)
        candidates = [norm]
        m = _PAREN.match(norm)
        if m:
            candidates += [normalize_label(m["head"]), normalize_label(m["abbr"])]
        for c in list(candidates):
            candidates.append(c[:-1] if c.endswith("s") else c + "s")
        for c in candidates:
            key = self._index.get(_fold(c))
            if key is not None:
                return key
        return None

    def descriptions(self, label: str) -> list[str]:
        """Expert descriptions of ``label`` (a new list; ``[]`` if unknown)."""
        key = self.canonical(label)
        return list(self._desc[key]) if key is not None else []

    def synonyms(self, label: str) -> list[str]:
        """Synonyms of ``label`` (normalised, a new list; ``[]`` if unknown)."""
        key = self.canonical(label)
        return list(self._syn[key]) if key is not None else []

    def name(self, label: str) -> str | None:
        """The entry's own ``name`` (e.g. the Chinese name in ``fundus_zh``), or ``None`` when it has none."""
        key = self.canonical(label)
        return self._name.get(key) if key is not None else None

    def display_name(self, label: str) -> str:
        """What a prompt calls ``label``: the entry's ``name`` when it has one, else ``label`` unchanged."""
        return self.name(label) or label

    def terms(self, label: str) -> list[str]:
        """All names of ``label``'s entry: its key, its ``name`` (if any) and its synonyms (for ban-lists)."""
        key = self.canonical(label)
        if key is None:
            return [normalize_label(label)]
        return [key, *([self._name[key]] if key in self._name else []), *self._syn[key]]

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and self.canonical(label) is not None

    def keys(self) -> list[str]:
        return list(self._desc)

    def __len__(self) -> int:
        return len(self._desc)

    def as_definitions(self, include_name: bool = False) -> dict[str, list[str]]:
        """A FLAIR-style ``{category: [descriptions]}`` dict (fresh lists; optionally with the name first)."""
        return {k: ([k] if include_name else []) + list(v) for k, v in self._desc.items()}

    def __repr__(self) -> str:
        return f"KnowledgeBase({len(self)} entries from {self.source})"
