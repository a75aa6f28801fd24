"""Change a router's fleet without retraining its encoder: add a candidate LLM, or remove one.

RouterDC keeps one key k_t per LLM, so a fleet change touches only the keys:

* :func:`add_llm` fits the new LLM's key alone. The encoder and every other key stay fixed; the
  training queries are embedded once (through the embedding cache) and the new key k_new
  minimises the sample-LLM loss of the full fleet (RouterDC eq. 3) over those embeddings::

      s_t(x) = sim(E(x), k_t) / tau,   t in old fleet + {new}
      k_new = argmin_k  L_sLLM(s(x), scores(x))      (only s_new depends on k)

  The key is optimised with Adam on full batches from two starts, scaled to the old keys' mean
  norm: the mean of the (unit) embeddings of the queries on which the new LLM is a positive, and
  the mean of all queries (where training leaves an LLM that is good everywhere but rarely the
  single best). Of the keys at step 0 and every 25 steps of both runs, the one whose router has
  the best training-set average after calibration is kept (the trainer's selection rule).
* :func:`remove_llm` drops the LLM's key and offset.

Both then refit the calibrated offsets b_t (:func:`routerdc.train.calibration.calibrate`) on the score
files, write a new router folder atomically (weights as they were, the LLM keys changed) and
record the change in its ``config.json`` under ``fleet_changes``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from routerdc.evaluate.cost_curve import mean_costs
from routerdc.data import ScoreSet

__all__ = ["FleetChange", "FleetError", "add_llm", "check_columns", "remove_llm"]


class FleetError(ValueError):
    """A fleet change that cannot be made (an LLM already there or absent, score files that do not fit)."""


@dataclass(frozen=True)
class FleetChange:
    """What a fleet change did: the new router's folder and LLMs, the calibration, the time."""

    op: str  # "add" | "remove"
    llm: str
    output: Path
    llm_names: tuple[str, ...]
    seconds: float
    train_avg_before: float  # calibrated training-set average (percent) before and after the refit
    train_avg_after: float
    loss: float | None = None  # add: the sample-LLM loss at the fitted key

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "llm": self.llm, "output": str(self.output), "llm_names": list(self.llm_names),
                "seconds": round(self.seconds, 2), "train_avg_before": self.train_avg_before,
                "train_avg_after": self.train_avg_after, "loss": self.loss}


def check_columns(sets: Sequence[ScoreSet], known: Sequence[str], new: str | None = None) -> None:
    """Every set must score exactly ``known`` (plus ``new`` when adding); the error names the LLM."""
    want = set(known) | ({new} if new else set())
    for s in sets:
        have = set(s.llms)
        if new and new not in have:
            raise FleetError(f"{s.source or s.task}: no score column for the LLM to add, {new!r}")
        unknown = sorted(have - want)
        if unknown:
            raise FleetError(f"{s.source or s.task}: the router does not know the LLM(s) {unknown}; "
                             f"every column but {new!r} must be one of its LLMs" if new else
                             f"{s.source or s.task}: the router does not know the LLM(s) {unknown}")
        missing = sorted(want - have)
        if missing:
            raise FleetError(f"{s.source or s.task}: no score column for the router's LLM(s) {missing}")


class KeyFit(NamedTuple):
    """A fitted key: the key, its sample-LLM loss, the start and step it was taken at, its selection score."""

    key: np.ndarray
    loss: float
    step: int
    score: float | None
    start: str = "positives"


