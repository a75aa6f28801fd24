"""The in-memory score data set: queries, a score per (query, LLM), and optional extras.

A :class:`ScoreSet` is one task (MMLU, GSM8K, ...). Its columns are LLMs, named; every
operation that combines sets aligns them by name (:meth:`ScoreSet.align`), never by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import numpy as np

Metric = Literal["probability", "multi_attempt"]
METRICS: tuple[str, ...] = ("probability", "multi_attempt")


class DataError(ValueError):
    """A score file or score set is malformed. The message names the file and the row."""


@dataclass(frozen=True, eq=False)
class ScoreSet:
    """One task's queries with a score per LLM.

    Attributes:
        task: task name, e.g. ``"mmlu"`` (see :mod:`routerdc.data.registry`).
        metric: ``"probability"`` (a query counts 1 if the chosen LLM's score is > 0) or
            ``"multi_attempt"`` (the chosen LLM's score counts as is).
        llms: the LLM names, one per column of ``scores``.
        queries: the query texts.
        scores: ``(n, T)`` float32 array, finite.
        clusters: optional ``(n,)`` int64 array of cluster ids (the sample-sample loss groups).
        costs: optional ``(n, T)`` float array of dollar costs (RouterBench).
        responses: optional per-row tuple of recorded answers, one per LLM ("" when absent).
        source: where the rows came from (a file path), for messages.
        rows: the row number of each query in ``source`` (1-based, as a person counts).
    """

    task: str
    metric: Metric
    llms: tuple[str, ...]
    queries: tuple[str, ...]
    scores: np.ndarray
    clusters: np.ndarray | None = None
    costs: np.ndarray | None = None
    responses: tuple[tuple[str, ...], ...] | None = None
    source: str = "<memory>"
    rows: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        where = f"{self.source} (task {self.task!r})"
        if self.metric not in METRICS:
            raise DataError(f"{where}: metric must be one of {METRICS}, got {self.metric!r}")
        if len(set(self.llms)) != len(self.llms):
            dup = sorted({n for n in self.llms if self.llms.count(n) > 1})
            raise DataError(f"{where}: duplicate LLM names {dup}")
        if len(self.llms) == 0:
            raise DataError(f"{where}: no LLMs")
        scores = np.asarray(self.scores, dtype=np.float32)
        n = len(self.queries)
        if scores.shape != (n, len(self.llms)):
            raise DataError(
                f"{where}: scores have shape {scores.shape}, expected {(n, len(self.llms))}"
            )
        if not np.isfinite(scores).all():
            r = int(np.argwhere(~np.isfinite(scores))[0][0])
            raise DataError(f"{where}, row {self._row(r)}: non-finite score")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "queries", tuple(self.queries))
        object.__setattr__(self, "llms", tuple(self.llms))
        if not self.rows:
            object.__setattr__(self, "rows", tuple(range(1, n + 1)))
        elif len(self.rows) != n:
            raise DataError(f"{where}: {len(self.rows)} row numbers for {n} queries")
        if self.clusters is not None:
            clusters = np.asarray(self.clusters, dtype=np.int64)
            if clusters.shape != (n,):
                raise DataError(f"{where}: clusters have shape {clusters.shape}, expected ({n},)")
            object.__setattr__(self, "clusters", clusters)
        if self.costs is not None:
            costs = np.asarray(self.costs, dtype=np.float64)
            if costs.shape != scores.shape or not np.isfinite(costs).all():
                raise DataError(f"{where}: costs must be a finite {scores.shape} array")
            object.__setattr__(self, "costs", costs)
        if self.responses is not None and len(self.responses) != n:
            raise DataError(f"{where}: {len(self.responses)} response rows for {n} queries")

    def _row(self, i: int) -> int:
        return self.rows[i] if self.rows else i + 1

    def __len__(self) -> int:
        return len(self.queries)

    def __repr__(self) -> str:
        return (
            f"ScoreSet(task={self.task!r}, metric={self.metric!r}, n={len(self)}, "
            f"llms={len(self.llms)}, clusters={self.clusters is not None}, source={self.source!r})"
        )

    def align(self, llms: Sequence[str]) -> "ScoreSet":
        """Return this set with its columns in the order of ``llms``.

        Raises :class:`DataError` when the LLM sets differ (names missing or extra).
        """
        llms = tuple(llms)
        if llms == self.llms:
            return self
        missing, extra = set(llms) - set(self.llms), set(self.llms) - set(llms)
        if missing or extra:
            raise DataError(
                f"{self.source}: LLM names differ from the expected set; "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        return self.select(llms)

    def select(self, llms: Sequence[str]) -> "ScoreSet":
        """This set with only the columns ``llms``, in that order (e.g. to drop an LLM).

        Raises :class:`DataError` when one of ``llms`` has no column here.
        """
        llms = tuple(llms)
        missing = sorted(set(llms) - set(self.llms))
        if missing:
            raise DataError(f"{self.source}: no score column for {missing}")
        order = [self.llms.index(name) for name in llms]
        return replace(
            self,
            llms=llms,
            scores=self.scores[:, order],
            costs=None if self.costs is None else self.costs[:, order],
            responses=None
            if self.responses is None
            else tuple(tuple(r[j] for j in order) for r in self.responses),
        )

    def recorded(self, row: int, llm: str) -> tuple[str, float | None] | None:
        """LLM ``llm``'s recorded answer to query ``row`` and its recorded price in dollars (None when
        the set records no costs), or None when there is no answer (RouterBench records answers).
        The one reader of recorded answers: the app's answer box and the recorded backend use it."""
        if self.responses is None or llm not in self.llms:
            return None
        col = self.llms.index(llm)
        text = self.responses[row][col] or ""
        if not text.strip():
            return None
        return text, None if self.costs is None else float(self.costs[row][col])

    def subset(self, index: Sequence[int] | np.ndarray) -> "ScoreSet":
        """Rows ``index`` (repeats allowed), keeping every column and extra."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        return replace(
            self,
            queries=tuple(self.queries[i] for i in idx),
            scores=self.scores[idx],
            clusters=None if self.clusters is None else self.clusters[idx],
            costs=None if self.costs is None else self.costs[idx],
            responses=None if self.responses is None else tuple(self.responses[i] for i in idx),
            rows=tuple(self.rows[i] for i in idx),
        )

    def with_clusters(self, clusters: Sequence[int] | np.ndarray) -> "ScoreSet":
        """A copy with ``clusters`` as the cluster ids."""
        return replace(self, clusters=np.asarray(clusters, dtype=np.int64))

    def metric_scores(self) -> "ScoreSet":
        """Scores as the test metric counts them: ``probability`` tasks become 1 where the LLM
        answered correctly (score > 0) and 0 elsewhere; ``multi_attempt`` pass rates stay as is."""
        if self.metric != "probability":
            return self
        return replace(self, scores=(self.scores > 0).astype(np.float32))

    def cost_adjusted(self, cost_rate: float) -> "ScoreSet":
        """Scores ``score - cost_rate * cost`` (the RouterDC authors' cost-aware RouterBench run)."""
        if self.costs is None:
            raise DataError(f"{self.source}: no costs to adjust the scores with")
        return replace(self, scores=self.scores - cost_rate * self.costs)


def query_key(text: str) -> str:
    """How a query is looked up in score data (recorded scores and answers): its words, whitespace
    collapsed, so that a query typed or sent with other spacing still finds its row."""
    return " ".join(text.split())


def check_same_llms(sets: Sequence[ScoreSet]) -> tuple[str, ...]:
    """The common LLM names of ``sets`` (in the first set's order); raise if any set differs."""
    if not sets:
        raise DataError("no score sets given")
    first = sets[0]
    for other in sets[1:]:
        if set(other.llms) != set(first.llms):
            missing = sorted(set(first.llms) - set(other.llms))
            extra = sorted(set(other.llms) - set(first.llms))
            raise DataError(
                f"{other.source}: its LLMs differ from those of {first.source}; "
                f"missing {missing}, unexpected {extra}"
            )
    return first.llms
