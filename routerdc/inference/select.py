"""``engine="auto"``: the fastest engine on this machine that routes like torch fp32.

Each candidate engine routes a probe set of real test queries (:func:`probe_texts`: up to 32 per
paper test task, else a few built-in ones). It qualifies when its choices agree with torch fp32
on >= :data:`MIN_AGREEMENT` of the probes and every probability is within :data:`PROB_TOL`; the
fastest qualifying one (probe queries per second after a warm-up, the best of
:data:`TIMING_ROUNDS` interleaved rounds) is picked. The decision is
measured once per router and machine and cached as JSON under ``<cache>/engines/``, named by the
router's fingerprint and :func:`routerdc.inference.features.machine_key`, with the CPU's flags,
every trial and the reason, so a later load reads it without measuring (and without torch when
the pick is an ONNX engine whose form is cached). A checked engine
(:mod:`routerdc.inference.checked`) is measured with the margin bounds derived from its fast
engine's errors on the same probes; they are stored in its trial and used by every later load.
A cached decision that did not measure every candidate engine (an older version's) is measured again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from routerdc.routing import route_embeddings
from routerdc.inference.checked import CHECKED, measured_bounds
from routerdc.inference.engines import ENGINES, EngineUnavailable, Sources, build_engine, supported
from routerdc.inference.features import cpu_features, machine_key

__all__ = ["MIN_AGREEMENT", "PROB_TOL", "Decision", "Trial", "choose", "decision_path", "probe_texts"]

MIN_AGREEMENT = 0.995
PROB_TOL = 1e-2
PROBE_PER_TASK = 32
TIMING_ROUNDS = 3  # interleaved timings of the qualifying engines; each keeps its best (see measure)
PROBE_ENV = "ROUTERDC_PROBE_PER_TASK"
_FALLBACK_PROBE = (
    "Which of the following is a prime number? A. 21 B. 27 C. 29 D. 33", "def add(a, b): return a + b",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "以下哪个城市是中国的首都？A. 上海 B. 北京 C. 广州 D. 深圳", "Translate 'good morning' into French.",
    "Write a Python function that returns the n-th Fibonacci number.", "x",
)


@dataclass(frozen=True)
class Trial:
    """One engine on the probe set."""

    engine: str
    ok: bool
    queries_per_second: float | None = None
    agreement: float | None = None
    max_prob_diff: float | None = None
    note: str = ""
    bounds: tuple[tuple[float, ...], ...] | None = None  # a checked engine's margin bounds (T x T, score units)
    rechecked: float | None = None  # share of the probes a checked engine re-encoded in fp32
    novelty_bound: float | None = None  # a checked engine's distance to the novelty threshold that is re-encoded

    def __post_init__(self) -> None:
        if self.bounds is not None:  # JSON gives lists
            object.__setattr__(self, "bounds", tuple(tuple(float(x) for x in row) for row in self.bounds))


@dataclass(frozen=True)
class Decision:
    engine: str
    reason: str
    trials: tuple[Trial, ...]
    probe: str

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "reason": self.reason, "probe": self.probe,
                "trials": [asdict(t) for t in self.trials]}

    def bounds(self, engine: str) -> np.ndarray | None:
        """The margin bounds ``(T, T)`` measured for the checked ``engine`` (None: not measured)."""
        b = next((t.bounds for t in self.trials if t.engine == engine and t.bounds is not None), None)
        return None if b is None else np.asarray(b, dtype=np.float64)

    def novelty_bound(self, engine: str) -> float | None:
        """The novelty bound measured for the checked ``engine`` (None: not measured)."""
        return next((t.novelty_bound for t in self.trials if t.engine == engine and t.novelty_bound is not None), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Decision":
        return cls(str(d["engine"]), str(d["reason"]), tuple(Trial(**t) for t in d.get("trials", [])),
                   str(d.get("probe", "")))


def probe_texts(data_dir: str | os.PathLike | None = None, per_task: int | None = None) -> tuple[list[str], str]:
    """``(queries, description)``: every k-th query of each paper test file (``per_task`` each;
    default ``$ROUTERDC_PROBE_PER_TASK``, else :data:`PROBE_PER_TASK`), or the built-in probes
    when the data are not there."""
    per_task = per_task or int(os.environ.get(PROBE_ENV) or PROBE_PER_TASK)
    try:
        from routerdc.data import read_queries
        from routerdc.data.registry import paper_files

        out: list[str] = []
        for path in paper_files(data_dir)[1]:
            qs = read_queries(path)
            step = max(1, len(qs) // per_task)
            out.extend(qs[::step][:per_task])
        if out:
            return out, f"{len(out)} paper test queries ({per_task} per task)"
    except Exception:  # noqa: BLE001 - no data here: the built-in probes
        pass
    return list(_FALLBACK_PROBE), f"{len(_FALLBACK_PROBE)} built-in queries"


def decision_path(cache_dir: Path, fingerprint: str, device: str) -> Path:
    return cache_dir / "engines" / f"{fingerprint}-{machine_key(device)}.json"


def read_decision(path: Path, names: Sequence[str] = ENGINES) -> Decision | None:
    """The decision cached at ``path``; None when absent, damaged, or when it did not try every
    engine of ``names`` (made before an engine was added) or lacks its checked engine's bound."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        decision = Decision.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: measured again
    if decision.engine not in ENGINES or not set(names) <= {t.engine for t in decision.trials}:
        return None
    if decision.engine in CHECKED and (decision.bounds(decision.engine) is None
                                       or decision.novelty_bound(decision.engine) is None):
        return None  # measured before the novelty bound existed
    return decision


