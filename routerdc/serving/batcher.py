"""Micro-batching for the routed API: concurrent requests share one encoder batch.

As Triton's and vLLM's dynamic batching: the first query that arrives opens a batch; queries
that arrive within ``window_ms`` join it, until it holds ``max_batch`` queries or about
``token_budget`` tokens; then one worker thread routes the whole batch and hands each caller its
row. A query alone waits at most ``window_ms`` before its forward pass starts. While a batch is
being encoded, new queries queue and form the next one, so under load batches grow without
any wait. ``enabled=False`` routes each query alone (serialised), the reference.

Each query carries its own cost weight λ (:func:`routerdc.routing.route_embeddings`): queries with
different λ share one batch, the batch is embedded once, and the routing rule runs once per
distinct λ over the batch's embeddings. A batch where every λ is 0 goes through
``router.route`` exactly as without costs, so λ = 0 stays bit for bit today's routing. A router
whose engine checks near-ties (``torch-bf16-checked``) routes each λ through ``router.route``, which
checks at that λ.

Length groups: concurrent queries arrive in no order of length, and one forward pass pads every
query to the batch's longest; on a CPU the encoder already runs a single query of ~75 tokens as a
75-row matrix product, so batching gains little there while padding a random batch costs a lot.
The gathered queries are therefore sorted by estimated tokens and split into groups whose longest
is at most ``max_pad_ratio`` times their shortest, each group one forward pass (a large
``max_pad_ratio``: the whole gathered batch in one pass, as before).

Defaults (on, ``window_ms=0``, ``max_pad_ratio=1.5``) are the best of ``bench/api_speed.py`` on a
2-core Zen 4 under a load of 7-11 (README): 32 clients 17.6 q/s, against 14.0 off and 13.3 with
one pass per gathered batch. Under that load the noise (one client: 8-25 q/s across settings that
route alike) is as large as the differences, so the figures are to be remeasured on a quiet machine.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from routerdc.routing import Routing

__all__ = ["BatchConfig", "MicroBatcher", "length_groups"]


@dataclass(frozen=True)
class BatchConfig:
    """Micro-batching of the routed API.

    Attributes:
        enabled: gather concurrent queries into one batch (else one forward pass per query).
        window_ms: how long the first query of a batch waits for others.
        max_batch: at most this many queries per batch.
        token_budget: close a batch at about this many tokens (estimated as UTF-8 bytes / 4 + 2
            per query, before tokenising).
        max_pad_ratio: a gathered batch is encoded in groups of similar length, each group's
            longest query at most this many times its shortest (estimated tokens); >= 1.
    """

    enabled: bool = True
    window_ms: float = 0.0
    max_batch: int = 64
    token_budget: int = 8192
    max_pad_ratio: float = 1.5

    def __post_init__(self) -> None:
        if not (0 <= self.window_ms <= 1000):
            raise ValueError(f"window_ms must be in [0, 1000], got {self.window_ms}")
        if not self.max_pad_ratio >= 1:
            raise ValueError(f"max_pad_ratio must be >= 1, got {self.max_pad_ratio}")
        if self.max_batch < 1 or self.token_budget < 1:
            raise ValueError(f"max_batch and token_budget must be >= 1, got {self.max_batch}, {self.token_budget}")


def _rows(r: Routing, idx: list[int]) -> list[Routing]:
    return [r.rows([i]) for i in idx]


def _route_rows(router: Any, queries: list[str], weights: list[float]) -> list[Routing]:
    """One-row routings of ``queries``, each under its own cost weight, from one embedding pass.

    All λ = 0: ``router.route(queries)``, today's call. Otherwise the batch is embedded once
    (``embed``, or ``embed_texts`` for a :class:`routerdc.model.router.RouterDC`) and ``route_embeddings``
    applies each distinct λ to the whole batch; a router with only ``route`` is asked once per λ.
    """
    out: list[Routing | None] = [None] * len(queries)
    lams = sorted(set(weights))
    if lams == [0.0]:
        return _rows(router.route(queries), list(range(len(queries))))
    embed = getattr(router, "embed", None) or getattr(router, "embed_texts", None)
    rule = getattr(router, "route_embeddings", None)
    if getattr(getattr(router, "engine", None), "checks_ties", False):
        embed = None  # a checked engine re-encodes near-ties at each λ inside router.route
    emb = embed(queries) if embed is not None and rule is not None else None
    for lam in lams:
        idx = [i for i, w in enumerate(weights) if w == lam]
        if emb is not None:
            r, take = rule(emb, None, lam), idx
        else:
            r, take = router.route([queries[i] for i in idx], cost_weight=lam), list(range(len(idx)))
        for i, row in zip(idx, _rows(r, take)):
            out[i] = row
    return out  # type: ignore[return-value]


def _tokens(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass")) // 4 + 2


def length_groups(texts: list[str], max_pad_ratio: float) -> list[list[int]]:
    """Indices of ``texts`` sorted by estimated tokens and cut into groups whose longest is at most
    ``max_pad_ratio`` times their shortest."""
    order = sorted(range(len(texts)), key=lambda i: _tokens(texts[i]))
    groups: list[list[int]] = []
    for i in order:
        if groups and _tokens(texts[i]) <= max_pad_ratio * _tokens(texts[groups[-1][0]]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class MicroBatcher:
    """Routes single queries for many threads through shared batches of ``router.route``."""

    def __init__(self, router: Any, config: BatchConfig = BatchConfig()) -> None:
        self.router = router
        self.config = config
        self._queue: queue.Queue[tuple[str, float, Future] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches = 0  # forward passes so far (for status and tests)
        self.routed = 0

    def route(self, query: str, timeout: float | None = None, cost_weight: float = 0.0) -> Routing:
        """The routing of ``query`` alone (a one-row :class:`Routing`) under ``cost_weight``."""
        lam = float(cost_weight)
        if not self.config.enabled:
            with self._lock:
                self.batches += 1
                self.routed += 1
                return _route_rows(self.router, [query], [lam])[0]
        fut: Future = Future()
        self._ensure_worker()
        self._queue.put((query, lam, fut))
        return fut.result(timeout)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="routerdc-batcher", daemon=True)
                self._worker.start()

    def close(self) -> None:
        """Stop the worker thread (queued queries are still answered)."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout=10)

    def _gather(self, first: tuple[str, float, Future]) -> tuple[list[tuple[str, float, Future]], bool]:
        batch, tokens, stop = [first], _tokens(first[0]), False
        deadline = time.perf_counter() + self.config.window_ms / 1000
        while len(batch) < self.config.max_batch and tokens < self.config.token_budget:
            try:  # whatever is queued already joins at once; then wait out the window
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:
                stop = True
                break
            batch.append(item)
            tokens += _tokens(item[0])
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            live = [(q, lam, f) for q, lam, f in batch if f.set_running_or_notify_cancel()]
            for group in length_groups([q for q, _, _ in live], self.config.max_pad_ratio) if live else []:
                items = [live[i] for i in group]
                try:
                    rows = _route_rows(self.router, [q for q, _, _ in items], [lam for _, lam, _ in items])
                    self.batches += 1
                    self.routed += len(items)
                    for row, (_, _, f) in zip(rows, items):
                        f.set_result(row)
                except BaseException as exc:  # noqa: BLE001 - every caller gets the error
                    for _, _, f in items:
                        f.set_exception(exc)
            if stop:
                return
