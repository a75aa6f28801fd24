"""What a router is and what it decides, without torch: :class:`RouterConfig` (saved beside the
weights), :class:`Routing` (the decisions for a batch) and :func:`route_embeddings` (the routing
rule over query embeddings and LLM keys, in numpy).

    p(t | x) = softmax_t( (sim(E(x), k_t) + b_t - lambda * c_t) / tau ),   sim = cosine (default) or inner product

b_t are per-LLM offsets fitted after training by :mod:`routerdc.train.calibration` (``llm_bias``);
without them (``None``, the paper's rule) b = 0. tau is the caller's temperature, else the one fitted
on training rows so that the probabilities are calibrated (``calibrated_temperature``, see
:mod:`routerdc.train.temperature`), else the training temperature (``temperature``); a temperature
changes no choice. lambda >= 0 is a cost weight chosen at routing
time and c_t the LLM's expected cost per query (``llm_cost``, dollars) scaled to [0, 1] over the
fleet (:func:`normalized_costs`: the cheapest 0, the dearest 1); lambda = 0 (the default) is the
rule without costs, bit for bit.

A router with a novelty fallback (``novelty_threshold``, ``llm_prior`` and the bank of training
queries in ``novelty.safetensors``; :mod:`routerdc.novelty`) sends a query whose nearest training
query is less similar than the threshold to ``argmax_t prior_t - lambda * c_t`` instead; its
probabilities stay the router's, and :attr:`Routing.novel` marks those rows.

:mod:`routerdc.model.router` (torch) and :mod:`routerdc.inference.onnx` (ONNX Runtime) both compute E(x);
this module is shared by them and by the app, which routes without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from routerdc.checkpoint import CheckpointError
from routerdc.model.encoder import DEFAULT_ENCODER, NORMALIZATIONS, POOLINGS

__all__ = ["SIMILARITIES", "RouterConfig", "Routing", "check_cost_weight", "normalized_costs", "route_embeddings",
           "similarities"]

SIMILARITIES: tuple[str, ...] = ("cos", "dot")


@dataclass(frozen=True)
class RouterConfig:
    """What defines a router's architecture; saved beside the weights.

    Attributes:
        llm_names: candidate LLM names, in the order of the LLM embeddings.
        encoder: the encoder it was built from (embedded alias, hub id or path).
        pooling: ``"cls"`` (first token, the paper's) or ``"mean"``.
        similarity: ``"cos"`` (the paper's) or ``"dot"`` (inner product).
        temperature: tau in softmax(sim / tau).
        max_length: token budget per query; longer queries are truncated from the left.
        projection: a d x d linear map (identity-initialised) after pooling.
        init_std: standard deviation of the LLM embeddings' normal initialisation.
        normalization: text normalisation before tokenising: ``none``, ``anyascii`` or
            ``translit-unk`` (see :func:`routerdc.model.encoder.normalize_texts`).
        llm_bias: one offset b_t per LLM added to the similarity before the temperature
            (fitted by :func:`routerdc.train.calibration.fit_llm_bias`); ``None``: all zero.
        llm_cost: each LLM's expected cost per query in dollars (e.g. the mean recorded cost on
            the training files), for cost-weighted routing; ``None``: unknown.
        calibrated_temperature: tau fitted after training so that the probabilities are
            calibrated (:func:`routerdc.train.temperature.fit_temperature`), used by the routing
            rule in place of ``temperature``; ``None``: not fitted.
        novelty_threshold: the novelty fallback's threshold r on the cosine to the nearest training
            query (:mod:`routerdc.novelty`); ``None``: no fallback.
        llm_prior: each LLM's training-set average in [0, 1], which picks the fallback LLM; set
            together with ``novelty_threshold``.
    """

    llm_names: tuple[str, ...]
    encoder: str = DEFAULT_ENCODER
    pooling: str = "cls"
    similarity: str = "cos"
    temperature: float = 1.0
    max_length: int = 512
    projection: bool = False
    init_std: float = 0.78
    normalization: str = "none"
    llm_bias: tuple[float, ...] | None = None
    llm_cost: tuple[float, ...] | None = None
    calibrated_temperature: float | None = None
    novelty_threshold: float | None = None
    llm_prior: tuple[float, ...] | None = None

    @property
    def novelty(self) -> bool:
        """Whether the rule has the novelty fallback (and so needs the bank of training queries)."""
        return self.novelty_threshold is not None

    @property
    def routing_temperature(self) -> float:
        """The tau the routing rule uses by default: the calibrated one when fitted."""
        return self.calibrated_temperature or self.temperature

    def __post_init__(self) -> None:
        object.__setattr__(self, "llm_names", tuple(self.llm_names))
        if self.llm_cost is not None:
            try:
                cost = tuple(float(c) for c in self.llm_cost)
            except (TypeError, ValueError):
                raise ValueError(f"llm_cost must be a list of numbers, got {self.llm_cost!r}") from None
            if len(cost) != len(self.llm_names) or not all(np.isfinite(cost)) or min(cost) < 0:
                raise ValueError(f"llm_cost must hold {len(self.llm_names)} finite costs >= 0 (one per LLM), "
                                 f"got {list(cost)}")
            object.__setattr__(self, "llm_cost", cost)
        if self.llm_bias is not None:
            try:
                bias = tuple(float(b) for b in self.llm_bias)
            except (TypeError, ValueError):
                raise ValueError(f"llm_bias must be a list of numbers, got {self.llm_bias!r}") from None
            if len(bias) != len(self.llm_names) or not all(np.isfinite(bias)):
                raise ValueError(f"llm_bias must hold {len(self.llm_names)} finite numbers (one per LLM), "
                                 f"got {list(bias)}")
            object.__setattr__(self, "llm_bias", bias)
        if not self.llm_names or len(set(self.llm_names)) != len(self.llm_names):
            raise ValueError(f"llm_names must be non-empty and unique, got {self.llm_names}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.calibrated_temperature is not None and not (
                isinstance(self.calibrated_temperature, (int, float)) and self.calibrated_temperature > 0
                and np.isfinite(self.calibrated_temperature)):
            raise ValueError(f"calibrated_temperature must be a positive number, got {self.calibrated_temperature!r}")
        if (self.novelty_threshold is None) != (self.llm_prior is None):
            raise ValueError("novelty_threshold and llm_prior go together (the novelty fallback); got only one")
        if self.llm_prior is not None:
            try:
                prior = tuple(float(p) for p in self.llm_prior)
                threshold = float(self.novelty_threshold)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"llm_prior must be a list of numbers and novelty_threshold a number, got "
                                 f"{self.llm_prior!r}, {self.novelty_threshold!r}") from None
            if len(prior) != len(self.llm_names) or not all(np.isfinite(prior)):
                raise ValueError(f"llm_prior must hold {len(self.llm_names)} finite numbers (one per LLM), got {list(prior)}")
            if not -1.0 <= threshold <= 1.0:
                raise ValueError(f"novelty_threshold is a cosine similarity in [-1, 1], got {threshold}")
            object.__setattr__(self, "llm_prior", prior)
            object.__setattr__(self, "novelty_threshold", threshold)
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["llm_names"] = list(self.llm_names)
        for name in ("llm_bias", "llm_cost", "llm_prior"):  # configs without them stay readable by older versions
            if d[name] is None:
                del d[name]
            else:
                d[name] = list(d[name])
        for name in ("calibrated_temperature", "novelty_threshold"):
            if d[name] is None:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RouterConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CheckpointError(f"unknown router config fields {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class Routing:
    """Routing decisions for a batch of queries."""

    llm_names: tuple[str, ...]
    probs: np.ndarray  # (n, T)
    similarities: np.ndarray  # (n, T) sim before the offsets and the temperature
    cost_weight: float = 0.0  # the lambda these decisions were made with
    nearest: np.ndarray | None = None  # (n,) cosine to the nearest training query (novelty fallback only)
    novelty_threshold: float | None = None  # below it a query is novel
    fallback: int | None = None  # the LLM novel queries go to
    choice: np.ndarray = field(init=False)  # (n,) the decision
    router_choice: np.ndarray = field(init=False)  # (n,) the argmax of the probabilities, before the fallback
    novel: np.ndarray = field(init=False)  # (n,) bool: sent to the fallback LLM (all False without it)

    def __post_init__(self) -> None:
        top = self.probs.argmax(axis=1)
        novel = (np.zeros(len(self.probs), dtype=bool) if self.nearest is None
                 else np.asarray(self.nearest) < float(self.novelty_threshold))  # type: ignore[arg-type]
        object.__setattr__(self, "router_choice", top)
        object.__setattr__(self, "novel", novel)
        object.__setattr__(self, "choice", np.where(novel, self.fallback, top).astype(top.dtype)
                           if self.nearest is not None else top)

    def rows(self, idx: Sequence[int]) -> "Routing":
        """The decisions for the rows ``idx`` only."""
        i = np.asarray(idx, dtype=np.int64)
        return Routing(self.llm_names, self.probs[i], self.similarities[i], self.cost_weight,
                       None if self.nearest is None else np.asarray(self.nearest)[i], self.novelty_threshold,
                       self.fallback)

    def novelty_record(self, i: int) -> dict[str, Any] | None:
        """Row ``i``'s novelty check as JSON (None without the fallback)."""
        if self.nearest is None:
            return None
        return {"nearest_similarity": round(float(self.nearest[i]), 6), "threshold": self.novelty_threshold,
                "novel": bool(self.novel[i]), "fallback_llm": self.llm_names[int(self.fallback)],  # type: ignore[arg-type]
                "router_choice": self.llm_names[int(self.router_choice[i])]}

    @property
    def llms(self) -> list[str]:
        return [self.llm_names[i] for i in self.choice]

    def records(self, queries: Sequence[str]) -> list[dict[str, Any]]:
        """``{"query", "llm", "probs": {llm: p}}`` per query, in order (with the fallback also
        ``"novelty"``: :meth:`novelty_record`)."""
        out = []
        for i, (q, c, row) in enumerate(zip(queries, self.choice, self.probs)):
            rec = {"query": q, "llm": self.llm_names[c], "probs": {n: float(p) for n, p in zip(self.llm_names, row)}}
            if self.nearest is not None:
                rec["novelty"] = self.novelty_record(i)
            out.append(rec)
        return out


def similarities(emb: np.ndarray, keys: np.ndarray, similarity: str = "cos") -> np.ndarray:
    """sim(E(x), k_t) for every query and LLM, ``(n, T)`` float32: cosine or inner product."""
    q = np.asarray(emb, dtype=np.float32)
    k = np.asarray(keys, dtype=np.float32)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"embeddings {q.shape} and LLM keys {k.shape} must be (n, d) and (T, d)")
    if similarity == "cos":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    elif similarity != "dot":
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return q @ k.T


