"""Baseline routers (numpy in, numpy out).

The first two take precomputed query embeddings ``(n, d)`` and the training score matrix
``(n, T)`` (one column per LLM, in a fixed order) and route a query to an LLM index in
``[0, T)``; the third needs no embedding at all:

* :class:`KNNRouter` -- the k-nearest-neighbour router that RouterDC (Chen et al., NeurIPS
  2024) compares against: a query's predicted score for each LLM is the mean score of its
  ``k`` nearest training queries; it is routed to the LLM with the highest predicted score.
* :class:`MLPRouter` -- the ZOOTER router (Lu et al., 2023, "Routing to the Expert: Efficient
  Reward-guided Ensemble of Large Language Models"): a small network from the embedding to
  ``T`` logits, trained to match the softmax-normalised scores (ZOOTER distils normalised
  rewards) with a KL divergence loss; a query goes to the LLM with the largest logit.
* :class:`TaskRouter` -- the router that is *told* each query's task: every query of a task goes
  to the LLM with the best mean value on that task's training rows (a task without training rows
  to the LLM best on the training data). A learnt router has to beat it to show that it does more
  than recognise the task.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors
from torch import nn

__all__ = ["KNNRouter", "MLPRouter", "TaskRouter"]


def _check_fit(embeddings: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be an (n, d) array, got shape {x.shape}")
    if y.ndim != 2:
        raise ValueError(f"scores must be an (n, T) array, got shape {y.shape}")
    if x.shape[0] == 0:
        raise ValueError("cannot fit a router on no queries")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(
            f"embeddings (shape {x.shape}) and scores (shape {y.shape}) need >= 1 column"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"embeddings have {x.shape[0]} rows but scores have {y.shape[0]}; they must match"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("embeddings and scores must be finite")
    return x, y


def _check_predict(embeddings: np.ndarray, dim: int | None) -> np.ndarray:
    if dim is None:
        raise RuntimeError("the router is not fitted; call fit() first")
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"embeddings must be an (m, {dim}) array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("no queries to route")
    if not np.isfinite(x).all():
        raise ValueError("embeddings must be finite")
    return x


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)`` (``None``: unchanged), restoring the old value."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class KNNRouter:
    """k-nearest-neighbour router (a RouterDC baseline).

    ``predict_scores`` averages the score rows of the ``k`` training queries nearest to each
    query (scikit-learn ``NearestNeighbors``; ``metric="cosine"`` by default); ``route`` takes
    the argmax, ties going to the lowest LLM index. When fewer than ``k`` training queries
    exist, all of them are used (``k_`` holds the effective ``k`` after fitting).
    """

    def __init__(self, k: int = 10, metric: str = "cosine") -> None:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.metric = metric
        self.k_: int | None = None
        self.dim_: int | None = None
        self._nn: NearestNeighbors | None = None
        self._scores: np.ndarray | None = None

    def fit(self, embeddings: np.ndarray, scores: np.ndarray) -> "KNNRouter":
        """Store the training embeddings ``(n, d)`` and their scores ``(n, T)``."""
        x, y = _check_fit(embeddings, scores)
        self.k_ = min(self.k, x.shape[0])
        self._nn = NearestNeighbors(n_neighbors=self.k_, metric=self.metric).fit(x)
        self._scores = y
        self.dim_ = x.shape[1]
        return self

    def predict_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """``(m, T)`` mean score of the ``k`` nearest training queries of each query."""
        x = _check_predict(embeddings, self.dim_)
        assert self._nn is not None and self._scores is not None
        idx = self._nn.kneighbors(x, n_neighbors=self.k_, return_distance=False)
        return self._scores[idx].mean(axis=1)

    def route(self, embeddings: np.ndarray) -> np.ndarray:
        """``(m,)`` int64 index of the LLM with the highest predicted score (ties: lowest)."""
        return np.argmax(self.predict_scores(embeddings), axis=1).astype(np.int64)


class MLPRouter:
    """ZOOTER-style router (Lu et al., 2023): embedding -> MLP -> ``T`` logits.

    Training distils the normalised scores: the target of a query is
    ``softmax(scores / target_temperature)`` and the loss is
    ``KL(target || softmax(logits))``, minimised with AdamW for a fixed number of ``epochs``
    over shuffled minibatches of ``batch_size`` (``None``: full batch). ``hidden=0`` gives a
    linear model; otherwise one hidden ReLU layer of ``hidden`` units. Inputs are standardised
    with the training mean and standard deviation. Training is seeded by ``seed`` and runs
    inside ``torch.random.fork_rng`` so the global torch RNG state is left untouched.
    A lower ``target_temperature`` gives sharper targets (closer to one-hot on the best LLM).
    ``num_threads`` (``None``: torch's current setting) sets the torch intra-op threads while
    fitting and predicting, restoring the previous value after; ``1`` is often fastest for small
    networks on a busy machine.
    """

    def __init__(
        self,
        hidden: int = 256,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        target_temperature: float = 1.0,
        batch_size: int | None = 256,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {hidden}")
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if target_temperature <= 0:
            raise ValueError(f"target_temperature must be > 0, got {target_temperature}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        self.hidden = int(hidden)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.target_temperature = float(target_temperature)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.num_threads = num_threads
        self.dim_: int | None = None
        self.n_llms_: int | None = None
        self.loss_history_: list[float] = []
        self._model: nn.Module | None = None
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None

    def _build(self, d: int, t: int) -> nn.Module:
        if self.hidden == 0:
            return nn.Linear(d, t)
        return nn.Sequential(
            nn.Linear(d, self.hidden), nn.ReLU(inplace=True), nn.Linear(self.hidden, t)
        )

    def fit(self, embeddings: np.ndarray, scores: np.ndarray) -> "MLPRouter":
        """Train on embeddings ``(n, d)`` and scores ``(n, T)``; returns ``self``."""
        x_np, y_np = _check_fit(embeddings, scores)
        n, d = x_np.shape
        t = y_np.shape[1]
        x = torch.as_tensor(x_np, dtype=torch.float32)
        self._mean = x.mean(dim=0)
        self._std = x.std(dim=0, unbiased=False).clamp_min(1e-6)
        x = (x - self._mean) / self._std
        target = torch.softmax(
            torch.as_tensor(y_np, dtype=torch.float32) / self.target_temperature, dim=1
        )
        bs = n if self.batch_size is None else min(self.batch_size, n)
        history: list[float] = []
        with torch.random.fork_rng(devices=[]), _torch_threads(self.num_threads):
            torch.default_generator.manual_seed(self.seed)  # CPU only; CUDA RNG untouched
            gen = torch.Generator().manual_seed(self.seed)
            model = self._build(d, t)
            opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            model.train()
            for _ in range(self.epochs):
                if bs < n:  # shuffle once per epoch, then take contiguous slices
                    perm = torch.randperm(n, generator=gen)
                    xs, ts = x[perm], target[perm]
                else:
                    xs, ts = x, target
                total = torch.zeros(())
                for start in range(0, n, bs):
                    xb, tb = xs[start : start + bs], ts[start : start + bs]
                    logp = F.log_softmax(model(xb), dim=1)
                    loss = F.kl_div(logp, tb, reduction="batchmean")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(xb)
                history.append(float(total) / n)
        model.eval()
        self._model = model
        self.loss_history_ = history
        self.dim_, self.n_llms_ = d, t
        return self

    def _logits(self, embeddings: np.ndarray) -> torch.Tensor:
        x_np = _check_predict(embeddings, self.dim_)
        assert self._model is not None and self._mean is not None and self._std is not None
        x = (torch.as_tensor(x_np, dtype=torch.float32) - self._mean) / self._std
        with torch.no_grad(), _torch_threads(self.num_threads):
            return self._model(x)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """``(m, T)`` float64 routing distribution ``softmax(logits)``; rows sum to 1."""
        return torch.softmax(self._logits(embeddings), dim=1).double().numpy()

    def route(self, embeddings: np.ndarray) -> np.ndarray:
        """``(m,)`` int64 index of the LLM with the largest logit (ties: lowest index)."""
        return np.argmax(self._logits(embeddings).numpy(), axis=1).astype(np.int64)


class TaskRouter:
    """Each task's best LLM on the training data, the query's task given (a baseline).

    ``fit(tasks, values)`` takes one task name per training query and its per-LLM values ``(n, T)``
    (:func:`routerdc.evaluate.metrics.query_values`: what choosing each LLM earns under the task's
    test metric). ``predict_scores(tasks)`` gives every query its task's mean value per LLM; a task
    with no training rows gets the **training-set average**, the mean over the training tasks of
    their per-task means (the paper averages tasks, not rows), so an unseen task goes to the LLM best
    on the training data, as the novelty fallback's prior does. ``route`` takes the argmax (ties:
    lowest index).

    In a deployment the task would come from the caller or a classifier; in an evaluation it comes
    from the test file. Its choices use the test files' task names only, never their scores.
    """

    def __init__(self) -> None:
        self.means_: dict[str, np.ndarray] | None = None
        self.average_: np.ndarray | None = None

    def fit(self, tasks: Sequence[str], values: np.ndarray) -> "TaskRouter":
        """Per-task mean values of ``values`` ``(n, T)`` grouped by ``tasks`` (``n`` names)."""
        y = np.asarray(values, dtype=np.float64)
        names = [str(t) for t in tasks]
        if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] == 0:
            raise ValueError(f"values must be a non-empty (n, T) array, got shape {y.shape}")
        if len(names) != y.shape[0]:
            raise ValueError(f"{len(names)} task names for {y.shape[0]} rows of values; they must match")
        if not np.isfinite(y).all():
            raise ValueError("values must be finite")
        rows: dict[str, list[int]] = {}
        for i, t in enumerate(names):
            rows.setdefault(t, []).append(i)
        self.means_ = {t: y[r].mean(axis=0) for t, r in rows.items()}
        self.average_ = np.mean(list(self.means_.values()), axis=0)
        return self

    def predict_scores(self, tasks: Sequence[str]) -> np.ndarray:
        """``(m, T)``: each query's task mean (the training-set average for an unseen task)."""
        if self.means_ is None or self.average_ is None:
            raise RuntimeError("the router is not fitted; call fit() first")
        names = [str(t) for t in tasks]
        if not names:
            raise ValueError("no queries to route")
        return np.stack([self.means_.get(t, self.average_) for t in names])

    def route(self, tasks: Sequence[str]) -> np.ndarray:
        """``(m,)`` int64 index of the LLM with the best predicted value (ties: lowest)."""
        return np.argmax(self.predict_scores(tasks), axis=1).astype(np.int64)
