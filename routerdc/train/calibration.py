"""Per-LLM routing offsets fitted after training: a calibration of the argmax rule.

The contrastive losses fix the LLM keys k_t only up to what the positives and negatives say;
nothing in them makes ``argmax_t cos(E(x), k_t)`` pick the *best* LLM. An LLM that is good
everywhere but rarely the single best (Meta-Llama-3-8B in the paper's data) ends up in the middle
of the key space and is almost never chosen, while an LLM that is bad at everything but one task
is pushed towards that task's queries. Calibration adds one offset b_t per LLM to the similarity,

    choice(x) = argmax_t ( sim(E(x), k_t) + b_t ),

and fits b to maximise the same criterion as the paper's checkpoint selection, the training-set
average (the mean over training tasks of the test metric, see :mod:`routerdc.evaluate.metrics`):

    b* = argmax_b  1/|tasks| sum_task  mean_{x in task} value(x, choice_b(x)).

The objective is piecewise constant in b, so it is maximised by coordinate ascent over a grid:
each b_t in turn takes the grid value that maximises the objective with the others fixed (the
current value is kept on ties), until a sweep changes nothing. Offsets are reported centred on
their mean (a common shift changes no routing decision nor probability). The encoder and the keys
are untouched; the offsets are stored in the router's config (``llm_bias``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from routerdc.checkpoint import RouterMeta
from routerdc.data import ScoreSet
from routerdc.evaluate.metrics import query_values
from routerdc.novelty import DEFAULT_QUANTILE, NOVELTY_FILE, bank_bytes, fit_novelty
from routerdc.routing import similarities

__all__ = ["DEFAULT_GRID", "Calibration", "fit_llm_bias", "objective", "calibrate_checkpoint", "calibrate_temperature"]

# Offsets in similarity units: cosines lie in [-1, 1], so +-1 spans every useful value.
DEFAULT_GRID: np.ndarray = np.round(np.arange(-1.0, 1.0 + 1e-9, 0.01), 2)


def objective(sims: Sequence[np.ndarray], values: Sequence[np.ndarray], bias: np.ndarray) -> float:
    """The mean over tasks of the mean value of ``argmax_t(sims + bias)``, in percent.

    Args:
        sims: per task, ``(n_i, T)`` similarities.
        values: per task, ``(n_i, T)`` per-query value of each LLM (:func:`routerdc.evaluate.metrics.query_values`).
        bias: ``(T,)`` offsets.
    """
    accs = [v[np.arange(len(v)), (s + bias).argmax(axis=1)].mean() for s, v in zip(sims, values) if len(v)]
    return float(np.mean(accs) * 100.0)


def _sweep_values(s: np.ndarray, v: np.ndarray, bias: np.ndarray, t: int, grid: np.ndarray) -> np.ndarray:
    """Mean value of one task for every grid value of ``b_t`` (others fixed): ``(len(grid),)``.

    With the others fixed, LLM t wins a query iff ``s_t + g`` beats the best other score (on an
    exact tie ``argmax`` keeps the lower index).
    """
    other = s + bias
    other[:, t] = -np.inf
    best = other.argmax(axis=1)
    best_score = other[np.arange(len(s)), best]
    v_other = v[np.arange(len(s)), best]
    wins = (s[:, t][None, :] + grid[:, None] > best_score[None, :]) | (
        (s[:, t][None, :] + grid[:, None] == best_score[None, :]) & (t < best)[None, :])
    return np.where(wins, v[:, t][None, :], v_other[None, :]).mean(axis=1)


def fit_llm_bias(sims: Sequence[np.ndarray], values: Sequence[np.ndarray], *,
                 grid: np.ndarray | None = None, max_sweeps: int = 10) -> np.ndarray:
    """Offsets ``b`` ``(T,)`` maximising :func:`objective` by coordinate ascent over ``grid``.

    Starts from b = 0 and keeps a coordinate's current value whenever it is among the best, so
    an LLM gets a non-zero offset only when that strictly raises the training-set average.
    """
    sims = [np.asarray(s, dtype=np.float64) for s in sims]
    values = [np.asarray(v, dtype=np.float64) for v in values]
    if not sims or len(sims) != len(values):
        raise ValueError("give one similarity array and one value array per task")
    n_llms = sims[0].shape[1]
    for s, v in zip(sims, values):
        if s.ndim != 2 or s.shape != v.shape or s.shape[1] != n_llms:
            raise ValueError(f"similarities {s.shape} and values {v.shape} must both be (n, {n_llms})")
    if not any(len(s) for s in sims):
        raise ValueError("no queries to calibrate on")
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    sims_v = [(s, v) for s, v in zip(sims, values) if len(s)]
    bias = np.zeros(n_llms)
    for _ in range(max_sweeps):
        changed = False
        for t in range(n_llms):
            curve = 100.0 * np.mean([_sweep_values(s, v, bias, t, grid) for s, v in sims_v], axis=0)
            if curve.max() > objective(sims, values, bias) + 1e-9:
                winners = np.flatnonzero(curve >= curve.max() - 1e-9)
                bias[t] = grid[winners[len(winners) // 2]]  # the middle of the best values
                changed = True
        if not changed:
            break
    return bias - bias.mean()


@dataclass(frozen=True)
class Calibration:
    """Fitted offsets and the training-set average (percent) before and after, per task too."""

    llm_names: tuple[str, ...]
    bias: tuple[float, ...]
    before: float
    after: float
    per_task_before: dict[str, float]
    per_task_after: dict[str, float]
    n_queries: int

    def to_dict(self) -> dict[str, Any]:
        return {"bias": dict(zip(self.llm_names, self.bias)), "train_avg_before": self.before,
                "train_avg_after": self.after, "per_task_before": self.per_task_before,
                "per_task_after": self.per_task_after, "n_queries": self.n_queries,
                "rule": "argmax_t sim + b_t; b fitted by coordinate ascent on the training-set average"}


def calibrate(llm_names: Sequence[str], sims: Sequence[np.ndarray], sets: Sequence[ScoreSet], *,
              grid: np.ndarray | None = None) -> Calibration:
    """Fit offsets for a router whose similarities on ``sets`` (columns in ``llm_names`` order) are ``sims``."""
    sets = [s.align(llm_names) for s in sets]
    values = [query_values(s.scores, s.metric) for s in sets]
    bias = fit_llm_bias(sims, values, grid=grid)
    zero = np.zeros(len(llm_names))

    def per_task(b: np.ndarray) -> dict[str, float]:
        return {s.task: objective([x], [v], b) for s, x, v in zip(sets, sims, values) if len(s)}

    return Calibration(
        llm_names=tuple(llm_names), bias=tuple(round(float(b), 6) for b in bias),
        before=objective(sims, values, zero), after=objective(sims, values, bias),
        per_task_before=per_task(zero), per_task_after=per_task(bias), n_queries=sum(len(s) for s in sets),
    )


def _embeddings(router: Any, sets: Sequence[ScoreSet], cache_dir: str | os.PathLike | None) -> list[np.ndarray]:
    """E(x) of ``router`` on each set's queries, through the on-disk cache (a frozen, pretrained
    encoder shares the trainer's cache; a fine-tuned one is keyed by its weights)."""
    from routerdc.inference.embed_cache import embedding_key, router_embeddings

    key = embedding_key(router)
    return [router_embeddings(router, s.queries, key=key, cache_dir=cache_dir) for s in sets]