def normalized_costs(costs: Sequence[float]) -> np.ndarray:
    """Costs scaled to [0, 1] over the fleet (the cheapest 0, the dearest 1; all 0 when equal), float32."""
    c = np.asarray(costs, dtype=np.float64)
    span = c.max() - c.min()
    return ((c - c.min()) / span if span > 0 else np.zeros_like(c)).astype(np.float32)


def check_cost_weight(config: RouterConfig, cost_weight: float) -> float:
    """``cost_weight`` as a float, or ``ValueError`` (negative, not finite, or a router without costs)."""
    try:
        lam = float(cost_weight)
    except (TypeError, ValueError):
        raise ValueError(f"the cost weight must be a number >= 0, got {cost_weight!r}") from None
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"the cost weight must be a finite number >= 0, got {cost_weight!r}")
    if lam > 0 and config.llm_cost is None:
        raise ValueError("this router has no LLM costs (llm_cost), so it cannot route by cost; "
                         "set them with `python -m routerdc costs`")
    return lam


def route_embeddings(emb: np.ndarray, keys: np.ndarray, config: RouterConfig,
                     temperature: float | None = None, cost_weight: float = 0.0,
                     bank: np.ndarray | None = None) -> Routing:
    """Routing decisions from query embeddings ``(n, d)`` and the LLM keys ``(T, d)``; ``bank``
    ``(m, d)``: the training queries of a router with the novelty fallback (required then)."""
    lam = check_cost_weight(config, cost_weight)
    if config.novelty and bank is None:
        raise ValueError("this router has a novelty fallback (novelty_threshold), so routing needs its bank of "
                         "training queries (novelty.safetensors)")
    sims = similarities(emb, keys, config.similarity)
    scores = sims if config.llm_bias is None else sims + np.asarray(config.llm_bias, dtype=np.float32)
    if lam > 0:
        scores = scores - np.float32(lam) * normalized_costs(config.llm_cost)  # type: ignore[arg-type]
    logits = scores / float(temperature or config.routing_temperature)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    if not config.novelty:
        return Routing(config.llm_names, probs.astype(np.float32), sims, lam)
    from routerdc.novelty import fallback_index, nearest_similarity

    cost = normalized_costs(config.llm_cost) if config.llm_cost is not None else None
    return Routing(config.llm_names, probs.astype(np.float32), sims, lam, nearest_similarity(bank, emb),  # type: ignore[arg-type]
                   config.novelty_threshold, fallback_index(config.llm_prior, cost, lam))  # type: ignore[arg-type]
