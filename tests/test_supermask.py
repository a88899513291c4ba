import pytest
import torch

from one_layer_lottery.init import InitSpec, generate_weight
from one_layer_lottery.masks import NM, Multicoat, TopK, make_rule, n_pruned, topk_mask
from one_layer_lottery.supermask import MaskedEmbedding, MaskedLinear, WeightBank


@pytest.mark.parametrize("k", [0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
@pytest.mark.parametrize("shape", [(7, 13), (64, 32), (1, 1), (3, 1000)])
def test_mask_keeps_exact_count(k, shape):
    s = torch.randn(shape)
    m = topk_mask(s, k)
    n = s.numel()
    assert m.dtype == torch.bool and m.shape == s.shape
    assert int(m.sum()) == n - int((1 - k) * n)
    if 0 < m.sum() < n:  # every kept |score| is >= every dropped one
        assert s.abs()[m].min() >= s.abs()[~m].max()


def test_mask_exact_count_with_ties():
    s = torch.tensor([[0.5, -0.5, 0.5, 0.5], [0.1, 0.5, -0.5, 2.0]])
    for k in (0.25, 0.5, 0.75):
        m = topk_mask(s, k)
        assert int(m.sum()) == 8 - n_pruned(8, k)
        assert m[1, 3]  # the largest is always kept
    s = torch.zeros(10, 10)
    assert int(topk_mask(s, 0.37).sum()) == 100 - int(0.63 * 100)


def test_straight_through_gradient_reaches_scores_only():
    w = torch.randn(6, 5)
    lin = MaskedLinear(5, 6, 0.5, weight=w.clone())
    assert [n for n, _ in lin.named_parameters()] == ["scores"]
    x = torch.randn(3, 5)
    lin(x).sum().backward()
    mask = topk_mask(lin.scores, 0.5).float()
    # dL/dW_eff for sum(x W^T) is sum_b x_b; straight-through: dL/dS = dL/dW_eff * W * sign(S)
    expected = x.sum(0).expand(6, 5) * w * lin.scores.detach().sign()
    torch.testing.assert_close(lin.scores.grad, expected)
    assert not lin.frozen_weight.requires_grad and lin.frozen_weight.grad is None
    torch.testing.assert_close(lin(x), x @ (w * mask).t())
    assert mask.sum() == 15


def test_eval_cache_is_reused_and_invalidated():
    lin = MaskedLinear(8, 8, 0.5, weight=torch.randn(8, 8)).eval()
    with torch.no_grad():
        a = lin.weight
        assert lin.weight is a  # materialised once
        lin.scores.mul_(-1).add_(torch.randn(8, 8))  # scores change: a new mask
        b = lin.weight
    assert b is not a
    assert torch.equal(b, lin.get_frozen_weight() * topk_mask(lin.scores, 0.5))
    lin.train()
    assert lin._cache is None


def test_embedding_is_masked_and_padding_zero():
    w = torch.randn(10, 4)
    w[1] = 0
    emb = MaskedEmbedding(10, 4, padding_idx=1, rule=0.5, weight=w)
    out = emb(torch.tensor([[1, 2, 3]]))
    assert torch.equal(out[0, 0], torch.zeros(4))
    torch.testing.assert_close(out[0, 1:], (w * topk_mask(emb.scores, 0.5))[[2, 3]])


def test_shared_weight_is_one_storage():
    bank = WeightBank()
    spec = InitSpec()
    make = lambda: generate_weight(1, "x", (4, 4), spec)
    a = MaskedLinear(4, 4, 0.5, shared=bank.get_or_add("fc1", make))
    b = MaskedLinear(4, 4, 0.5, shared=bank.get_or_add("fc1", make))
    assert a.get_frozen_weight().data_ptr() == b.get_frozen_weight().data_ptr()
    assert list(dict(bank.named_buffers())) == ["fc1"] and not list(a.named_buffers())


@pytest.mark.parametrize("bad", [0, -0.1, 1.01, 2])
def test_bad_remaining_ratio(bad):
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        MaskedLinear(4, 4, bad, weight=torch.randn(4, 4))


def test_mask_selected_once_per_update_not_per_micro_batch(monkeypatch):
    from fairseq.optim.adam import Adam as FairseqAdamImpl

    from one_layer_lottery import masks

    calls = []
    real = masks.topk_mask
    monkeypatch.setattr(masks, "topk_mask", lambda s, k: calls.append(1) or real(s, k))
    lin = MaskedLinear(8, 8, 0.5, weight=torch.randn(8, 8)).train()
    opt = FairseqAdamImpl([lin.scores], lr=0.5)  # fairseq's Adam updates through .data
    for _ in range(3):  # three micro-batches of one update (--update-freq 3)
        lin(torch.randn(2, 8)).sum().backward()
    assert len(calls) == 1
    before = lin.mask().clone()
    opt.step()
    lin(torch.randn(2, 8)).sum().backward()
    assert len(calls) == 2
    assert torch.equal(lin.mask(), real(lin.scores, 0.5)) and not torch.equal(before, lin.mask())


def test_multicoated_levels_are_nested_top_k_counts():
    torch.manual_seed(0)
    w = torch.randn(40, 50)
    m = MaskedLinear(50, 40, Multicoat(0.5, (0.3, 0.1)), weight=w)
    level = m.mask().long() + sum(c.long() for c in m.coat_masks())
    n = w.numel()
    # each coat keeps exactly its count, and coats are nested: level >= c is coat c
    for c, k in enumerate((0.5, 0.3, 0.1), start=1):
        assert int((level >= c).sum()) == n - n_pruned(n, k)
        assert torch.equal(level >= c, topk_mask(m.scores, k))
    g = (0.5 / (0.2 * 1 + 0.2 * 4 + 0.1 * 9)) ** 0.5  # variance of a plain 0.5-mask: E[level^2] g^2 = 0.5
    assert torch.allclose(m.weight, w * level.float() * g)
    # straight-through: the gradient reaches the scores where the level is zero too
    m(torch.randn(3, 50)).sum().backward()
    assert m.scores.grad is not None and bool((m.scores.grad[level == 0] != 0).any())


@pytest.mark.parametrize("coats", [(0.5,), (0.6,), (0.3, 0.3), (0.2, 0.3), (0.0,)])
def test_bad_coat_ratios(coats):
    with pytest.raises(ValueError, match="coat ratio"):
        MaskedLinear(8, 8, Multicoat(0.5, coats), weight=torch.randn(8, 8))


def test_annealed_ratio_schedule_and_exact_counts():
    from conftest import build_model

    from one_layer_lottery.masks import cubic_schedule
    from one_layer_lottery.supermask import SupermaskModule

    def annealed_ratio(k, updates, t):
        return cubic_schedule(k, 0, updates, t)

    assert annealed_ratio(0.5, 100, 0) == 1.0
    assert annealed_ratio(0.5, 100, 50) == pytest.approx(0.5 + 0.5 * 0.5 ** 3)
    assert annealed_ratio(0.5, 100, 100) == annealed_ratio(0.5, 100, 10_000) == annealed_ratio(0.5, 0, 0) == 0.5
    model = build_model("one_layer_supermask_transformer_tiny", "--remaining-ratio", "0.3",
                        "--ratio-anneal-updates", "20", "--multicoat-ratios", "0.1")
    mods = [m for m in model.modules() if isinstance(m, SupermaskModule)]
    for t in (0, 7, 20, 25):
        model.set_num_updates(t)
        k = annealed_ratio(0.3, 20, t)
        for m in mods:
            n = m.scores.numel()
            assert int(m.mask().sum()) == n - n_pruned(n, k)
            assert int(m.coat_masks()[0].sum()) == n - n_pruned(n, 0.1 * k / 0.3)
    model.set_num_updates(5)
    model.eval()  # evaluation and inference mask at the target ratio, mid-anneal too
    assert all(int(m.mask().sum()) == m.scores.numel() - n_pruned(m.scores.numel(), 0.3) for m in mods)
    assert all(m.remaining_ratio == 0.3 and m.rule.coats == (0.1,) for m in mods)


def _nm_reference(scores, n, m):
    """Brute force: per group, the n entries of largest |score|, ties to the lowest index."""
    out = torch.zeros(scores.numel(), dtype=torch.bool)
    flat = scores.abs().flatten().tolist()
    for g in range(0, len(flat), m):
        ranked = sorted(range(m), key=lambda i: (-flat[g + i], i))[:n]
        for i in ranked:
            out[g + i] = True
    return out.view_as(scores)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (2, 8), (3, 4)])