def fit_key(emb: np.ndarray, old_keys: np.ndarray, scores: np.ndarray, *, similarity: str = "cos",
            temperature: float = 1.0, k_pos: int = 3, k_neg: int = 3, neg_threshold: float = 0.5,
            tie_break: str = "index", steps: int = 300, lr: float = 0.05, seed: int = 0,
            select: Callable[[np.ndarray], float] | None = None, select_every: int = 25) -> KeyFit:
    """The key of a new last LLM, ``(d,)``, fitted on the sample-LLM loss with the old keys fixed.

    Args:
        emb: ``(n, d)`` router embeddings of the training queries (after the projection).
        old_keys: ``(T, d)`` the fleet's keys.
        scores: ``(n, T + 1)`` training scores, the new LLM last.
        select: scores a candidate key (higher is better); the key is then taken from step 0
            and every ``select_every`` steps (and the last) by this score, as the trainer picks
            its checkpoint by the training-set average. Without it, the last step's key.
    """
    import torch

    from routerdc.model.losses import sample_llm_loss

    if scores.shape != (len(emb), len(old_keys) + 1):
        raise FleetError(f"scores must be ({len(emb)}, {len(old_keys) + 1}), got {scores.shape}")
    if len(emb) == 0:
        raise FleetError("no training queries to fit the new key on")
    q = torch.as_tensor(emb, dtype=torch.float32)
    k_old = torch.as_tensor(old_keys, dtype=torch.float32)
    s = torch.as_tensor(scores, dtype=torch.float32)
    if similarity == "cos":
        q = torch.nn.functional.normalize(q, dim=-1)
        k_old = torch.nn.functional.normalize(k_old, dim=-1)
    # Two starts: where the new LLM's positives are (the mean of their unit embeddings), and the
    # middle of all queries (where an LLM that is good everywhere but rarely the best ends up).
    rank = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :min(k_pos, s.shape[1])]
    is_pos = (rank == s.shape[1] - 1).any(dim=1) & (s[:, -1] > 0)
    unit = torch.nn.functional.normalize(torch.as_tensor(emb, dtype=torch.float32), dim=-1)
    norm = torch.as_tensor(old_keys, dtype=torch.float32).norm(dim=1).mean()
    starts = [("positives", unit[is_pos].mean(0))] if bool(is_pos.any()) else []
    if select is not None or not starts:
        starts.append(("all queries", unit.mean(0)))
    gen = torch.Generator().manual_seed(seed)
    sims_old = q @ k_old.T

    def loss_at(k: torch.Tensor) -> torch.Tensor:
        k_n = torch.nn.functional.normalize(k, dim=0) if similarity == "cos" else k
        logits = torch.cat([sims_old, (q @ k_n)[:, None]], dim=1) / temperature
        return sample_llm_loss(logits, s, k_pos, k_neg, neg_threshold, tie_break=tie_break, generator=gen)

    best: KeyFit | None = None
    for where, init in starts:
        key = torch.nn.Parameter(torch.nn.functional.normalize(init, dim=0) * norm)
        opt = torch.optim.Adam([key], lr=lr * float(norm))
        for step in range(steps + 1):
            if select is not None and (step % max(select_every, 1) == 0 or step == steps):
                k = key.detach().numpy().astype(np.float32).copy()
                score = float(select(k))
                if best is None or score > best.score:  # type: ignore[operator]
                    with torch.no_grad():
                        best = KeyFit(k, float(loss_at(key)), step, score, where)
            if step == steps:
                break
            opt.zero_grad()
            loss = loss_at(key)
            loss.backward()
            opt.step()
    if best is not None:
        return best
    with torch.no_grad():
        return KeyFit(key.detach().numpy().astype(np.float32), float(loss_at(key)), steps, None, where)


def _training_scores(sets: Sequence[ScoreSet], recipe: dict[str, Any]) -> list[ScoreSet]:
    return [x.metric_scores() for x in sets] if recipe.get("train_scores") == "metric" else list(sets)


def _embed(router: Any, sets: Sequence[ScoreSet], cache_dir: str | os.PathLike | None) -> list[np.ndarray]:
    from routerdc.inference.embed_cache import embedding_key, router_embeddings

    key = embedding_key(router)  # shared by every router with this encoder, whatever its fleet
    return [router_embeddings(router, s.queries, key=key, cache_dir=cache_dir) for s in sets]


