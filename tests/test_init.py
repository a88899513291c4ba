import math

import pytest
import torch

from one_layer_lottery.init import InitSpec, generate_weight, init_scores_


def test_weights_ignore_global_rng_and_depend_on_name_and_seed():
    spec = InitSpec()
    torch.manual_seed(0)
    a = generate_weight(7, "encoder.layer.fc1", (32, 16), spec)
    torch.manual_seed(123)
    torch.randn(100)
    b = generate_weight(7, "encoder.layer.fc1", (32, 16), spec)
    assert torch.equal(a, b)
    assert not torch.equal(a, generate_weight(8, "encoder.layer.fc1", (32, 16), spec))
    assert not torch.equal(a, generate_weight(7, "encoder.layer.fc2", (32, 16), spec))


@pytest.mark.parametrize("k", [0.3, 0.5, 1.0])
def test_kaiming_uniform_scaled_std(k):
    w = generate_weight(1, "w", (512, 256), InitSpec("kaiming_uniform", k, True))
    expected = math.sqrt(2.0 / 256 / k)
    assert abs(w.std().item() / expected - 1) < 0.02
    unscaled = generate_weight(1, "w", (512, 256), InitSpec("kaiming_uniform", k, False))
    assert abs(unscaled.std().item() / math.sqrt(2.0 / 256) - 1) < 0.02


def test_xavier_and_signed_constant():
    w = generate_weight(1, "w", (300, 200), InitSpec("xavier_uniform", 0.5, True))
    assert w.abs().max() <= math.sqrt(6 / 500 / 0.5) + 1e-6
    s = generate_weight(1, "w", (300, 200), InitSpec("signed_constant", 0.5, True))
    assert set(s.abs().unique().tolist()) == pytest.approx([math.sqrt(2 / 200 / 0.5)])
    assert 0.45 < (s > 0).float().mean() < 0.55


def test_bad_specs():
    with pytest.raises(ValueError, match="'normal' is unknown; allowed: kaiming_uniform"):
        InitSpec("normal")
    with pytest.raises(ValueError, match="outside"):
        InitSpec(remaining_ratio=0.0)
    with pytest.raises(ValueError, match="score init 'zeros' is unknown"):
        init_scores_(torch.empty(2, 2), "zeros")


def test_score_inits_differ():
    torch.manual_seed(0)
    u = init_scores_(torch.empty(256, 256), "kaiming_uniform")
    n = init_scores_(torch.empty(256, 256), "kaiming_normal")
    assert u.abs().max() <= 1 / 16 + 1e-6  # a=sqrt(5): bound 1/sqrt(fan_in)
    assert n.abs().max() > 1 / 16
