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


@pytest.mark.parametrize("k,scale", [(0.5, False), (0.25, True)])
def test_bert_normal_is_a_gaussian_of_std_0_02_whatever_the_fan(k, scale):
    std = 0.02 * (math.sqrt(1 / k) if scale else 1)
    for shape in ((512, 256), (256, 1024)):
        w = generate_weight(1, "w", shape, InitSpec("bert_normal", k, scale))
        assert abs(w.std().item() / std - 1) < 0.02 and abs(w.mean().item()) < std / 50
        assert w.abs().max() > 4 * std  # a gaussian's tail: a uniform of this std stops at sqrt(3) std
    assert torch.equal(generate_weight(1, "w", (8, 8), InitSpec("bert_normal", 0.5, False, 2.0)),
                       2 * generate_weight(1, "w", (8, 8), InitSpec("bert_normal", 0.5, False)))


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


def _std(t):
    return t.float().std().item()


def _role_weights(model):
    """One frozen weight per role of a tiny one-layer model with an untied output projection."""
    enc = model.encoder.layers[0]
    return {"qkv": enc.self_attn.q_proj.get_frozen_weight(), "attn_out": enc.self_attn.out_proj.get_frozen_weight(),
            "ffn": enc.fc1.get_frozen_weight(), "embed": model.encoder.embed_tokens.get_frozen_weight()[4:],
            "output": model.decoder.output_projection.get_frozen_weight()}


def _expected(preset, d=64, f=128, v_src=44, v_tgt=34, k=0.5):
    xavier = {"qkv": math.sqrt(2 / (2 * d)), "attn_out": math.sqrt(2 / (2 * d)), "ffn": math.sqrt(2 / (d + f))}
    kaiming = {"qkv": math.sqrt(2 / d), "attn_out": math.sqrt(2 / d), "ffn": math.sqrt(2 / d),
               "embed": math.sqrt(2 / d), "output": math.sqrt(2 / d)}
    if preset == "tuned":  # README: layers xavier unscaled, embedding table and output kaiming * sqrt(1/k)
        return {**xavier, "embed": kaiming["embed"] / math.sqrt(k), "output": kaiming["output"] / math.sqrt(k)}
    if preset == "paper":  # kaiming * sqrt(1/k) everywhere
        return {r: s / math.sqrt(k) for r, s in kaiming.items()}
    if preset == "bert":  # the authors' RoBERTa code: N(0, 0.02) for every masked weight, unscaled
        return {r: 0.02 for r in kaiming}
    # authors: fairseq's attention init (q/k/v gain 1/sqrt 2), kaiming unscaled, output std dim^-1/2
    return {**kaiming, "qkv": xavier["qkv"] / math.sqrt(2), "attn_out": xavier["attn_out"],
            "output": 1 / math.sqrt(d)}


@pytest.mark.parametrize("preset", ["tuned", "paper", "authors", "bert"])
def test_each_role_has_its_documented_std(preset):
    from conftest import build_model

    flags = [] if preset == "tuned" else ["--init-preset", preset]  # tuned is the default
    model = build_model("one_layer_supermask_transformer_tiny", *flags)
    for role, expected in _expected(preset).items():
        got = _std(_role_weights(model)[role])
        assert abs(got / expected - 1) < 0.08, (role, got, expected)


def test_role_flags_override_the_preset():
    from conftest import build_model

    base = _role_weights(build_model("one_layer_supermask_transformer_tiny"))
    model = build_model("one_layer_supermask_transformer_tiny", "--weight-init", "kaiming_uniform", "--ffn-init",
                        "xavier_uniform", "--embed-gain", "3", "--qkv-gain", "0.5", "--no-scale-init")
    w = _role_weights(model)
    assert abs(_std(w["qkv"]) / (0.5 * math.sqrt(2 / 64)) - 1) < 0.08  # --weight-init, then the gain
    assert abs(_std(w["attn_out"]) / math.sqrt(2 / 64) - 1) < 0.08
    assert abs(_std(w["ffn"]) / math.sqrt(2 / 192) - 1) < 0.08  # the role flag beats --weight-init
    assert abs(_std(w["embed"]) / (3 * math.sqrt(2 / 64)) - 1) < 0.08  # gain, and no sqrt(1/k) any more
    assert abs(_std(w["output"]) / math.sqrt(2 / 64) - 1) < 0.08  # unscaled
    assert abs(_std(base["output"]) / math.sqrt(4 / 64) - 1) < 0.08


def test_bad_role_flags():
    from conftest import build_model

    from one_layer_lottery.errors import ConfigError

    with pytest.raises(ConfigError, match="--embed-init 'gaussian' is unknown; allowed: kaiming_uniform"):
        build_model("one_layer_supermask_transformer_tiny", "--embed-init", "gaussian")
    with pytest.raises(ConfigError, match="--weight-init 'normal' is unknown"):
        build_model("one_layer_supermask_transformer_tiny", "--weight-init", "normal")
    with pytest.raises(ConfigError, match="--attn-out-gain 0.0 must be a positive finite number"):
        build_model("one_layer_supermask_transformer_tiny", "--attn-out-gain", "0")


def test_magnitude_score_init_starts_from_the_largest_weights():
    from conftest import build_model

    torch.manual_seed(0)
    model = build_model("one_layer_supermask_transformer_tiny", "--score-init", "magnitude", "--encoder-layers", "3")
    fc1 = [layer.fc1 for layer in model.encoder.layers]
    w = fc1[0].get_frozen_weight().abs()
    by_weight = w > w.flatten().kthvalue(w.numel() // 2).values
    for m in fc1:  # mostly the largest |W|, but not the same mask at every depth
        assert (m.mask() == by_weight).float().mean() > 0.85
        assert m.scores.abs().max() <= 2 / math.sqrt(64)  # about kaiming_uniform's range
    assert not torch.equal(fc1[0].mask(), fc1[1].mask())
    with pytest.raises(ValueError, match="needs the weight"):
        init_scores_(torch.empty(2, 2), "magnitude")
