"""What a router is and what it decides, without torch: :class:`RouterConfig` (saved beside the
weights), :class:`Routing` (the decisions for a batch) and :func:`route_embeddings` (the routing
rule over query embeddings and LLM keys, in numpy).

    p(t | x) = softmax_t( (sim(E(x), k_t) + b_t) / tau ),   sim = cosine (default) or inner product

b_t are per-LLM offsets fitted after training by :mod:`routerdc.calibration` (``llm_bias``);
without them (``None``, the paper's rule) b = 0.

:mod:`routerdc.model` (torch) and :mod:`routerdc.onnx_engine` (ONNX Runtime) both compute E(x);
this module is shared by them and by the app, which routes without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .checkpoint import CheckpointError
from .encoder import DEFAULT_ENCODER, NORMALIZATIONS, POOLINGS

__all__ = ["SIMILARITIES", "RouterConfig", "Routing", "route_embeddings", "similarities"]

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
            ``translit-unk`` (see :func:`routerdc.encoder.normalize_texts`).
        llm_bias: one offset b_t per LLM added to the similarity before the temperature
            (fitted by :func:`routerdc.calibration.fit_llm_bias`); ``None``: all zero.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "llm_names", tuple(self.llm_names))
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
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["llm_names"] = list(self.llm_names)
        if self.llm_bias is None:
            del d["llm_bias"]  # uncalibrated configs stay readable by older versions
        else:
            d["llm_bias"] = list(self.llm_bias)
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
    choice: np.ndarray = field(init=False)  # (n,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "choice", self.probs.argmax(axis=1))

    @property
    def llms(self) -> list[str]:
        return [self.llm_names[i] for i in self.choice]

    def records(self, queries: Sequence[str]) -> list[dict[str, Any]]:
        """``{"query", "llm", "probs": {llm: p}}`` per query, in order."""
        return [
            {"query": q, "llm": self.llm_names[c],
             "probs": {n: float(p) for n, p in zip(self.llm_names, row)}}
            for q, c, row in zip(queries, self.choice, self.probs)
        ]


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


def route_embeddings(emb: np.ndarray, keys: np.ndarray, config: RouterConfig,
                     temperature: float | None = None) -> Routing:
    """Routing decisions from query embeddings ``(n, d)`` and the LLM keys ``(T, d)``."""
    sims = similarities(emb, keys, config.similarity)
    scores = sims if config.llm_bias is None else sims + np.asarray(config.llm_bias, dtype=np.float32)
    logits = scores / float(temperature or config.temperature)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return Routing(config.llm_names, probs.astype(np.float32), sims)