def _timed_embed(engine: Any, texts: Sequence[str], token_budget: int | None) -> tuple[np.ndarray, float]:
    engine.embed(texts[: min(16, len(texts))], token_budget=token_budget)  # warm-up (allocations, ORT arenas)
    t0 = time.perf_counter()
    emb = engine.embed(texts, token_budget=token_budget)
    return emb, len(texts) / max(time.perf_counter() - t0, 1e-9)


def measure(sources: Sources, texts: Sequence[str], names: Sequence[str] = ENGINES,
            token_budget: int | None = None, rounds: int = TIMING_ROUNDS) -> list[Trial]:
    """Every engine of ``names`` (torch first, the reference) on ``texts``.

    The engines that qualify are often within 10% of each other, and on a 2-core machine one timing
    moves by as much, so those that qualify are timed ``rounds - 1`` more times, interleaved, and
    each keeps its best round (the others keep their one timing: they cannot be picked)."""
    ref_engine = build_engine("torch", sources)
    ref_emb, ref_qps = _timed_embed(ref_engine, texts, token_budget)
    bank = ref_engine.bank
    ref = route_embeddings(ref_emb, ref_engine.keys, ref_engine.config, bank=bank)
    trials = [Trial("torch", True, ref_qps, 1.0, 0.0, "the reference")]
    embs: dict[str, np.ndarray] = {"torch": ref_emb}
    pickable: dict[str, Any] = {"torch": ref_engine}
    for name in names:
        if name == "torch":
            continue
        why = supported(name, sources.device)
        if why:
            trials.append(Trial(name, False, note=why))
            continue
        bounds, nov_bound = None, None
        try:
            if name in CHECKED:  # the bounds from the fast engine's errors on these probes
                base = CHECKED[name]
                if base not in embs:
                    embs[base] = build_engine(base, sources).embed(texts, token_budget=token_budget)
                bounds, nov_bound = measured_bounds(route_embeddings(embs[base], ref_engine.keys, ref_engine.config,
                                                                     bank=bank), ref)
            engine = build_engine(name, sources, bounds=bounds, novelty_bound=nov_bound)
            emb, qps = _timed_embed(engine, texts, token_budget)
        except EngineUnavailable as exc:
            trials.append(Trial(name, False, note=str(exc)))
            continue
        embs[name] = emb
        got = route_embeddings(emb, engine.keys, engine.config, bank=bank)
        agree = float(np.mean(got.choice == ref.choice))
        diff = float(np.abs(got.probs - ref.probs).max())
        ok = agree >= MIN_AGREEMENT and diff <= PROB_TOL
        note = "" if ok else (f"agrees on {agree:.1%} (< {MIN_AGREEMENT:.1%})" if agree < MIN_AGREEMENT
                              else f"probabilities off by {diff:.3f} (> {PROB_TOL})")
        rechecked = getattr(engine, "recheck_share", None)
        trials.append(Trial(name, ok, qps, agree, diff, note,
                            None if bounds is None else tuple(map(tuple, bounds.tolist())), rechecked, nov_bound))
        if ok:
            pickable[name] = engine
    best = {t.engine: t.queries_per_second or 0.0 for t in trials if t.engine in pickable}
    for _ in range(rounds - 1 if len(pickable) > 1 else 0):
        for name, engine in pickable.items():
            best[name] = max(best[name], _timed_embed(engine, texts, token_budget)[1])
    return [replace(t, queries_per_second=best[t.engine]) if t.engine in pickable else t for t in trials]