def _write(router: Any, folder: Path, output: Path, names: tuple[str, ...], keys: np.ndarray,
           sets: Sequence[ScoreSet], embs: Sequence[np.ndarray], record: dict[str, Any]) -> tuple[float, float]:
    """Save ``router`` with the fleet ``names``/``keys`` and refitted offsets to ``output``."""
    import torch

    from routerdc.train.calibration import calibrate
    from routerdc.checkpoint import RouterMeta
    from routerdc.model.router import RouterDC
    from routerdc.routing import similarities

    meta = RouterMeta.read(folder)
    aligned = [s.align(names) for s in sets]
    sims = [similarities(e, keys, router.config.similarity) for e in embs]
    cal = calibrate(names, sims, aligned)
    tau = None
    if router.config.calibrated_temperature is not None:  # refit it after the new offsets, as calibrate does
        from routerdc.train.temperature import temperature_fit

        fit = temperature_fit([x + np.asarray(cal.bias) for x in sims], aligned, before=router.config.temperature)
        tau = fit.temperature
    prior, novelty = None, None
    if router.config.novelty:  # the bank and threshold stay (the encoder did not change); the prior is refitted
        from routerdc.evaluate.metrics import query_values
        from routerdc.novelty import prior_record, training_prior

        prior = training_prior([query_values(s.scores, s.metric) for s in aligned])
        novelty = {**(meta.calibration or {}).get("novelty", {}), **prior_record(names, prior)}
    config = replace(router.config, llm_names=names, llm_bias=cal.bias, llm_cost=_costs(router.config, names, sets),
                     calibrated_temperature=tau, llm_prior=prior)
    new = RouterDC(config, router.encoder, router.tokenizer)
    new.novelty_bank = router.novelty_bank
    state = {k: v for k, v in router.state_dict().items() if k != "llm_embeddings.weight"}
    state["llm_embeddings.weight"] = torch.as_tensor(keys)
    new.load_state_dict(state)
    dtype = getattr(torch, meta.dtype, None)
    history = [*meta.extra.get("fleet_changes", []), {**record, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                                "llm_names": list(names)}]
    calibration = {**cal.to_dict(), "tasks": [s.task for s in sets], "sources": [s.source for s in sets]}
    if tau is not None:
        calibration["temperature"] = fit.to_dict()
    if novelty is not None:
        calibration["novelty"] = novelty
    new.save_pretrained(output, include_encoder=meta.included, recipe=meta.recipe, metrics={},
                        dtype=dtype if isinstance(dtype, torch.dtype) else None,
                        extra_meta={"calibration": calibration, "fleet_changes": history})
    return cal.before, cal.after


def _costs(config: Any, names: tuple[str, ...], sets: Sequence[ScoreSet]) -> tuple[float, ...] | None:
    """The new fleet's expected cost per query: kept for the LLMs that stay, the mean recorded cost for a
    new one (None when the router had no costs, or the files record none for the new LLM)."""
    if config.llm_cost is None:
        return None
    old = dict(zip(config.llm_names, config.llm_cost))
    new = [n for n in names if n not in old]
    if new:
        if not sets or any(s.costs is None for s in sets):
            return None
        recorded = mean_costs(sets)
        old.update({n: recorded[n] for n in new})
    return tuple(old[n] for n in names)


