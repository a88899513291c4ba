"""Mask rules (masks.py): each keeps exactly what it promises, anneals, checks shapes and packs for the artifact."""

import numpy as np
import pytest
import torch

from one_layer_lottery.masks import NM, Multicoat, RowTopK, TopK, make_rule, n_pruned, outer_mask, unpack_levels


def _round_trip(rule, scores):
    """What the artifact stores of a rule's mask, read back: (outer mask, levels)."""
    mask = rule.select(scores)
    tensors, meta = rule.pack("m", scores, mask)
    meta = {"masks": {"m": list(scores.shape)}, **meta}
    n = scores.numel()
    return mask, outer_mask(meta, tensors, "m", n), unpack_levels(meta, tensors, "m", n)


def test_row_top_k_keeps_exactly_k_of_every_row_ties_to_the_lowest_index():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(7, 10, generator=g)
    s[0] = 1.0  # a row of ties: the lowest indices win
    mask = RowTopK(0.3).select(s)
    keep = 10 - n_pruned(10, 0.3)
    assert mask.sum(1).tolist() == [keep] * 7
    assert mask[0, :keep].all() and not mask[0, keep:].any()
    for r in range(1, 7):
        assert torch.equal(mask[r], s[r].abs() >= s[r].abs().topk(keep).values.min())
    assert not torch.equal(mask, TopK(0.3).select(s))  # not the tensor-wide rule
    with pytest.raises(ValueError, match="2-d weight"):
        RowTopK(0.5).check_shape((2, 3, 4))


@pytest.mark.parametrize("rule", [TopK(0.3), RowTopK(0.5), NM(n=2, m=4), Multicoat(0.5, (0.25, 0.1))])
def test_packing_round_trip_and_scores_from_levels_select_the_same_mask(rule):
    s = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))
    mask, stored, levels = _round_trip(rule, s)
    assert np.array_equal(stored, mask.flatten().numpy())
    # the artifact rebuilds scores from levels: the rule must select the same mask (and coats) from them
    again = torch.from_numpy(levels).view_as(s)
    assert torch.equal(rule.select(again), mask)
    assert [torch.equal(a, b) for a, b in zip(rule.planes(again, mask), rule.planes(s, mask))] == \
        [True] * len(rule.planes(s, mask))


def test_rules_anneal_and_refuse_what_they_cannot_do():
    assert TopK(0.5).at(0.8) == TopK(0.8) and RowTopK(0.5).at(0.8) == RowTopK(0.8)
    assert Multicoat(0.5, (0.25,)).at(1.0) == Multicoat(1.0, (0.5,))
    assert NM(n=2, m=4).at(0.5) == NM(n=2, m=4)
    with pytest.raises(ValueError, match="cannot keep 0.8"):
        NM(n=2, m=4).at(0.8)
    with pytest.raises(ValueError, match="divisible by M"):
        NM(n=2, m=4).check_shape((8, 6))
    assert make_rule(0.4, "row") == RowTopK(0.4)
    with pytest.raises(ValueError, match="inner coats need the unstructured rule"):
        make_rule(0.5, "row", (0.25,))
    assert [r.bits_per_weight for r in (TopK(0.5), NM(n=2, m=4), Multicoat(0.5, (0.25,)))] == [1, 2 / 3, 1.5]


def test_row_rule_trains_in_a_model_and_the_option_is_validated():
    from conftest import build_model

    from one_layer_lottery.errors import ConfigError
    from one_layer_lottery.supermask import supermask_modules

    model = build_model("one_layer_supermask_transformer_tiny", "--mask-structure", "row", "--remaining-ratio", "0.25")
    for _, m in supermask_modules(model):
        cols = m.scores.shape[1]
        assert m.mask().sum(1).tolist() == [cols - n_pruned(cols, 0.25)] * m.scores.shape[0]
    with pytest.raises(ConfigError, match="--multicoat-ratios needs --mask-structure unstructured"):
        build_model("one_layer_supermask_transformer_tiny", "--mask-structure", "row", "--multicoat-ratios", "0.2")


def test_inner_coats_are_stored_only_inside_the_coat_around_them():
    """A coat's plane holds a bit for each entry the plane before it keeps (they nest): 1 + 0.5 + 0.25 bits a weight
    for coats 0.25 and 0.1 at k = 0.5, what bits_per_weight promises; formats 3 and 4 stored full planes."""
    from one_layer_lottery.masks import packed_bits, packed_sizes

    rule, s = Multicoat(0.5, (0.25, 0.1)), torch.randn(40, 10, generator=torch.Generator().manual_seed(5))
    tensors, meta = rule.pack("m", s, rule.select(s))
    assert meta == {"coats": {"m": 2}, "nested_coats": True}
    assert packed_sizes(meta, "m", 400, tensors) == {"mask:m": 50, "coat1:m": 25, "coat2:m": 13}
    assert {k: t.numel() for k, t in tensors.items()} == packed_sizes(meta, "m", 400, tensors)
    assert packed_bits(meta, "m", 400, tensors) == 700 == rule.bits_per_weight * 400
    assert packed_sizes({"coats": {"m": 2}}, "m", 400, tensors) == {"mask:m": 50, "coat1:m": 50, "coat2:m": 50}
