"""The two contrastive losses of RouterDC and their weighted sum.

RouterDC (Chen et al., "RouterDC: Query-Based Router by Dual Contrastive Learning for
Assembling Large Language Models", NeurIPS 2024) routes a query x to one of T LLMs by the
similarity between the query embedding E(x) and a learned key k_t per LLM. It is trained
with two contrastive losses:

* **sample-LLM** (:func:`sample_llm_loss`): pull E(x) towards the keys of the top-k_pos
  LLMs of the query and push it away from the keys of the bottom-k_neg LLMs.
* **sample-sample** (:func:`sample_sample_loss`): pull the embeddings of queries of the
  same group (cluster, or task) together and push those of other groups apart, which
  keeps training stable.

Total: L = L_sLLM + lambda * L_ss (:func:`router_loss`). Paper defaults: k_pos = k_neg = 3,
tau = 1, lambda = 1, H = n_neg = 3. Every function here is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["RouterLoss", "router_loss", "sample_llm_loss", "sample_pairs", "sample_sample_loss"]


def sample_llm_loss(
    logits: torch.Tensor,
    scores: torch.Tensor,
    k_pos: int = 3,
    k_neg: int = 3,
    neg_threshold: float = 0.5,
    tie_break: str = "index",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Sample-LLM contrastive loss (RouterDC eq. 3).

    Each row of ``scores`` is sorted once, descending; the first k_pos LLMs of that order are
    the positives P(x), the last k_neg the negatives N(x) (k_pos, k_neg are clamped to T).
    Equal scores (frequent: pass rates in tenths, many zeros) are ordered by ``tie_break``:
    ``"index"`` keeps column order (a stable sort: deterministic, but it systematically
    prefers the first columns as positives and the last ones as negatives), ``"random"``
    orders them by a fresh uniform permutation per row (drawn on CPU with ``generator``). With s_t = sim(E(x), k_t) / tau given as
    ``logits``::

        term(x, p) = -log( e^{s_p} / (e^{s_p} + \sum_{n \in N(x), score_n <= thr, n != p} e^{s_n}) )
        L_sLLM = \sum_{i < k_pos} mean_{x in batch} [ score_{p_i(x)} > 0 ] * term(x, p_i(x))

    A positive whose score is <= 0 contributes 0 but still counts in the batch mean (as in
    the official code); a term with no valid negative is 0.

    Args:
        logits: ``(B, T)`` similarity logits, already divided by the temperature.
        scores: ``(B, T)`` score of each LLM on each query.
        k_pos: number of positive LLMs per query.
        k_neg: number of negative LLMs per query.
        neg_threshold: negatives with a score above this are ignored.
        tie_break: ``"index"`` or ``"random"`` (see above).
        generator: a CPU ``torch.Generator`` for ``"random"``; the global one when None.

    Returns:
        A scalar tensor, differentiable w.r.t. ``logits``.
    """
    if logits.dim() != 2 or logits.shape != scores.shape:
        raise ValueError(f"logits and scores must both be (B, T); got {tuple(logits.shape)} "
                         f"and {tuple(scores.shape)}")
    if k_pos < 0 or k_neg < 0:
        raise ValueError(f"k_pos and k_neg must be >= 0; got {k_pos}, {k_neg}")
    n_llms = logits.shape[1]
    kp, kn = min(k_pos, n_llms), min(k_neg, n_llms)
    if logits.shape[0] == 0 or kp == 0:
        return logits.sum() * 0.0
    scores = scores.to(device=logits.device)
    if tie_break == "index":
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    elif tie_break == "random":  # a stable sort of randomly permuted columns: ties in random order
        perm = torch.rand(scores.shape, generator=generator, device="cpu").argsort(dim=1).to(scores.device)
        order = perm.gather(1, torch.sort(scores.gather(1, perm), dim=1, descending=True, stable=True).indices)
    else:
        raise ValueError(f"tie_break must be 'index' or 'random'; got {tie_break!r}")
    pos_idx, neg_idx = order[:, :kp], order[:, n_llms - kn:]             # (B, kp), (B, kn)
    pos_logit = logits.gather(1, pos_idx)                                # (B, kp)
    pos_keep = scores.gather(1, pos_idx) > 0                             # (B, kp)
    neg_logit = logits.gather(1, neg_idx)                                # (B, kn)
    neg_ok = scores.gather(1, neg_idx) <= neg_threshold                  # (B, kn)
    valid = neg_ok[:, None, :] & (neg_idx[:, None, :] != pos_idx[:, :, None])  # (B, kp, kn)
    neg = neg_logit[:, None, :].expand(-1, kp, -1).masked_fill(~valid, float("-inf"))
    lse = torch.logsumexp(torch.cat([pos_logit[..., None], neg], dim=-1), dim=-1)  # (B, kp)
    term = lse - pos_logit
    term = torch.where(pos_keep & valid.any(-1), term, torch.zeros_like(term))
    return term.mean(dim=0).sum()