def pick(trials: Sequence[Trial], probe: str) -> Decision:
    """The fastest qualifying trial, with the reason in words."""
    ok = [t for t in trials if t.ok and t.queries_per_second]
    best = max(ok, key=lambda t: t.queries_per_second or 0.0)
    ref = next(t for t in trials if t.engine == "torch")
    others = "; ".join(f"{t.engine} {t.queries_per_second:.0f} q/s" + ("" if t.ok else f" rejected: {t.note}")
                       if t.queries_per_second else f"{t.engine} unavailable: {t.note}"
                       for t in trials if t.engine != best.engine)
    speed = "" if best.engine == "torch" else f", {best.queries_per_second / ref.queries_per_second:.2f}x torch fp32"
    agree = "" if best.engine == "torch" else (f", agrees with torch fp32 on {best.agreement:.1%} "
                                               f"(probabilities within {best.max_prob_diff:.1e})")
    if best.bounds is not None:
        agree += (f", re-encoding in fp32 the near-ties ({best.rechecked or 0:.0%} of the probes; per-pair margin "
                  f"bounds up to {max(map(max, best.bounds)):.1e})")
    reason = (f"auto: {best.engine} is the fastest engine that routes like torch fp32 on {probe} "
              f"({best.queries_per_second:.0f} q/s{speed}{agree}); {others}; CPU {cpu_features().summary()}")
    return Decision(best.engine, reason, tuple(trials), probe)


def choose(sources: Sources, cache_dir: Path, fingerprint: str, *, data_dir: str | os.PathLike | None = None,
           token_budget: int | None = None, remeasure: bool = False,
           candidates: Sequence[str] = ENGINES) -> tuple[Decision, bool]:
    """``(decision, from_cache)`` for the router of ``sources`` on this machine."""
    unknown = set(candidates) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    path = decision_path(cache_dir, fingerprint, sources.device)
    if tuple(candidates) != ENGINES:
        path = path.with_name(path.stem + "-" + "+".join(sorted(set(candidates) | {"torch"})) + ".json")
    if not remeasure:
        cached = read_decision(path, tuple(set(candidates) | {"torch"}))
        if cached is not None:
            return cached, True
    texts, probe = probe_texts(data_dir)
    decision = pick(measure(sources, texts, candidates, token_budget=token_budget), probe)
    f = cpu_features()
    record = {**decision.to_dict(), "device": sources.device, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "cpu": {"model": f.model, "cores": f.cores, "flags": sorted(f.flags)}}
    try:
        from routerdc.io import write_text

        write_text(path, json.dumps(record, indent=2) + "\n")
    except OSError:
        pass  # a read-only cache: measured again next time
    return decision, False
