"""Transfer experiments: a dataframe in the real format + image root + class list.

See docs/reference.md#transfer-experiments.

An experiment is defined in YAML (``configs/experiments/*.yaml`` ships the standard sets; users may pass
their own file) or comes from the demo world (``demo:<name>``). Dataframes are referenced by file name
relative to a user-given ``dataframe_dir`` (``$FUNDUS_VLP_DATAFRAMES``) and images live under a user-given
``image_root`` (``$FUNDUS_VLP_DATA``): fundus-vlp ships no third-party data.

The label of a row is the **first** element of ``categories`` mapped through ``targets``, as officially;
a multi-label experiment maps every category. A row whose label is not in ``targets`` is an error naming
the row, unless the experiment sets ``drop_unmapped: true`` (the count is reported).

A segmentation experiment (``task: segmentation``) has image/mask pairs instead of a categorical dataframe:
a CSV ``image, mask`` (``masks``) or an image folder and a mask folder paired by file stem (``image_dir``,
``mask_dir``), both relative to ``image_root``; ``mask_values`` / ``mask_colors`` say how mask pixels map to
``classes`` (``segmentation_data.py``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..data.dataframes import DataFormatError, read_categorical, resolve_image_path
from .metrics import TASKS

SEGMENTATION_TASK = "segmentation"
EXPERIMENT_TASKS = TASKS + (SEGMENTATION_TASK,)

DATAFRAME_ENV = "FUNDUS_VLP_DATAFRAMES"
IMAGE_ROOT_ENV = "FUNDUS_VLP_DATA"
DEMO_PREFIX = "demo:"


class ExperimentError(ValueError):
    """An experiment that cannot be resolved or whose data does not fit its definition."""


@dataclass
class Experiment:
    """One downstream classification task (and optionally a caption set for retrieval)."""

    name: str
    classes: List[str]  # class names, used as zero-shot prompts; index = label
    dataframe: Optional[str] = None  # categorical CSV (file name relative to dataframe_dir, or a path)
    targets: Dict[str, int] = field(default_factory=dict)  # category string -> class index (default: classes)
    test_dataframe: Optional[str] = None  # official test set: used as the test split of every fold
    task: str = "multiclass"  # multiclass | binary | graded (quadratic kappa) | multilabel | segmentation
    positive: Optional[str] = None  # binary: the disease class (F1/sensitivity/threshold refer to it)
    zero_shot: bool = True  # False when class names are codes with no text meaning (TAOP '0c'..'4c')
    primary_metric: str = "aca"
    group_pattern: Optional[str] = None  # regex on the image path whose group 1 is the patient id
    drop_unmapped: bool = False
    dataframe_dir: Optional[str] = None
    image_root: Optional[str] = None
    captions: Optional[str] = None  # image, caption CSV for retrieval / captioning
    captions_root: Optional[str] = None
    description: str = ""
    reference: str = ""
    # segmentation (task: segmentation); paths relative to dataframe_dir (CSVs) and image_root (folders, files)
    masks: Optional[str] = None  # CSV with columns image, mask
    test_masks: Optional[str] = None  # official test pairs (CSV)
    image_dir: Optional[str] = None  # or: an image folder and a mask folder, paired by file stem
    mask_dir: Optional[str] = None
    test_image_dir: Optional[str] = None
    test_mask_dir: Optional[str] = None
    mask_values: Dict[int, int] = field(default_factory=dict)  # grey level -> class index (default below)
    mask_colors: Dict[str, List[int]] = field(default_factory=dict)  # class name -> [R, G, B] (coloured masks)
    # multi-label (lesion types that may overlap): one mask folder per class; an image with no file there has
    # none of that class. mask_suffixes: class -> file-stem suffix of its masks (IDRiD: IDRiD_01_MA.tif)
    mask_dirs: Dict[str, str] = field(default_factory=dict)
    test_mask_dirs: Dict[str, str] = field(default_factory=dict)
    mask_suffixes: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in EXPERIMENT_TASKS:
            raise ExperimentError(f"experiment {self.name!r}: task must be one of {EXPERIMENT_TASKS}, "
                                  f"got {self.task!r}")
        if not self.targets:
            self.targets = {c: i for i, c in enumerate(self.classes)}
        bad = sorted({i for i in self.targets.values() if not 0 <= int(i) < len(self.classes)})
        if bad:
            raise ExperimentError(f"experiment {self.name!r}: target indices {bad} outside 0..{len(self.classes) - 1}")
        if self.task == "binary" and len(self.classes) != 2:
            raise ExperimentError(f"experiment {self.name!r}: a binary task needs 2 classes, got {len(self.classes)}")
        if self.mask_dirs and len(self.classes) > 8:  # multi-label masks are stored as 8 bits per pixel
            raise ExperimentError(f"experiment {self.name!r}: at most 8 classes with one mask folder each, got "
                                  f"{len(self.classes)}")
        if self.positive is not None and self.positive not in self.classes:
            raise ExperimentError(f"experiment {self.name!r}: positive class {self.positive!r} not in {self.classes}")

    @property
    def is_multilabel_segmentation(self) -> bool:
        return self.task == SEGMENTATION_TASK and bool(self.mask_dirs)

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive) if self.positive is not None else 1


@dataclass
class LabeledImages:
    """Images of an experiment with their labels; ``official_test`` marks rows of the official test set."""

    paths: List[Path]
    labels: np.ndarray  # N (class index) or N×K multi-hot
    groups: Optional[np.ndarray]
    where: List[str]  # "file, row N" for error messages
    official_test: np.ndarray  # bool N
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.paths)


# -- definitions ---------------------------------------------------------------------------------------

def builtin_experiments() -> List[str]:
    """Names of the experiment YAMLs shipped in ``fundus_vlp/configs/experiments``."""
    folder = resources.files("fundus_vlp") / "configs" / "experiments"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _builtin_path(name: str) -> Optional[Path]:
    folder = resources.files("fundus_vlp") / "configs" / "experiments"
    for p in folder.iterdir():
        if p.name.endswith(".yaml") and p.name[:-5].lower() == name.lower():
            return Path(str(p))
    return None


def experiment_from_dict(data: Dict[str, Any], source: str = "<dict>") -> Experiment:
    """An experiment built by the config loader (types and known keys checked); the error names `source`."""
    from ..config.loading import ConfigError, from_dict

    if not isinstance(data, dict):
        raise ExperimentError(f"{source}: an experiment must be a mapping")
    known = {f.name for f in fields(Experiment)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ExperimentError(f"{source}: unknown experiment key(s) {unknown}; known: {sorted(known)}")
    if "name" not in data or "classes" not in data:
        raise ExperimentError(f"{source}: an experiment needs 'name' and 'classes'")
    data = dict(data)  # YAML reads a numeric class name or category as a number: they are names here
    data["classes"] = [str(c) for c in data["classes"] or []]
    data["targets"] = {str(k): v for k, v in (data.get("targets") or {}).items()}
    data["mask_colors"] = {str(k): v for k, v in (data.get("mask_colors") or {}).items()}
    data["mask_values"] = {int(k) if str(k).strip().isdigit() else k: v for k, v in (data.get("mask_values") or {}).items()}
    try:
        return from_dict(Experiment, data, where=source)
    except ConfigError as exc:
        raise ExperimentError(str(exc)) from exc


def load_experiment_file(path: str | Path) -> Experiment:
    from omegaconf import OmegaConf

    path = Path(path)
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # YAML errors
        raise ExperimentError(f"{path}: not a valid experiment YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: an experiment YAML must be a mapping")
    exp = experiment_from_dict(data, str(path))
    # a user YAML may name its dataframe relative to itself
    own = exp.dataframe or exp.masks
    if exp.dataframe_dir is None and own and (path.parent / own).is_file():
        exp.dataframe_dir = str(path.parent)
    return exp


def get_experiment(name: str, dataframe_dir: Optional[str] = None, image_root: Optional[str] = None,
                   demo_cfg: Optional[Dict[str, Any]] = None, demo_cache_dir: Optional[str] = None) -> Experiment:
    """Resolve ``name``: a built-in experiment, a YAML path, or ``demo:<name>`` (built on first use)."""
    if name.startswith(DEMO_PREFIX) or name == "demo":
        return demo_experiment(name[len(DEMO_PREFIX):], demo_cfg, demo_cache_dir)
    if name.startswith("demo_") and _builtin_path(name) is None:
        return demo_experiment(name, demo_cfg, demo_cache_dir)
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ExperimentError(f"experiment file not found: {path}")
        exp = load_experiment_file(path)
    else:
        builtin = _builtin_path(name)
        if builtin is None:
            raise ExperimentError(f"unknown experiment {name!r}; built-in: {', '.join(builtin_experiments())}; "
                                  f"or pass a YAML file, or demo:<name>")
        exp = load_experiment_file(builtin)
    return resolve_locations(exp, dataframe_dir, image_root)


def resolve_locations(exp: Experiment, dataframe_dir: Optional[str] = None,
                      image_root: Optional[str] = None) -> Experiment:
    """Fill dataframe_dir / image_root from arguments, then the environment; explicit arguments win."""
    return replace(exp,
                   dataframe_dir=dataframe_dir or exp.dataframe_dir or os.environ.get(DATAFRAME_ENV),
                   image_root=image_root or exp.image_root or os.environ.get(IMAGE_ROOT_ENV))


def demo_experiment(name: str, demo_cfg: Optional[Dict[str, Any]] = None,
                    cache_dir: Optional[str] = None) -> Experiment:
    """An experiment of the generated demo world (``fundus_vlp.demo_world``)."""
    from ..demo_world import EXPERIMENTS, SEGMENTATION_CLASSES, SEGMENTATION_EXPERIMENT

    if name not in EXPERIMENTS and name != SEGMENTATION_EXPERIMENT:  # before building the world (minutes)
        raise ExperimentError(f"unknown demo experiment {name!r}; the demo world has "
                              f"{', '.join(demo_experiment_names())}")
    world = load_demo_world(demo_cfg, cache_dir)
    if name == SEGMENTATION_EXPERIMENT:
        return Experiment(name=name, classes=list(SEGMENTATION_CLASSES), task=SEGMENTATION_TASK,
                          masks=str(world.segmentation_csv), image_root=str(world.root), zero_shot=False,
                          primary_metric="dice_mean", description=world.experiments[name]["description"],
                          reference="demo_world.md")
    spec = world.experiments[name]
    classes = list(spec["classes"])
    task = spec.get("task") or ("graded" if "grading" in name else "multiclass")
    return Experiment(
        name=name, classes=classes, targets=dict(spec.get("targets") or {}),
        dataframe=str(world.eval_csvs[name]), image_root=str(world.root), task=task,
        positive=spec.get("positive"), captions=str(world.retrieval_csv) if world.retrieval_csv else None,
        captions_root=str(world.root), description=spec.get("description", "demo world experiment"),
        reference="docs/data.md#the-demo-world",
    )


def load_demo_world(demo_cfg: Optional[Dict[str, Any]] = None, cache_dir: Optional[str] = None):
    from ..demo_world import DemoWorldCfg, build_demo_world

    return build_demo_world(DemoWorldCfg(**(demo_cfg or {})), cache_dir=cache_dir)


def demo_experiment_names() -> List[str]:
    """``demo:<name>`` experiments of the demo world (no world is built)."""
    from ..demo_world import EXPERIMENTS, SEGMENTATION_EXPERIMENT

    return [DEMO_PREFIX + n for n in sorted([*EXPERIMENTS, SEGMENTATION_EXPERIMENT])]


# -- data ------------------------------------------------------------------------------------------------

def _norm(text: str) -> str:
    """Lenient key for label lookup: case, hyphens, repeated spaces, trailing dots (official labels vary in these)."""
    return " ".join(re.sub(r"[-_]", " ", text.lower()).split()).strip(" .")


def _dataframe_path(exp: Experiment, name: str) -> Path:
    p = Path(name)
    if p.is_absolute() or p.is_file():
        return p
    if exp.dataframe_dir is None:
        raise ExperimentError(f"experiment {exp.name!r}: dataframe {name!r} is relative but no dataframe_dir is set; "
                              f"pass dataframe_dir=DIR (or set ${DATAFRAME_ENV}) pointing at the KeepFIT/FLAIR "
                              f"dataframes")
    return Path(exp.dataframe_dir) / name


class _Mapper:
    def __init__(self, exp: Experiment):
        self.exp = exp
        self.exact = exp.targets
        self.lenient = {_norm(k): v for k, v in exp.targets.items()}

    def __call__(self, category: str) -> Optional[int]:
        if category in self.exact:
            return self.exact[category]
        return self.lenient.get(_norm(category))


def _labels_of(frame, exp: Experiment, path: Path):
    mapper = _Mapper(exp)
    keep, labels = [], []
    for i, (cats, row) in enumerate(zip(frame["categories"], frame["row"])):
        if exp.task == "multilabel":
            hot = np.zeros(len(exp.classes), dtype=int)
            for c in cats:
                k = mapper(c)
                if k is not None:
                    hot[k] = 1
            ok, value = True, hot
        else:
            value = mapper(cats[0]) if cats else None
            ok = value is not None
        if not ok:
            if exp.drop_unmapped:
                continue
            first = repr(cats[0]) if cats else "no category"
            raise ExperimentError(f"{path}, row {row}: label {first} is not a class of experiment {exp.name!r} "
                                  f"(targets: {sorted(exp.targets)}); set drop_unmapped: true to skip such rows")
        keep.append(i)
        labels.append(value)
    return keep, labels


def load_labeled_images(exp: Experiment, check_files: bool = True) -> LabeledImages:
    """Read the experiment's dataframe(s), map labels, resolve image paths (and check they exist)."""
    if exp.task == SEGMENTATION_TASK:
        raise ExperimentError(f"experiment {exp.name!r} is a segmentation experiment: use `fundus-vlp eval "
                              f"segmentation`")
    if exp.dataframe is None:
        raise ExperimentError(f"experiment {exp.name!r} defines no classification dataframe")
    if exp.image_root is None:
        raise ExperimentError(f"experiment {exp.name!r}: no image_root; pass image_root=DIR (or set ${IMAGE_ROOT_ENV})")
    parts = [(exp.dataframe, False)] + ([(exp.test_dataframe, True)] if exp.test_dataframe else [])
    paths, labels, where, official, groups = [], [], [], [], []
    dropped = 0
    for name, is_test in parts:
        path = _dataframe_path(exp, name)
        try:
            frame = read_categorical(path)
        except DataFormatError as exc:
            raise ExperimentError(str(exc)) from exc
        keep, lab = _labels_of(frame, exp, path)
        dropped += len(frame) - len(keep)
        for i, value in zip(keep, lab):
            rel, row = frame["image"].iat[i], int(frame["row"].iat[i])
            paths.append(resolve_image_path(exp.image_root, rel, path, row))
            where.append(f"{path}, row {row}")
            labels.append(value)
            official.append(is_test)
            groups.append(_group_of(exp, rel, path, row))
    if not paths:
        raise ExperimentError(f"experiment {exp.name!r}: no usable rows")
    if check_files:
        check_images_exist(paths, where, exp.image_root)
    label_arr = np.array(labels, dtype=int)
    _check_classes(exp, label_arr[~np.array(official)] if exp.task != "multilabel" else None)
    return LabeledImages(paths, label_arr, np.array(groups) if exp.group_pattern else None, where,
                         np.array(official, dtype=bool), dropped)