def sample_pairs(
    groups: torch.Tensor,
    n_neg: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one in-group positive and ``n_neg`` out-group negatives per anchor.

    For anchor a, the positive is drawn uniformly among the other items of a's group (never
    a itself) and the negatives uniformly without replacement among items of other groups.
    Vectorised: one ``(B, B)`` matrix of uniform keys drawn on CPU with ``generator``
    (reproducible for a seeded generator), invalid entries masked, argmax for the positive,
    topk for the negatives.

    Args:
        groups: ``(B,)`` integer group ids.
        n_neg: number of negatives per anchor (>= 0).
        generator: a CPU ``torch.Generator``; the global one when None.

    Returns:
        ``(pos_idx (B,), neg_idx (B, n_neg), valid (B,) bool)`` on ``groups.device``. ``valid``
        is True iff the anchor has >= 1 other same-group item and >= n_neg other-group
        items; the indices of invalid anchors are placeholders (the anchor itself) to ignore.
    """
    if groups.dim() != 1:
        raise ValueError(f"groups must be (B,); got {tuple(groups.shape)}")
    if n_neg < 0:
        raise ValueError(f"n_neg must be >= 0; got {n_neg}")
    device, size = groups.device, groups.shape[0]
    if size == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.reshape(0, n_neg), torch.zeros(0, dtype=torch.bool, device=device)
    keys = torch.rand(size, size, generator=generator, device="cpu").to(device)
    same = groups[:, None] == groups[None, :]
    eye = torch.eye(size, dtype=torch.bool, device=device)
    pos_mask, neg_mask = same & ~eye, ~same
    arange = torch.arange(size, device=device)
    valid = pos_mask.any(1) & (neg_mask.sum(1) >= n_neg)
    pos_idx = torch.where(valid, keys.masked_fill(~pos_mask, -1.0).argmax(1), arange)
    if n_neg > size:
        neg_idx = arange[:, None].expand(size, n_neg).clone()
    else:
        neg_idx = keys.masked_fill(~neg_mask, -1.0).topk(n_neg, dim=1).indices
        neg_idx = torch.where(valid[:, None], neg_idx, arange[:, None])
    return pos_idx, neg_idx, valid


def sample_sample_loss(
    embeddings: torch.Tensor,
    groups: torch.Tensor,
    n_neg: int = 3,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Sample-sample contrastive loss (RouterDC eq. 5).

    With s(a, b) = cos(E(x_a), E(x_b)) / temperature, a positive x^+ of the anchor's group and
    negatives x^-_1..x^-_H of other groups drawn by :func:`sample_pairs`::

        term(a) = -log( e^{s(a, +)} / (e^{s(a, +)} + \sum_{h=1}^{H} e^{s(a, -_h)}) )
        L_ss = mean_{a qualifying} term(a)

    An anchor qualifies when it has >= 1 other same-group item and >= H other-group items.
    When none qualifies the result is a zero still connected to the graph.

    Args:
        embeddings: ``(B, d)`` query embeddings.
        groups: ``(B,)`` integer group ids (cluster or task).
        n_neg: H, the number of negatives per anchor.
        temperature: divides the cosine similarity.
        generator: CPU generator for the sampling (see :func:`sample_pairs`).

    Returns:
        A scalar tensor, differentiable w.r.t. ``embeddings``.
    """
    if embeddings.dim() != 2 or groups.shape != embeddings.shape[:1]:
        raise ValueError(f"embeddings must be (B, d) and groups (B,); got "
                         f"{tuple(embeddings.shape)} and {tuple(groups.shape)}")
    pos_idx, neg_idx, valid = sample_pairs(groups.to(embeddings.device), n_neg, generator)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    z = F.normalize(embeddings, dim=-1)
    s_pos = (z * z[pos_idx]).sum(-1) / temperature                       # (B,)
    s_neg = torch.einsum("bd,bhd->bh", z, z[neg_idx]) / temperature       # (B, H)
    sims = torch.cat([s_pos[:, None], s_neg], dim=1)
    term = torch.logsumexp(sims, dim=1) - s_pos
    term = torch.where(valid, term, torch.zeros_like(term))
    return term.sum() / valid.sum()


@dataclass(frozen=True)
class RouterLoss:
    """The RouterDC training loss and its two parts (total = sample_llm + lam * sample_sample)."""

    total: torch.Tensor
    sample_llm: torch.Tensor
    sample_sample: torch.Tensor


def router_loss(
    logits: torch.Tensor,
    scores: torch.Tensor,
    embeddings: torch.Tensor,
    groups: torch.Tensor | None,
    *,
    k_pos: int = 3,
    k_neg: int = 3,
    neg_threshold: float = 0.5,
    lam: float = 1.0,
    n_neg: int = 3,
    ss_temperature: float = 1.0,
    tie_break: str = "index",
    generator: torch.Generator | None = None,
) -> RouterLoss:
    """RouterDC loss: L = L_sLLM + lam * L_ss (RouterDC eq. 6).

    ``groups`` may be None only when ``lam == 0``; then L_ss is not computed and reported as
    a zero tensor. See :func:`sample_llm_loss` and :func:`sample_sample_loss` for the parts.
    """
    sllm = sample_llm_loss(logits, scores, k_pos=k_pos, k_neg=k_neg, neg_threshold=neg_threshold,
                           tie_break=tie_break, generator=generator)
    if lam == 0:
        ss = torch.zeros((), dtype=sllm.dtype, device=sllm.device)
        return RouterLoss(total=sllm, sample_llm=sllm, sample_sample=ss)
    if groups is None:
        raise ValueError("groups is required when lam != 0")
    ss = sample_sample_loss(embeddings, groups, n_neg=n_neg, temperature=ss_temperature,
                            generator=generator)
    return RouterLoss(total=sllm + lam * ss, sample_llm=sllm, sample_sample=ss)