def test_nm_mask_matches_brute_force(n, m):
    from one_layer_lottery.masks import nm_mask

    g = torch.Generator().manual_seed(n * 10 + m)
    s = torch.randn(12, 4 * m, generator=g)
    s[0, :m] = 0.5  # a group of ties: the lowest indices win
    s[1, : 2 * m] = torch.tensor([1.0, -1.0] * m)
    mask = nm_mask(s, n, m)
    assert torch.equal(mask, _nm_reference(s, n, m))
    assert bool((mask.view(-1, m).sum(1) == n).all())
    assert mask[0, :n].all() and not mask[0, n:m].any()
    assert torch.equal(NM(n=n, m=m).select(s), mask) and torch.equal(TopK(0.5).select(s), topk_mask(s, 0.5))


def test_nm_masked_module_and_bad_structures():
    from one_layer_lottery.masks import parse_structure

    w = torch.randn(8, 16)
    lin = MaskedLinear(16, 8, NM(n=2, m=4), weight=w)
    assert bool((lin.mask().view(-1, 4).sum(1) == 2).all()) and torch.equal(lin.weight, w * lin.mask())
    assert make_rule(0.5, "unstructured") == TopK(0.5) and make_rule(0.5, "2:4") == NM(n=2, m=4)
    for bad in ("2:2", "0:4", "4:2", "2-4", "a:b", "2:32"):
        with pytest.raises(ValueError, match="allowed: unstructured, row or N:M"):
            parse_structure(bad)
    with pytest.raises(ValueError, match="divisible by M"):
        MaskedLinear(6, 8, NM(n=2, m=4), weight=torch.randn(8, 6))


