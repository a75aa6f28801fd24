"""The score data the app shows: the shipped sets of the data directory (the library's catalogue,
:func:`routerdc.data.registry.shipped_files`), loaded once, with an index from query text to rows.
Nothing here imports Gradio."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from routerdc.data import DataError, ScoreSet, load_scores, resolve_data_dir, task_label
from routerdc.data.registry import shipped_files
from routerdc.data.scoreset import query_key

__all__ = ["FAMILY_LABEL", "SHIPPED_FILES", "DataBank", "DataEntry", "load_data"]

# (family, role, path relative to the data directory) of every shipped score file.
SHIPPED_FILES: tuple[tuple[str, str, str], ...] = tuple((f.family, f.role, f.path) for f in shipped_files())
FAMILY_LABEL = {"routerdc": "RouterDC paper data (7 open LLMs)", "routerbench": "RouterBench (11 LLMs, recorded answers)"}


@dataclass
class DataEntry:
    """One loaded score set with where it came from."""

    key: str  # e.g. "routerdc/train/mmlu"
    family: str
    role: str  # "train" | "test" | "upload"
    set: ScoreSet
    path: str

    @property
    def label(self) -> str:
        fam = "RouterBench " if self.family == "routerbench" else ""
        return f"{fam}{task_label(self.set.task)} ({self.role}, {len(self.set)})"


class DataBank:
    """The shipped score sets, with an index from query text to its rows."""

    def __init__(self, entries: Sequence[DataEntry], errors: Sequence[str] = (), data_dir: str | None = None):
        self.entries = list(entries)
        self.errors = list(errors)
        self.data_dir = data_dir
        self.notes: list[str] = []  # e.g. rows skipped for missing scores
        self.index: dict[str, list[tuple[int, int]]] = {}
        for i, e in enumerate(self.entries):
            for r, q in enumerate(e.set.queries):
                self.index.setdefault(query_key(q), []).append((i, r))

    @classmethod
    def load(cls, data_dir: str | None, files: Sequence[tuple[str, str, str]] | None = None,
             max_rows: int = 0) -> "DataBank":
        errors: list[str] = []
        notes: list[str] = []
        try:
            root = resolve_data_dir(data_dir)
        except DataError as exc:
            return cls([], [str(exc)], None)
        if not os.access(root, os.R_OK | os.X_OK):
            return cls([], [f"data directory {root.name!r} is not readable (permission denied); fix its "
                            "permissions or pass another --data-dir"], None)
        entries: list[DataEntry] = []
        for family, role, rel in (files if files is not None else SHIPPED_FILES):
            path = root / rel
            if not path.exists():
                errors.append(f"{rel}: not found in {root}")
                continue
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    sets = load_scores(path, missing="drop")
                notes.extend(str(w.message) for w in caught)
            except DataError as exc:
                errors.append(str(exc))
                continue
            for s in sets:
                if max_rows and len(s) > max_rows:
                    s = s.subset(np.arange(max_rows))
                entries.append(DataEntry(f"{family}/{role}/{s.task}", family, role, s, str(path)))
        bank = cls(entries, errors, str(root))
        bank.notes = notes
        return bank

    def lookup(self, query: str) -> list[tuple[DataEntry, int]]:
        return [(self.entries[i], r) for i, r in self.index.get(query_key(query), [])]

    def matching(self, llms: Sequence[str], roles: Sequence[str] = ("train", "test")) -> list[DataEntry]:
        """The entries whose LLM set is exactly ``llms`` (any order)."""
        want = set(llms)
        return [e for e in self.entries if set(e.set.llms) == want and e.role in roles]

    def by_key(self, key: str) -> DataEntry:
        for e in self.entries:
            if e.key == key:
                return e
        raise KeyError(key)

    def examples(self, per_task: int = 1) -> list[tuple[str, str]]:
        """``(query, label)`` examples: the shortest-but-not-trivial query of each task, test sets
        first, so every task (and both languages) is covered."""
        out: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for e in sorted(self.entries, key=lambda e: (e.role != "test", e.family)):
            tag = (e.family, e.set.task)
            if tag in seen:
                continue
            seen.add(tag)
            qs = [q for q in e.set.queries if 40 <= len(q) <= 400] or list(e.set.queries)
            qs.sort(key=len)
            for q in qs[len(qs) // 4: len(qs) // 4 + per_task]:
                out.append((q, e.label))
        return out


def load_data(settings) -> DataBank:
    """The shipped sets (``settings.data_files`` restricts them), capped at ``settings.max_rows`` rows."""
    files = None
    if settings.data_files is not None:
        files = [f for f in SHIPPED_FILES if f[2] in settings.data_files]
    return DataBank.load(settings.data_dir, files, settings.max_rows)