def _similarities(router: Any, embs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """sim(E(x), k_t) of ``router`` for each set's embeddings (:func:`_embeddings`)."""
    return [similarities(e, router.keys, router.config.similarity) for e in embs]


def calibrate_checkpoint(folder: str | os.PathLike, sets: Sequence[ScoreSet], *,
                         output: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                         grid: np.ndarray | None = None, device: Any = "cpu", engine: str = "torch",
                         remeasure: bool = False, temperature: bool = True,
                         novelty: float | None = DEFAULT_QUANTILE) -> Calibration:
    """Fit the offsets of the router in ``folder`` on ``sets`` and store them in its config; with
    ``temperature`` also the temperature after them (:mod:`routerdc.train.temperature`), on the
    same rows, so that its probabilities are calibrated (no choice changes); with ``novelty`` (a
    quantile q) also the novelty fallback (:func:`routerdc.novelty.fit_novelty`: its bank goes to
    ``novelty.safetensors`` in the same atomic write), ``None``: the router has none.

    Any offsets it already has are ignored (the fit starts from the raw similarities), so
    calibrating twice on the same data gives the same router. ``output`` (default: ``folder``
    itself) receives the calibrated router; only its ``config.json`` differs, rewritten
    atomically, so a failure leaves the original intact. Query embeddings go through the
    on-disk cache keyed by the checkpoint's content (offsets aside: see
    :func:`~routerdc.inference.embed_cache.embedding_key`).
    """
    from routerdc.inference import load_router

    folder = Path(folder)
    router = load_router(folder, engine, device, remeasure=remeasure)  # the inference layer's engine
    names = router.config.llm_names
    embs = _embeddings(router, sets, cache_dir)
    sims = _similarities(router, embs)
    result = calibrate(names, sims, sets, grid=grid)
    record = {**result.to_dict(), "tasks": [s.task for s in sets], "sources": [s.source for s in sets]}
    meta = RouterMeta.read(folder).with_offsets(result.bias, record)
    if temperature:
        from routerdc.train.temperature import temperature_fit

        fit = temperature_fit([x + np.asarray(result.bias) for x in sims], [s.align(names) for s in sets],
                              before=router.config.temperature)
        meta = meta.with_temperature(fit.temperature, fit.to_dict())
    files: dict[str, bytes | None] = {NOVELTY_FILE: None} if (folder / NOVELTY_FILE).exists() else {}
    if novelty is None:
        meta = meta.without_novelty()
    else:
        aligned = [s.align(names) for s in sets]
        nov = fit_novelty(embs, [query_values(s.scores, s.metric) for s in aligned], quantile=novelty)
        meta = meta.with_novelty(nov.threshold, nov.prior, nov.record(names))
        files[NOVELTY_FILE] = bank_bytes(nov.bank)
    meta.write(folder, output, files=files)
    return result


def calibrate_temperature(folder: str | os.PathLike, sets: Sequence[ScoreSet], *,
                          output: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                          device: Any = "cpu", engine: str = "torch") -> Any:
    """Fit only the temperature of the router in ``folder`` on ``sets``, after the offsets it has
    (none: b = 0), and store it in its config (atomically; ``output`` receives a copy instead).
    Returns the :class:`routerdc.train.temperature.TemperatureFit`. No choice changes."""
    from routerdc.inference import load_router
    from routerdc.train.temperature import temperature_fit

    folder = Path(folder)
    router = load_router(folder, engine, device)
    cfg = router.config
    sets = [s.align(cfg.llm_names) for s in sets]
    bias = np.zeros(len(cfg.llm_names)) if cfg.llm_bias is None else np.asarray(cfg.llm_bias)
    scores = [x + bias for x in _similarities(router, _embeddings(router, sets, cache_dir))]
    fit = temperature_fit(scores, sets, before=cfg.temperature)
    RouterMeta.read(folder).with_temperature(fit.temperature, {**fit.to_dict(), "tasks": [s.task for s in sets]}
                                             ).write(folder, output)
    return fit