def _group_of(exp: Experiment, rel: str, path: Path, row: int) -> Optional[str]:
    if not exp.group_pattern:
        return None
    m = re.search(exp.group_pattern, rel)
    if m is None:
        raise ExperimentError(f"{path}, row {row}: image path {rel!r} does not match group_pattern "
                              f"{exp.group_pattern!r}")
    return m.group(1) if m.groups() else m.group(0)


def _check_classes(exp: Experiment, labels: Optional[np.ndarray]) -> None:
    if labels is None:
        return
    missing = [exp.classes[k] for k in range(len(exp.classes)) if not np.any(labels == k)]
    if missing:
        raise ExperimentError(f"experiment {exp.name!r}: class(es) {missing} have no samples in {exp.dataframe}")


def check_images_exist(paths: List[Path], where: List[str], image_root: Optional[str] = None, show: int = 5) -> None:
    """Fail early, naming the missing files and their rows, instead of halfway through extraction."""
    missing = [(p, w) for p, w in zip(paths, where) if not p.is_file()]
    if missing:
        lines = "\n".join(f"  {p} ({w})" for p, w in missing[:show])
        more = f"\n  ... and {len(missing) - show} more" if len(missing) > show else ""
        hint = f"; image_root is {image_root}" if image_root else ""
        raise ExperimentError(f"{len(missing)} of {len(paths)} images not found{hint}:\n{lines}{more}")
