"""Installed size of the core package and of each extra, measured in an environment where all are installed.

For each set of requirements (from ``pyproject.toml``) the script follows ``Requires-Dist`` through the installed
distributions (markers evaluated for this interpreter) and adds up the bytes of every file each distribution
installed (its RECORD). An extra's figure is what it adds on top of the core; torch + torchvision (pinned and
installed first by the Makefile, with their own dependencies) are counted separately.

    python benchmarks/install_sizes.py
"""
from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, Set

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
TORCH = ("torch", "torchvision")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed() -> Dict[str, metadata.Distribution]:
    return {_key(d.metadata["Name"]): d for d in metadata.distributions()}


def closure(requirements: Iterable[str], dists: Dict[str, metadata.Distribution], extras=("",)) -> Set[str]:
    """Every installed distribution the requirements pull in (recursively, with the requested extras)."""
    seen: Set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _key(req.name)
        if name == "fundus-vlp" or name in seen or name not in dists:
            continue
        seen.add(name)
        for text in dists[name].requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in [""] + sorted(req.extras)):
                todo.append(sub)
    return seen


def size(names: Iterable[str], dists: Dict[str, metadata.Distribution]) -> int:
    total = 0
    for name in names:
        for f in dists[name].files or []:
            path = Path(dists[name].locate_file(f))
            if path.is_file():
                total += path.stat().st_size
    return total


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dists = _installed()
    missing = [r for r in project["dependencies"] if _key(Requirement(r).name) not in dists]
    if missing:
        print(f"not installed here: {missing}; install `.[all]` first", file=sys.stderr)
        return 1
    torch = closure(TORCH, dists)
    core = closure([r for r in project["dependencies"] if _key(Requirement(r).name) not in TORCH], dists) - torch
    rows = [("torch + torchvision (with their dependencies)", torch), ("core without torch", core)]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k not in ("test", "bench", "all")}
    everything = set(core)
    for extra, reqs in extras.items():
        added = closure(reqs, dists) - core - torch
        everything |= added
        rows.append((f"[{extra}] adds", added))
    rows.append(("[all] adds", everything - core))
    mib = 1024 ** 2
    print(f"{'what':<48} {'packages':>8} {'MiB':>9}")
    for label, names in rows:
        print(f"{label:<48} {len(names):>8} {size(names, dists) / mib:>9.1f}")
    print(f"{'core with torch':<48} {len(core | torch):>8} {size(core | torch, dists) / mib:>9.1f}")
    print(f"{'core + all extras with torch':<48} {len(everything | torch):>8} {size(everything | torch, dists) / mib:>9.1f}")
    print(f"torch build: {dists['torch'].version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
