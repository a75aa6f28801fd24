"""Checked engines: a fast engine's embeddings, with torch fp32 for the near-ties.

``torch-bf16-checked`` embeds every query under bf16 autocast, scores it with the one routing rule
(:func:`routerdc.routing.route_embeddings`), and embeds again in torch fp32 only the queries that
are near a tie; their fp32 embeddings replace the bf16 ones. So it routes like torch fp32 while
most queries cost a bf16 forward.

Why the margin decides: bf16's choice ``i`` differs from fp32's only if for some LLM ``j`` the
error of the score difference ``s_i - s_j`` exceeds the difference itself. Scores are
``s_t = sim_t + b_t - lambda * c_t`` (temperature x logit; the gap is ``tau * log(p_i / p_j)``, read
from the rule's probabilities); offsets and costs are exact, so bf16's error is that of
``sim_i - sim_j``, whatever the temperature and cost weight. A query is re-encoded when its choice
leads some ``j`` by less than ``bounds[i, j]`` = :data:`SAFETY` x the largest error of that pair's
difference that bf16 made on the probe set (:func:`pair_errors`), measured by ``auto`` and cached
with its decision. Pairs of LLMs whose keys are close have small errors, hence the per-pair bounds
(measured on the shipped router: 15% of the test queries re-encoded, against 37% with one bound
for all pairs, both with every choice equal to fp32's).

With the novelty fallback (:mod:`routerdc.novelty`) a choice also flips when the query's
similarity to its nearest training query crosses the threshold, so a query is re-encoded too when
that similarity is within ``novelty_bound`` of the threshold (:data:`SAFETY` x bf16's largest
error of it on the probes, :func:`novelty_error`) and the router's own pick is not the fallback
LLM: when it is (and no tie is near), the query goes to that LLM whichever side of the threshold
it falls, so only its ``novel`` flag, not its choice, may differ from fp32's. A query that is
clearly novel goes to the fallback whatever its score gaps, so those are not checked.

The router's probabilities are nearly uniform (the Chinese test queries, mostly ``[UNK]`` to
MiniLM, have a median top-two gap of 0.004 in cosine units), so a sizeable share of queries is
re-encoded: see README.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from routerdc.routing import Routing, route_embeddings

__all__ = ["CHECKED", "SAFETY", "CheckedEngine", "bounds_from_errors", "calibrate", "measured_bounds", "near_tie_mask",
           "novelty_bound", "novelty_error", "pair_errors", "score_gaps"]

CHECKED: dict[str, str] = {"torch-bf16-checked": "torch-bf16"}  # checked engine -> its fast engine
SAFETY = 1.5
MIN_BOUND = 1e-4  # a probe on which bf16 made no error at all still checks exact ties


def score_gaps(routing: Routing, temperature: float) -> np.ndarray:
    """``(n, T)``: each row's score of its top LLM (the argmax, before any novelty fallback) minus
    every LLM's score, in score units (``temperature * (log p_top - log p_t)``; 0 at the top, ``inf``
    where ``p_t`` underflows)."""
    with np.errstate(divide="ignore"):
        lp = np.log(routing.probs.astype(np.float64))
    rows = np.arange(len(lp))
    return temperature * (lp[rows, routing.router_choice][:, None] - lp)


def pair_errors(fast: Routing, exact: Routing) -> np.ndarray:
    """``(T, T)``: the largest error of each score difference ``s_i - s_j`` over the rows (offsets
    and costs are the same in both, so it is the error of ``sim_i - sim_j``)."""
    t = fast.similarities.shape[1]
    if len(fast.similarities) == 0:
        return np.zeros((t, t))
    err = fast.similarities.astype(np.float64) - exact.similarities.astype(np.float64)
    return np.abs(err[:, :, None] - err[:, None, :]).max(axis=0)


def novelty_error(fast: Routing, exact: Routing) -> float:
    """The largest error of the nearest-training-query similarity over the rows (0 without the fallback)."""
    if fast.nearest is None or exact.nearest is None or len(fast.nearest) == 0:
        return 0.0
    return float(np.abs(np.asarray(fast.nearest, np.float64) - np.asarray(exact.nearest, np.float64)).max())


def novelty_bound(error: float, safety: float = SAFETY) -> float:
    """The distance to the novelty threshold below which a query is re-encoded in fp32."""
    return max(float(safety) * float(error), MIN_BOUND)


def bounds_from_errors(errors: np.ndarray, safety: float = SAFETY) -> np.ndarray:
    """``(T, T)`` margins below which a query is re-encoded in fp32: ``safety`` x the measured
    error of each pair, at least :data:`MIN_BOUND` (0 on the diagonal)."""
    b = np.maximum(float(safety) * np.asarray(errors, dtype=np.float64), MIN_BOUND)
    np.fill_diagonal(b, 0.0)
    return b


def measured_bounds(fast: Routing, exact: Routing, safety: float = SAFETY) -> tuple[np.ndarray, float]:
    """``(bounds, novelty bound)`` from a fast engine's routings of the probes against exact ones:
    :func:`bounds_from_errors` of :func:`pair_errors`, :func:`novelty_bound` of :func:`novelty_error`."""
    return bounds_from_errors(pair_errors(fast, exact), safety), novelty_bound(novelty_error(fast, exact), safety)


def near_tie_mask(routing: Routing, bounds: np.ndarray, novelty_bound: float) -> np.ndarray:
    """``(n,)`` bool: the rows whose decision bf16 may have flipped, so the checked engine re-encodes
    them: the top LLM leads some ``j`` by less than ``bounds[top, j]`` (unless the query is novel
    beyond doubt: the fallback takes it whatever the gaps), or the nearest training query's
    similarity is within ``novelty_bound`` of the threshold while the router's own pick is not the
    fallback LLM (were it, either side of the threshold gives the same choice). ``routing`` at
    temperature 1."""
    b = np.array(bounds, dtype=np.float64)
    np.fill_diagonal(b, 0.0)  # the top LLM's gap to itself is 0: never a tie
    tie = (score_gaps(routing, 1.0) < b[routing.router_choice]).any(axis=1)
    if routing.nearest is not None:
        near = np.abs(np.asarray(routing.nearest) - float(routing.novelty_threshold)) < novelty_bound  # type: ignore[arg-type]
        tie = (tie & (~routing.novel | near)) | (near & (routing.router_choice != routing.fallback))
    return tie


def calibrate(fast: Any, exact: Any, texts: Sequence[str]) -> tuple[np.ndarray, float]:
    """:func:`measured_bounds` of engine ``fast`` against ``exact`` on ``texts`` (the probe queries)."""
    config, keys, bank = exact.config, exact.keys, exact.bank
    return measured_bounds(route_embeddings(fast.embed(list(texts)), keys, config, bank=bank),
                           route_embeddings(exact.embed(list(texts)), keys, config, bank=bank))


@dataclass
class CheckedEngine:
    """``fast`` embeds, ``exact`` (torch fp32) re-embeds the queries within ``bounds`` of a tie:
    those whose choice ``i`` leads some LLM ``j`` by less than ``bounds[i, j]`` (score units)."""

    fast: Any
    exact: Any
    bounds: np.ndarray  # (T, T)
    name: str = "torch-bf16-checked"
    novelty_bound: float = MIN_BOUND  # re-encode when the nearest training query is this close to the threshold
    checks_ties: bool = True  # Router.route passes its cost weight (the margin depends on it)
    embedded: int = 0
    rechecked: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.bounds = np.asarray(self.bounds, dtype=np.float64)
        t = len(self.fast.config.llm_names)
        if self.bounds.shape != (t, t) or not np.all(np.isfinite(self.bounds)):
            raise ValueError(f"a checked engine needs a finite ({t}, {t}) matrix of margin bounds, "
                             f"got shape {self.bounds.shape}")
        self.config = self.fast.config
        self.keys = self.fast.keys
        self.meta = self.fast.meta
        self.bank = getattr(self.fast, "bank", None)
        if not (np.isfinite(self.novelty_bound) and self.novelty_bound > 0):
            raise ValueError(f"a checked engine needs a positive novelty bound, got {self.novelty_bound}")

    def near_ties(self, emb: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        """Rows of ``emb`` whose choice (at ``cost_weight``) leads another LLM by less than its bound."""
        r = route_embeddings(emb, self.keys, self.config, temperature=1.0, cost_weight=cost_weight,
                             bank=self.bank)  # tau 1: no underflow
        return np.flatnonzero(near_tie_mask(r, self.bounds, self.novelty_bound))

    def embed(self, texts: Sequence[str], *, token_budget: int | None = None, max_rows: int | None = None,
              cost_weight: float = 0.0) -> np.ndarray:
        texts = list(texts)
        emb = self.fast.embed(texts, token_budget=token_budget, max_rows=max_rows)
        if not texts:
            return emb
        near = self.near_ties(emb, cost_weight)
        if near.size:
            emb[near] = self.exact.embed([texts[i] for i in near], token_budget=token_budget, max_rows=max_rows)
        with self._lock:
            self.embedded += len(texts)
            self.rechecked += int(near.size)
        return emb

    @property
    def recheck_share(self) -> float | None:
        """Share of the queries embedded so far that were re-encoded in fp32."""
        return self.rechecked / self.embedded if self.embedded else None

    @property
    def unk_token_id(self) -> int | None:
        return self.fast.unk_token_id

    def token_ids(self, text: str) -> list[int]:
        return self.fast.token_ids(text)
