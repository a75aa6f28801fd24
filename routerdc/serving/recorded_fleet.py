"""A models config made from the data, for a router served without one: its LLMs answer with their
recorded RouterBench answers (the ``recorded`` backend), and report their recorded prices.

``python -m routerdc serve --checkpoint DIR`` without ``--models-config`` (and the app, when it is
given none) uses :func:`recorded_config_for` so that a RouterBench router shows real answers of its
11 LLMs on a CPU-only machine. The answers come from the router's own training files, when they
are RouterBench CSVs, and from RouterBench's zero-shot train and test files; every LLM of the
router must have recorded answers there, else a :class:`ConfigError` says which ones lack them.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from routerdc.serving.config import ConfigError, ModelsConfig, parse_models_config

__all__ = ["ROUTERBENCH_FILES", "recorded_files", "recorded_models_config", "recorded_config_for"]

# RouterBench's zero-shot files, relative to the data directory (as in configs/routerbench_recorded.yaml).
ROUTERBENCH_FILES: tuple[str, ...] = tuple(
    f"routerbench/routerbench_zs/{task}_{split}.csv"
    for task in ("arc_challenge", "mbpp", "winograde") for split in ("test", "train"))
_RESPONSE = "|model_response"


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir or os.environ.get("ROUTERDC_DATA") or "../shared/data").expanduser()


def _answered(path: Path) -> set[str]:
    """The LLMs with a ``<llm>|model_response`` column in the CSV at ``path`` (its header only)."""
    csv.field_size_limit(1 << 30)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()
    return {c[: -len(_RESPONSE)] for c in header if c.endswith(_RESPONSE)}


def recorded_files(llm_names: Sequence[str], candidates: Sequence[str | os.PathLike],
                   data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The existing CSVs among ``candidates`` (absolute, or relative to the data directory) that
    hold recorded answers of every LLM in ``llm_names``, in order, without repeats."""
    base, out = _data_dir(data_dir), []
    for c in candidates:
        p = Path(os.path.expandvars(str(c))).expanduser()
        p = p if p.is_absolute() else base / p
        if p.suffix.lower() == ".csv" and p not in out and p.is_file() and set(llm_names) <= _answered(p):
            out.append(p)
    return out


def recorded_models_config(llm_names: Sequence[str], files: Sequence[str | os.PathLike]) -> ModelsConfig:
    """A models config in which each of ``llm_names`` answers from the recorded answers in ``files``."""
    if not files:
        raise ConfigError("no files with recorded answers to serve")
    data_files = [str(Path(f).resolve()) for f in files]
    return parse_models_config({"models": [{"name": n, "backend": "recorded", "data_files": data_files}
                                           for n in llm_names]}, "recorded answers")


def recorded_config_for(checkpoint: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> ModelsConfig:
    """The recorded-answer models config of the router in ``checkpoint``: from its recipe's CSV
    files and RouterBench's zero-shot files. :class:`ConfigError` when its LLMs have none."""
    from routerdc.checkpoint import read_config

    meta = read_config(checkpoint)
    names = list(meta["router"]["llm_names"])
    recipe = meta.get("recipe") or {}
    own = [*(recipe.get("train_files") or []), *(recipe.get("test_files") or [])]
    files = recorded_files(names, [*own, *ROUTERBENCH_FILES], data_dir or recipe.get("data_dir"))
    if not files:
        base = _data_dir(data_dir or recipe.get("data_dir"))
        seen = set().union(*(_answered(base / f) for f in ROUTERBENCH_FILES))
        lacking = [n for n in names if n not in seen]
        raise ConfigError(f"{checkpoint}: no models config given, and its LLMs {lacking or names} have no recorded "
                          f"answers in the RouterBench files under {base}; give a models config (--models-config)")
    return recorded_models_config(names, files)