def holdout_split(sizes: Sequence[int], fraction: float, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per set, ``(fit rows, held-out rows)``: a seeded ``fraction`` of each set's rows held out
    (at least one row of each non-trivial set, and never all of them)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        perm = rng.permutation(n)
        k = min(max(int(round(fraction * n)), 1), n - 1) if n > 1 else 0
        out.append((np.sort(perm[k:]), np.sort(perm[:k])))
    return out


def add_llm(folder: str | os.PathLike, name: str, sets: Sequence[ScoreSet], *, output: str | os.PathLike,
            cache_dir: str | os.PathLike | None = None, steps: int = 300, lr: float = 0.05, seed: int = 0,
            select: bool = True, holdout: float = 0.0, device: Any = "cpu") -> FleetChange:
    """Add the LLM ``name`` to the router in ``folder``, fitted on its column of ``sets``; see the module.

    ``select``: take the key from the step (every 25) with the best calibrated training-set average,
    rather than the last one. ``holdout`` > 0: fit the key on the rest of each set and select it by
    the average on this seeded fraction of each set's rows, with offsets fitted on the rest (the
    final offsets are then refitted on all rows)."""
    from routerdc.train.calibration import calibrate, fit_llm_bias, objective
    from routerdc.evaluate.metrics import query_values
    from routerdc.model.router import RouterDC
    from routerdc.routing import similarities

    t0 = time.perf_counter()
    folder, output = Path(folder), Path(output)
    router = RouterDC.from_pretrained(folder, device=device)
    old = tuple(router.config.llm_names)
    if name in old:
        raise FleetError(f"{folder}: the router already has the LLM {name!r}")
    if not sets:
        raise FleetError("no score files to fit the new LLM's key on")
    check_columns(sets, old, name)
    names = (*old, name)
    meta = getattr(router, "meta", None)  # RouterMeta, or None for a router built in memory
    recipe = dict(meta.recipe) if meta is not None else {}
    train = [s.align(names) for s in _training_scores(sets, recipe)]
    embs = _embed(router, sets, cache_dir)
    keys_old = router.llm_embeddings.weight.detach().float().cpu().numpy()
    aligned = [s.align(names) for s in sets]
    sims_old = [similarities(e, keys_old, router.config.similarity) for e in embs]

    split = holdout_split([len(s) for s in sets], holdout, seed) if holdout else [(np.arange(len(s)), None) for s in sets]
    values = [query_values(s.scores, s.metric) for s in aligned]

    def calibrated_average(key: np.ndarray) -> float:  # the trainer's selection rule, after calibration
        sims = [np.concatenate([so, similarities(e, key[None], router.config.similarity)], axis=1)
                for so, e in zip(sims_old, embs)]
        if not holdout:
            return calibrate(names, sims, aligned).after
        bias = fit_llm_bias([x[f] for x, (f, _) in zip(sims, split)], [v[f] for v, (f, _) in zip(values, split)])
        return objective([x[h] for x, (_, h) in zip(sims, split)], [v[h] for v, (_, h) in zip(values, split)], bias)

    fit = fit_key(np.concatenate([e[f] for e, (f, _) in zip(embs, split)]), keys_old,
                  np.concatenate([s.scores[f] for s, (f, _) in zip(train, split)]),
                  similarity=router.config.similarity, temperature=router.config.temperature,
                  k_pos=int(recipe.get("k_pos", 3)), k_neg=int(recipe.get("k_neg", 3)),
                  neg_threshold=float(recipe.get("neg_threshold", 0.5)),
                  tie_break=str(recipe.get("tie_break", "index")), steps=steps, lr=lr, seed=seed,
                  select=calibrated_average if select else None)
    keys = np.concatenate([keys_old, fit.key[None]]).astype(np.float32)
    record = {"op": "add", "llm": name, "from": str(folder), "sources": [s.source for s in sets],
              "steps": steps, "lr": lr, "seed": seed, "loss": round(fit.loss, 6), "selected_step": fit.step, "selected_start": fit.start,
              "selected_by": ("last step" if not select else "calibrated training-set average" if not holdout else
                              f"calibrated average on a held-out {holdout:g} of each training set"),
              **({"holdout": holdout} if holdout else {})}
    before, after = _write(router, folder, output, names, keys, sets, embs, record)
    return FleetChange("add", name, output, names, time.perf_counter() - t0, before, after, fit.loss)


def remove_llm(folder: str | os.PathLike, name: str, sets: Sequence[ScoreSet], *, output: str | os.PathLike,
               cache_dir: str | os.PathLike | None = None, device: Any = "cpu") -> FleetChange:
    """Remove the LLM ``name`` (its key and offset) and refit the other offsets on ``sets``."""
    from routerdc.model.router import RouterDC

    t0 = time.perf_counter()
    folder, output = Path(folder), Path(output)
    router = RouterDC.from_pretrained(folder, device=device)
    old = tuple(router.config.llm_names)
    if name not in old:
        raise FleetError(f"{folder}: the router has no LLM {name!r}; it has {list(old)}")
    if len(old) < 3:
        raise FleetError(f"{folder}: a router needs at least 2 LLMs; removing {name!r} would leave {len(old) - 1}")
    if not sets:
        raise FleetError("no score files to refit the offsets on")
    keep = tuple(n for n in old if n != name)
    check_columns([s.select([n for n in s.llms if n != name]) for s in sets], keep)
    sets = [s.select(keep) for s in sets]
    embs = _embed(router, sets, cache_dir)
    keys = router.llm_embeddings.weight.detach().float().cpu().numpy()[[old.index(n) for n in keep]]
    record = {"op": "remove", "llm": name, "from": str(folder), "sources": [s.source for s in sets]}
    before, after = _write(router, folder, output, keep, keys, sets, embs, record)
    return FleetChange("remove", name, output, keep, time.perf_counter() - t0, before, after)