@pytest.mark.parametrize("n, m, bits", [(2, 4, 2 / 3), (1, 4, 0.5), (2, 8, 1.0), (1, 2, 0.5)])
def test_nm_packing_round_trip(n, m, bits):
    from one_layer_lottery.masks import nm_bits_per_weight, nm_mask, pack_nm, unpack_nm

    assert nm_bits_per_weight(n, m) == pytest.approx(bits)
    for rows in (1, 3, 7):  # group counts that do and do not fill the last byte
        mask = nm_mask(torch.randn(rows, 2 * m), n, m).flatten().numpy()
        packed = pack_nm(mask, n, m)
        assert packed.size * 8 <= mask.size * bits + 8
        assert (unpack_nm(packed, mask.size, n, m) == mask).all()
    with pytest.raises(ValueError, match=f"not {n}:{m}"):
        pack_nm(torch.ones(2 * m, dtype=torch.bool).numpy(), n, m)


def test_larger_scores_train_masks_as_a_smaller_learning_rate_would():
    """--layer-score-lr-scale s starts scores 1/s times larger instead of scaling the lr: under Adam (and SGD) the
    two give the same masks at every step (s a power of two: the scores stay exactly s times apart)."""
    s, lr = 0.25, 0.05
    torch.manual_seed(0)
    w = torch.randn(8, 6)
    a = MaskedLinear(6, 8, 0.5, weight=w.clone())
    b = MaskedLinear(6, 8, 0.5, weight=w.clone())
    with torch.no_grad():
        a.scores.copy_(b.scores / s)
    opt_a = torch.optim.Adam(a.parameters(), lr=lr)
    opt_b = torch.optim.Adam(b.parameters(), lr=lr * s)
    flips = 0
    for _ in range(40):
        x, y = torch.randn(16, 6), torch.randn(16, 8)
        before = a.mask().clone()
        for lin, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (lin(x) - y).pow(2).mean().backward()
            opt.step()
        assert torch.equal(a.mask(), b.mask())
        torch.testing.assert_close(a.scores * s, b.scores, rtol=0, atol=0)
        flips += int((a.mask() != before).sum())
    assert flips > 0  # the masks did move: the comparison was not of two frozen masks
