"""The package's floors import downward only, its modules form no cycle, and the repository cites no
document it does not contain. Imports inside functions count: hiding an upward import there is still one."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Dict, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fundus_vlp"

# Lowest floor first. A module may import its own floor or a lower one, never a higher one.
FLOORS = [
    {"version", "constants", "config"},  # typed configs, the architecture registry, config files
    {"runtime"},  # process groups, seeding, device choice, precision, local sources
    {"models", "losses", "data", "hub", "demo_world", "elite_builder", "factory", "inference"},  # towers, pure
    # losses, readers/datasets, release folders, the generated demo world, atlas PDFs -> elite pairs, models from
    # configs and folders, and inference on a model (model.classify calls it, so it sits beside the models)
    {"convert"},  # imported weights
    {"methods"},  # pretraining objectives composed of losses and model parts
    {"train", "eval"},  # the training loop and stage 0; evaluation protocols
    {"demo", "demo_bilingual", "app"},  # the end-to-end demos (train and evaluate); the web app (model API)
    {"cli", "__main__"},  # the command line
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Set[str]:
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            # `from . import distributed` imports the module fundus_vlp.runtime.distributed itself
            out.update(f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}"))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("fundus_vlp.") and m != "fundus_vlp"}


def _is_module(name: str) -> bool:
    base = PACKAGE.parent / Path(*name.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()


def floor_of(module: str) -> int:
    top = module.split(".")[1]
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    raise AssertionError(f"{module}: top-level unit {top!r} is on no floor of tests/test_architecture.py")


def import_graph() -> Dict[str, Set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        mod = module_name(path)
        if mod == "fundus_vlp":
            continue  # the package root only re-exports lazily
        graph[mod] = {m for m in imported_modules(path) if m != mod}
    return graph


def test_every_import_goes_down_or_sideways():
    upward = [f"{mod} (floor {floor_of(mod)}) imports {dep} (floor {floor_of(dep)})"
              for mod, deps in import_graph().items() for dep in deps if floor_of(dep) > floor_of(mod)]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def _resolve(dep: str, graph: Dict[str, Set[str]]) -> str | None:
    """`fundus_vlp.config.ModelCfg` -> the module that defines it (`fundus_vlp.config`)."""
    while dep and dep not in graph:
        dep = dep.rpartition(".")[0]
    return dep or None


def test_no_import_cycle():
    graph = import_graph()
    edges = {m: {r for d in deps if (r := _resolve(d, graph)) and r != m} for m, deps in graph.items()}
    # a package's __init__ that re-exports its children is not a cycle with them
    edges = {m: {d for d in deps if not (d.startswith(m + ".") or m.startswith(d + ".") and _reexport(d))}
             for m, deps in edges.items()}
    state: Dict[str, int] = {}
    stack: list = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def _reexport(module: str) -> bool:
    return (PACKAGE.parent / Path(*module.split(".")) / "__init__.py").is_file()


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The walk is not vacuous: a lower floor importing the CLI is found, also inside a function."""
    fake = PACKAGE / "losses" / "_probe_upward.py"
    fake.write_text("def f():\n    from ..cli.main import main\n    return main\n")
    try:
        with pytest.raises(AssertionError, match="losses._probe_upward"):
            test_every_import_goes_down_or_sideways()
    finally:
        fake.unlink()


CITATION = re.compile(r"([A-Za-z0-9_\-/]+\.md) ?§")


def test_no_citation_of_a_document_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files", "src", "docs", "README.md"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    files = [ROOT / f for f in tracked] or [p for p in [*PACKAGE.rglob("*"), *(ROOT / "docs").rglob("*"),
                                                          ROOT / "README.md"] if p.is_file()]
    repo_docs = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    bad = []
    for path in files:
        if not path.is_file() or path.suffix in (".png", ".safetensors"):
            continue
        for n, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            bad += [f"{path.relative_to(ROOT)}:{n}: {m}" for m in CITATION.findall(line)
                    if Path(m).name not in repo_docs]
            if re.search(r"style spec", line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: 'style spec'")
    assert not bad, f"{len(bad)} citation(s) of documents users do not have:\n" + "\n".join(bad[:40])


def test_every_unit_is_on_a_floor_and_in_the_architecture_doc():
    """A new top-level unit is placed on a floor here and explained in docs/architecture.md."""
    units = {p.stem if p.suffix == ".py" else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    placed = set().union(*FLOORS)
    assert units <= placed, f"units on no floor of FLOORS: {sorted(units - placed)}"
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = sorted(u for u in placed if f"`{u}`" not in doc and f"`{u}/`" not in doc)
    assert not missing, f"units missing from docs/architecture.md: {missing}"


PATH_MENTION = re.compile(r"(?<![\w./-])((?:[a-z0-9_]+/)+[a-z0-9_]+\.py)\b")
DOTTED_MENTION = re.compile(r"\bfundus_vlp(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _names_a_missing_module(dotted: str) -> bool:
    """`fundus_vlp.a.b.name`: the longest existing module prefix may be followed by one name it defines."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = PACKAGE.parent / Path(*parts[:cut])
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if source.is_file():
            rest = parts[cut:]
            return len(rest) > 1 or bool(rest) and not re.search(rf"\b{rest[0]}\b", source.read_text())
    return True


def test_no_comment_or_docstring_names_a_module_that_does_not_exist():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in PATH_MENTION.findall(line):
                if not any((base / m).exists() for base in (ROOT, PACKAGE, PACKAGE.parent, path.parent)):
                    bad.append(f"{path.relative_to(ROOT)}:{n}: {m}")
            bad += [f"{path.relative_to(ROOT)}:{n}: {m}" for m in DOTTED_MENTION.findall(line)
                    if _names_a_missing_module(m)]
    assert not bad, "names of modules that do not exist:\n" + "\n".join(bad)
