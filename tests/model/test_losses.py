"""Tests for routerdc.model.losses: hand-computed values, per-row reference loops, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from routerdc.model.losses import (
    RouterLoss,
    router_loss,
    sample_llm_loss,
    sample_pairs,
    sample_sample_loss,
)


def _term(s_pos: float, s_negs: list[float]) -> float:
    """-log(e^{s_pos} / (e^{s_pos} + sum e^{s_neg}))."""
    return -math.log(math.exp(s_pos) / (math.exp(s_pos) + sum(math.exp(s) for s in s_negs)))


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- reference implementations


def ref_sample_llm(logits, scores, k_pos=3, k_neg=3, neg_threshold=0.5) -> float:
    """Per-row loop following the spec literally."""
    n_rows, n_llms = len(logits), len(logits[0])
    kp, kn = min(k_pos, n_llms), min(k_neg, n_llms)
    total = 0.0
    for i in range(kp):
        batch_sum = 0.0
        for b in range(n_rows):
            s, sc = logits[b], scores[b]
            order = sorted(range(n_llms), key=lambda t: -sc[t])  # Python's sort is stable
            p, negs = order[i], order[n_llms - kn:]
            if sc[p] <= 0:
                continue
            valid = [s[n] for n in negs if sc[n] <= neg_threshold and n != p]
            if valid:
                batch_sum += _term(s[p], valid)
        total += batch_sum / n_rows
    return total


def _cos(u, v) -> float:
    nu = math.sqrt(sum(x * x for x in u))
    nv = math.sqrt(sum(x * x for x in v))
    return sum(x * y for x, y in zip(u, v)) / (nu * nv)


def ref_sample_sample(emb, pos_idx, neg_idx, valid, temperature=1.0) -> float:
    terms = []
    for a in range(len(emb)):
        if not valid[a]:
            continue
        s_pos = _cos(emb[a], emb[pos_idx[a]]) / temperature
        s_negs = [_cos(emb[a], emb[n]) / temperature for n in neg_idx[a]]
        terms.append(_term(s_pos, s_negs))
    return sum(terms) / len(terms) if terms else 0.0


# ---------------------------------------------------------------- sample-LLM: hand values


def test_sllm_basic_hand_value():
    logits, scores = _t([[1.0, 2.0, 0.5, -1.0]]), _t([[1.0, 0.7, 0.2, 0.0]])
    # order 0,1,2,3: positive 0, negatives 2,3 (both <= 0.5)
    got = sample_llm_loss(logits, scores, k_pos=1, k_neg=2)
    assert got.item() == pytest.approx(_term(1.0, [0.5, -1.0]), abs=1e-12)


def test_sllm_masks_negative_above_threshold():
    logits, scores = _t([[0.3, 1.5, 2.0, -0.5]]), _t([[0.7, 1.0, 0.6, 0.3]])
    # order 1,0,2,3: positive 1; negatives 2 (0.6 > 0.5, masked) and 3
    got = sample_llm_loss(logits, scores, k_pos=1, k_neg=2)
    assert got.item() == pytest.approx(_term(1.5, [-0.5]), abs=1e-12)


def test_sllm_no_valid_negative_gives_zero():
    got = sample_llm_loss(_t([[1.0, 3.0, 2.0]]), _t([[1.0, 1.0, 0.9]]), k_pos=1, k_neg=2)
    assert got.item() == 0.0


def test_sllm_zero_positive_skipped_but_counted_in_mean():
    logits = _t([[1.0, 2.0, 0.5, -1.0], [5.0, -2.0, 0.1, 3.0]])
    scores = _t([[1.0, 0.7, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    got = sample_llm_loss(logits, scores, k_pos=1, k_neg=2)
    assert got.item() == pytest.approx(_term(1.0, [0.5, -1.0]) / 2, abs=1e-12)


def test_sllm_ties_ordered_by_index():
    logits, scores = _t([[0.2, 1.0, -0.3, 0.7]]), _t([[0.5, 1.0, 1.0, 0.5]])
    # stable descending order: 1, 2, 0, 3
    got = sample_llm_loss(logits, scores, k_pos=1, k_neg=1)
    assert got.item() == pytest.approx(_term(1.0, [0.7]), abs=1e-12)
    got = sample_llm_loss(logits, scores, k_pos=2, k_neg=2)  # negatives 0 and 3 (0.5 kept)
    expected = _term(1.0, [0.2, 0.7]) + _term(-0.3, [0.2, 0.7])
    assert got.item() == pytest.approx(expected, abs=1e-12)


def _roles(scores, tie_break, gen, k_pos=3, k_neg=3):
    """(positive mask, negative mask) of one row, read from the gradient of the loss at zero logits."""
    logits = torch.zeros(1, scores.shape[0], requires_grad=True)
    sample_llm_loss(logits, scores[None], k_pos, k_neg, tie_break=tie_break, generator=gen).backward()
    return logits.grad[0] < 0, logits.grad[0] > 0


def test_sllm_random_tie_break_is_unbiased_and_reproducible():
    tied_top = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # 4 tied positives for 3 slots
    tied_bottom = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # 6 tied negatives for 3 slots
    gen = torch.Generator().manual_seed(0)
    pos, _ = _roles(tied_top, "index", gen)
    assert pos.tolist() == [True, True, True, False, False, False, False]  # column order wins ties
    _, neg = _roles(tied_bottom, "index", gen)
    assert neg.tolist() == [False, False, False, False, True, True, True]  # the last columns are pushed away
    draws = 400
    pos_counts = torch.stack([_roles(tied_top, "random", gen)[0] for _ in range(draws)]).float().mean(0)
    neg_counts = torch.stack([_roles(tied_bottom, "random", gen)[1] for _ in range(draws)]).float().mean(0)
    assert ((pos_counts[:4] - 0.75).abs() < 0.1).all() and (pos_counts[4:] == 0).all()  # each tied LLM 3/4
    assert neg_counts[0] == 0 and ((neg_counts[1:] - 0.5).abs() < 0.1).all()  # each tied LLM 3/6
    # without ties the two modes agree exactly; with a seed, "random" is reproducible
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.0, 0.6]])
    logits = torch.randn(2, 4)
    assert torch.equal(sample_llm_loss(logits, scores, 2, 2), sample_llm_loss(logits, scores, 2, 2, tie_break="random"))
    tied_logits = torch.randn(8, 7)
    runs = [sample_llm_loss(tied_logits, tied_top.expand(8, 7), tie_break="random",
                            generator=torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    with pytest.raises(ValueError, match="tie_break"):
        sample_llm_loss(logits, scores, tie_break="first")


def test_sllm_overlap_excludes_self_negative():
    logits, scores = _t([[1.0, 0.4, -0.2]]), _t([[1.0, 0.4, 0.0]])
    # T=3 < k_pos + k_neg: positives 0,1; negatives 1,2; for positive 1, negative 1 is dropped
    got = sample_llm_loss(logits, scores, k_pos=2, k_neg=2)
    assert got.item() == pytest.approx(_term(1.0, [0.4, -0.2]) + _term(0.4, [-0.2]), abs=1e-12)


def test_sllm_k_clamped_to_T():
    logits, scores = _t([[0.5, -0.5]]), _t([[1.0, 0.0]])
    got = sample_llm_loss(logits, scores, k_pos=3, k_neg=3)
    # positives 0,1 (1 has score 0: skipped); negatives 0,1: 0 is self, 1 valid
    assert got.item() == pytest.approx(_term(0.5, [-0.5]), abs=1e-12)


# ---------------------------------------------------------------- sample-LLM: reference loop


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k_pos,k_neg", [(3, 3), (1, 2), (2, 4), (4, 4)])
def test_sllm_matches_reference(seed, k_pos, k_neg):
    g = torch.Generator().manual_seed(seed)
    n_rows, n_llms = 9, 7 if seed % 2 else 5
    levels = _t([0.0, 0.2, 0.5, 0.7, 1.0])
    scores = levels[torch.randint(0, 5, (n_rows, n_llms), generator=g)]
    scores[0] = 0.0  # an all-zero row
    logits = torch.randn(n_rows, n_llms, generator=g, dtype=torch.float64) * 2
    got = sample_llm_loss(logits, scores, k_pos=k_pos, k_neg=k_neg)
    want = ref_sample_llm(logits.tolist(), scores.tolist(), k_pos, k_neg)
    assert got.item() == pytest.approx(want, abs=1e-10)


def test_sllm_gradients_finite():
    logits = torch.randn(4, 5, requires_grad=True)
    scores = torch.tensor([[0.0] * 5, [1.0, 1.0, 0.9, 0.8, 0.7], [1.0, 0.0, 0.0, 0.2, 0.6],
                           [0.5, 0.5, 0.5, 0.5, 0.5]])
    loss = sample_llm_loss(logits, scores)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_sllm_all_skipped_is_zero_with_finite_grad():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = sample_llm_loss(logits, torch.zeros(3, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(3, 4))


def test_sllm_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        sample_llm_loss(torch.zeros(2, 3), torch.zeros(2, 4))


# ---------------------------------------------------------------- sample_pairs


def _check_pairs(groups, n_neg, pos, neg, valid):
    g = groups.tolist()
    for a in range(len(g)):
        n_same = sum(1 for j in range(len(g)) if j != a and g[j] == g[a])
        n_other = sum(1 for j in range(len(g)) if g[j] != g[a])
        assert bool(valid[a]) == (n_same >= 1 and n_other >= n_neg)
        if valid[a]:
            p = int(pos[a])
            assert p != a and g[p] == g[a]
            negs = neg[a].tolist()
            assert len(set(negs)) == n_neg and all(g[n] != g[a] for n in negs)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_neg", [0, 1, 3, 6])
def test_sample_pairs_properties(seed, n_neg):
    gen = torch.Generator().manual_seed(100 + seed)
    groups = torch.randint(0, 4, (12,), generator=gen)
    pos, neg, valid = sample_pairs(groups, n_neg, torch.Generator().manual_seed(seed))
    assert pos.shape == (12,) and neg.shape == (12, n_neg) and valid.dtype == torch.bool
    _check_pairs(groups, n_neg, pos, neg, valid)


def test_sample_pairs_reproducible_and_seed_dependent():
    groups = torch.arange(32) % 4
    a = sample_pairs(groups, 3, torch.Generator().manual_seed(7))
    b = sample_pairs(groups, 3, torch.Generator().manual_seed(7))
    c = sample_pairs(groups, 3, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_sample_pairs_roughly_uniform():
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(7)
    for _ in range(1500):
        pos, _, _ = sample_pairs(groups, 1, gen)
        counts[pos[0]] += 1
    assert counts[0] == 0 and counts[4:].sum() == 0
    assert ((counts[1:4] / 1500 - 1 / 3).abs() < 0.05).all()


def test_sample_pairs_edge_cases():
    pos, neg, valid = sample_pairs(torch.tensor([3]), 3)
    assert pos.shape == (1,) and neg.shape == (1, 3) and not valid.any()
    pos, neg, valid = sample_pairs(torch.tensor([1, 1, 1, 1]), 1)
    assert not valid.any()


# ---------------------------------------------------------------- sample-sample loss


def test_ss_hand_value_forced_sampling():
    emb = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]
    groups = torch.tensor([0, 0, 1, 1])
    r = 1 / math.sqrt(2)
    # n_neg=2 with two out-group items per anchor: every choice is forced
    expected = (_term(0.0, [r, -1.0]) + _term(0.0, [r, 0.0])
                + _term(-r, [r, r]) + _term(-r, [-1.0, 0.0])) / 4
    got = sample_sample_loss(_t(emb), groups, n_neg=2, generator=torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx(expected, abs=1e-12)
    got = sample_sample_loss(_t(emb), groups, n_neg=2, temperature=0.5)
    expected_t = (_term(0.0, [2 * r, -2.0]) + _term(0.0, [2 * r, 0.0])
                  + _term(-2 * r, [2 * r, 2 * r]) + _term(-2 * r, [-2.0, 0.0])) / 4
    assert got.item() == pytest.approx(expected_t, abs=1e-12)


def test_ss_only_some_anchors_qualify():
    emb = _t([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # anchors 0,1 qualify (positive forced, one out-group item); anchor 2 has no positive
    r = 1 / math.sqrt(2)
    got = sample_sample_loss(emb, torch.tensor([5, 5, 9]), n_neg=1)
    assert got.item() == pytest.approx((_term(r, [0.0]) + _term(r, [r])) / 2, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_neg,temperature", [(1, 1.0), (3, 1.0), (3, 0.2), (5, 0.5)])
def test_ss_matches_reference(seed, n_neg, temperature):
    gen = torch.Generator().manual_seed(1000 + seed)
    emb = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 3, (10,), generator=gen)
    idx = sample_pairs(groups, n_neg, torch.Generator().manual_seed(seed))
    got = sample_sample_loss(emb, groups, n_neg=n_neg, temperature=temperature,
                             generator=torch.Generator().manual_seed(seed))
    pos, neg, valid = (x.tolist() for x in idx)
    want = ref_sample_sample(emb.tolist(), pos, neg, valid, temperature)
    assert got.item() == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("groups,n_neg", [([2, 2, 2, 2], 1), ([0], 3), ([0, 0, 0, 1], 2), ([], 3)])
def test_ss_no_qualifying_anchor_is_connected_zero(groups, n_neg):
    emb = torch.randn(len(groups), 4, requires_grad=True)
    loss = sample_sample_loss(emb, torch.tensor(groups, dtype=torch.long), n_neg=n_neg)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_ss_gradients_finite_with_zero_embedding():
    emb = torch.randn(8, 5)
    emb[3] = 0.0
    emb.requires_grad_(True)
    loss = sample_sample_loss(emb, torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]), n_neg=3,
                              generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()


# ---------------------------------------------------------------- router_loss


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, 5, generator=g, requires_grad=True)
    scores = _t([0.0, 0.2, 0.5, 0.7, 1.0]).float()[torch.randint(0, 5, (8, 5), generator=g)]
    emb = torch.randn(8, 6, generator=g, requires_grad=True)
    return logits, scores, emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_router_loss_total_is_weighted_sum(lam):
    logits, scores, emb, groups = _batch()
    gen = torch.Generator().manual_seed(4)
    out = router_loss(logits, scores, emb, groups, lam=lam, generator=gen)
    assert isinstance(out, RouterLoss)
    ss = sample_sample_loss(emb, groups, generator=torch.Generator().manual_seed(4))
    assert out.sample_sample.item() == pytest.approx(ss.item(), abs=1e-6)
    assert out.sample_llm.item() == pytest.approx(sample_llm_loss(logits, scores).item(), abs=1e-6)
    assert out.total.item() == pytest.approx(out.sample_llm.item() + lam * ss.item(), abs=1e-6)
    out.total.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(emb.grad).all()


def test_router_loss_lam_zero_skips_sample_sample():
    logits, scores, emb, _ = _batch(1)
    out = router_loss(logits, scores, emb, None, lam=0.0)
    assert out.sample_sample.item() == 0.0
    assert torch.equal(out.total, out.sample_llm)


def test_router_loss_requires_groups_when_lam_nonzero():
    logits, scores, emb, _ = _batch(2)
    with pytest.raises(ValueError):
        router_loss(logits, scores, emb, None, lam=1.0)
