""":class:`Router`: one engine plus the one routing rule. Built by :func:`routerdc.load_router`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from routerdc.checkpoint import RouterMeta
from routerdc.routing import RouterConfig, Routing, route_embeddings
from routerdc.inference.engines import Engine

__all__ = ["Router"]


class Router:
    """A loaded router: ``embed`` / ``route`` / ``route_embeddings`` on its engine.

    Attributes:
        engine: the engine that computes the embeddings (``.name`` says which).
        reason: why this engine (the ``auto`` measurement, or "asked for").
        token_budget: padded tokens per batch (None: :data:`routerdc.train.batching.DEFAULT_TOKEN_BUDGET`).
        max_rows: at most this many queries per batch (None: :data:`routerdc.train.batching.MAX_BATCH_ROWS`).
        folder: the router folder it was loaded from (None when built from a model in memory).
    """

    def __init__(self, engine: Engine, *, reason: str = "", token_budget: int | None = None,
                 max_rows: int | None = None, folder: Path | None = None, sources: Any = None,
                 decision: Any = None) -> None:
        self.engine = engine
        self.reason = reason or f"{engine.name}: asked for"
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.decision = decision  # routerdc.inference.select.Decision when auto chose
        self.folder = folder
        self._sources = sources

    @classmethod
    def from_model(cls, model: Any, *, engine: str = "torch", token_budget: int | None = None) -> "Router":
        """A router over an in-memory :class:`routerdc.model.router.RouterDC` (e.g. the trainer's), on
        ``torch`` or ``torch-bf16``."""
        from routerdc.inference.engines import TorchEngine, supported

        if engine not in ("torch", "torch-bf16"):
            raise ValueError(f"a model in memory routes on torch or torch-bf16, not {engine!r}")
        why = supported(engine, str(model.device))
        if why:
            raise ValueError(f"{engine}: {why}")
        return cls(TorchEngine(model, engine, bf16=engine == "torch-bf16"), reason=f"{engine}: asked for",
                   token_budget=token_budget)

    # -- what it is ------------------------------------------------------------------------
    @property
    def config(self) -> RouterConfig:
        return self.engine.config

    @property
    def llm_names(self) -> tuple[str, ...]:
        return tuple(self.engine.config.llm_names)

    @property
    def keys(self) -> np.ndarray:
        """The LLM embeddings ``(T, d)``, float32."""
        return self.engine.keys

    @property
    def bank(self) -> np.ndarray | None:
        """The novelty fallback's bank of training queries ``(m, d)`` (None without the fallback)."""
        return getattr(self.engine, "bank", None)

    @property
    def dim(self) -> int:
        return int(self.keys.shape[1])

    @property
    def meta(self) -> "RouterMeta | None":
        """The folder's :class:`~routerdc.checkpoint.RouterMeta` (None for a model built in memory)."""
        return self.engine.meta

    @property
    def engine_name(self) -> str:
        return self.engine.name

    @property
    def model(self) -> Any:
        """The torch :class:`routerdc.model.router.RouterDC` (loaded on first use when the engine is ONNX)."""
        model = getattr(self.engine, "model", None)
        if model is not None and self.engine.name != "int8":
            return model
        if self._sources is None:
            raise RuntimeError("this router has no torch model")
        return self._sources.model

    # -- routing ---------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Query embeddings ``(n, d)`` (after the optional projection), float32."""
        return self.engine.embed(list(texts), token_budget=self.token_budget, max_rows=self.max_rows)

    def route_embeddings(self, emb: np.ndarray, temperature: float | None = None,
                         cost_weight: float = 0.0) -> Routing:
        """The one routing rule, :func:`routerdc.routing.route_embeddings`, over this router's keys."""
        return route_embeddings(emb, self.keys, self.config, temperature, cost_weight, self.bank)

    def route(self, texts: Sequence[str], temperature: float | None = None, cost_weight: float = 0.0) -> Routing:
        """Route each text (in the given order); see :class:`routerdc.routing.Routing`.

        A checked engine (:mod:`routerdc.inference.checked`) re-encodes the near-ties at this cost
        weight (a tie's margin does not depend on the temperature)."""
        if getattr(self.engine, "checks_ties", False):
            emb = self.engine.embed(list(texts), token_budget=self.token_budget, max_rows=self.max_rows,
                                    cost_weight=cost_weight)
        else:
            emb = self.embed(texts)
        return self.route_embeddings(emb, temperature, cost_weight)

    def unk_tokens(self, text: str) -> tuple[int, int] | None:
        """``([UNK] count, token count)`` of ``text`` without special tokens; None when the
        tokenizer has no unknown token."""
        unk = self.engine.unk_token_id
        if unk is None:
            return None
        ids = self.engine.token_ids(text)
        return sum(i == unk for i in ids), len(ids)

    # -- what the embedding caches need (routerdc.inference.embed_cache takes a Router or a RouterDC) -------
    @property
    def cache_tag(self) -> str:
        """Appended to embedding-cache keys: engines that do not reproduce torch fp32's vectors
        to float rounding keep their own entries."""
        return "" if self.engine.name in ("torch", "onnx") else f"|engine={self.engine.name}"

    @property
    def projection(self) -> Any:
        """The torch projection layer when the router has one (else None)."""
        return self.model.projection if self.config.projection else None

    @property
    def encoder(self) -> Any:
        """The torch encoder (for :func:`routerdc.inference.embed_cache.embedding_key` of a fine-tuned router)."""
        return self.model.encoder

    @property
    def device(self) -> Any:
        return self.model.device

    def project(self, pooled: Any) -> Any:
        return self.model.project(pooled)

    def embed_texts(self, texts: Sequence[str], *, batch_size: int | None = None, project: bool = True) -> np.ndarray:
        """As :meth:`routerdc.model.router.RouterDC.embed_texts`, on this router's engine; the pooled
        vectors before a projection (``project=False`` with ``config.projection``) come from torch."""
        if project or not self.config.projection:
            return self.engine.embed(list(texts), token_budget=self.token_budget, max_rows=batch_size or self.max_rows)
        return self.model.embed_texts(list(texts), project=False, token_budget=self.token_budget, batch_size=batch_size)

    def describe(self) -> str:
        return f"engine {self.engine.name} ({self.reason})"
