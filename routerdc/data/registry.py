"""Known tasks: display labels, metric types and the files of the shipped score data.

The data directory is configurable: the ``--data-dir`` option of every command, else the
``ROUTERDC_DATA`` environment variable, else ``../shared/data`` beside the project.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from routerdc.data.scoreset import DataError

DATA_ENV = "ROUTERDC_DATA"


@dataclass(frozen=True)
class TaskInfo:
    """What the project knows of a task: its label, metric and role in the paper."""

    name: str
    label: str
    metric: str
    distribution: str  # "id" or "ood" in the paper's split
    train_file: str | None = None  # relative to the data directory
    test_file: str | None = None


_SPLIT = "routerdc/split2_model7"
_CLUSTER = "routerdc/split2_model7_cluster"

TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo("mmlu", "MMLU", "probability", "id", "mmlu_train.json", "mmlu_test.json"),
        TaskInfo("gsm8k", "GSM8K", "multi_attempt", "id", "gsm8k-train.json", "gsm8k-test.json"),
        TaskInfo("cmmlu", "CMMLU", "probability", "id", "cmmlu_train.json", "cmmlu_test.json"),
        TaskInfo(
            "arc_challenge", "ARC-C", "probability", "id",
            "arc_challenge_train.json", "arc_challenge_test.json",
        ),
        TaskInfo(
            "humaneval", "HumanEval", "multi_attempt", "id",
            "humaneval_train.json", "humaneval_test.json",
        ),
        TaskInfo("prealgebra", "PreAlgebra", "probability", "ood", None, "MATH_prealgebra.json"),
        TaskInfo("mbpp", "MBPP", "multi_attempt", "ood", None, "mbpp.json"),
        TaskInfo("ceval", "C-EVAL", "probability", "ood", None, "ceval.json"),
        TaskInfo("winogrande", "Winogrande", "probability", "id"),
    )
}

# Other spellings seen in file names and RouterBench's eval_name column.
_ALIASES = {
    "arc": "arc_challenge",
    "arc_c": "arc_challenge",
    "arc-challenge": "arc_challenge",
    "math_prealgebra": "prealgebra",
    "winograde": "winogrande",
    "c_eval": "ceval",
    "c-eval": "ceval",
}

PAPER_ID_TASKS: tuple[str, ...] = ("mmlu", "gsm8k", "cmmlu", "arc_challenge", "humaneval")
PAPER_OOD_TASKS: tuple[str, ...] = ("prealgebra", "mbpp", "ceval")


# RouterBench (11 LLMs with costs and recorded answers), as prepared by the RouterDC authors.
ROUTERBENCH_TRAIN_DIR = "routerbench/routerbench_cluster"
ROUTERBENCH_TEST_DIR = "routerbench/routerbench_zs"
ROUTERBENCH_TASK_FILES: tuple[str, ...] = ("arc_challenge", "mbpp", "winograde")


@dataclass(frozen=True)
class ShippedFile:
    """A score file of the data directory: its family (``routerdc`` or ``routerbench``), its role
    (``train`` or ``test``) and its path relative to the data directory."""

    family: str
    role: str
    path: str


def shipped_files() -> tuple[ShippedFile, ...]:
    """The catalogue of score files the project knows: the paper's training files (with cluster
    ids) and test files (ID then OOD), then RouterBench's training and test files."""
    paper = [ShippedFile("routerdc", "train", f"{_CLUSTER}/{TASKS[t].train_file}") for t in PAPER_ID_TASKS]
    paper += [ShippedFile("routerdc", "test", f"{_SPLIT}/{TASKS[t].test_file}")
              for t in PAPER_ID_TASKS + PAPER_OOD_TASKS]
    bench = [ShippedFile("routerbench", "train", f"{ROUTERBENCH_TRAIN_DIR}/{t}_train.csv") for t in ROUTERBENCH_TASK_FILES]
    bench += [ShippedFile("routerbench", "test", f"{ROUTERBENCH_TEST_DIR}/{t}_test.csv") for t in ROUTERBENCH_TASK_FILES]
    return tuple(paper + bench)


def canonical_task(name: str) -> str:
    """Normalise a task name or file stem: ``"gsm8k-train"`` -> ``"gsm8k"``."""
    key = name.strip().lower().replace(" ", "_")
    key = re.sub(r"[-_.](train|test|dev|val|validation)$", "", key)
    key = _ALIASES.get(key, key).replace("-", "_")
    return _ALIASES.get(key, key)


def task_metric(task: str, default: str = "multi_attempt") -> str:
    """The metric of a known task, else ``default`` (scores counted as they are)."""
    info = TASKS.get(canonical_task(task))
    return info.metric if info else default


def task_label(task: str) -> str:
    info = TASKS.get(canonical_task(task))
    return info.label if info else task


def data_dir_path(data_dir: str | os.PathLike | None = None) -> Path:
    """Where the score data are (or go): the argument, else ``$ROUTERDC_DATA``, else
    ``../shared/data`` beside the checkout; unchecked (``data fetch`` creates it). An empty
    ``$ROUTERDC_DATA`` counts as unset (not as the current folder)."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV) or None
    if data_dir is None:
        data_dir = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return Path(data_dir).expanduser()


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The score-data directory: the argument, else ``$ROUTERDC_DATA``, else ``../shared/data``."""
    path = data_dir_path(data_dir)
    if not path.is_dir():
        raise DataError(
            f"data directory {str(path)!r} does not exist; pass --data-dir or set {DATA_ENV}"
        )
    return path


def paper_files(
    data_dir: str | os.PathLike | None = None, *, clustered: bool = True
) -> tuple[list[Path], list[Path]]:
    """The paper's training files (5 in-distribution tasks) and test files (5 ID + 3 OOD)."""
    root = resolve_data_dir(data_dir)
    train_root = root / (_CLUSTER if clustered else _SPLIT)
    train = [train_root / TASKS[t].train_file for t in PAPER_ID_TASKS]  # type: ignore[operator]
    test = [root / _SPLIT / TASKS[t].test_file for t in PAPER_ID_TASKS + PAPER_OOD_TASKS]  # type: ignore[operator]
    return train, test


def resolve_file(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """A data file given as an absolute/relative path, or relative to the data directory."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    if not p.is_absolute():
        try:
            candidate = resolve_data_dir(data_dir) / p
        except DataError:
            candidate = None
        if candidate is not None and candidate.exists():
            return candidate
    raise DataError(f"{str(path)!r}: no such file (also looked in the data directory)")
