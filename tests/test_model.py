import pytest
import torch
from conftest import build_model

from one_layer_lottery.errors import ConfigError
from one_layer_lottery.supermask import MaskedLinear, supermask_modules

# DESIGN.md's table: name -> (layers, embed, ffn, heads); written out here, not imported, so a drift fails
TABLE = {
    "iwslt_de_en": (6, 512, 1024, 4),
    "iwslt_de_en_wide": (6, 1024, 2048, 4),
    "iwslt_de_en_deep": (12, 512, 1024, 4),
    "wmt_en_de": (6, 512, 2048, 8),
    "wmt_en_de_wider": (6, 1024, 4096, 16),
    "wmt_en_de_deeper": (12, 512, 2048, 8),
}
V_SRC, V_TGT = 44, 34  # 40/30 words + 4 specials


def expected_counts(layers, d, f, one_layer):
    enc_layer = 4 * d * d + 2 * d * f
    dec_layer = 8 * d * d + 2 * d * f
    embeddings = d * (V_SRC + 2 * V_TGT)  # encoder, decoder, untied output projection
    scores = layers * (enc_layer + dec_layer) + embeddings
    frozen = (enc_layer + dec_layer if one_layer else layers * (enc_layer + dec_layer)) + embeddings
    return scores, frozen


@pytest.mark.parametrize("one_layer", [False, True])
@pytest.mark.parametrize("name", list(TABLE))
@pytest.mark.e2e
def test_parameter_counts_match_formula(name, one_layer):
    layers, d, f, heads = TABLE[name]
    arch = f"{'one_layer_' if one_layer else ''}supermask_transformer_{name}"
    model = build_model(arch)
    assert len(model.encoder.layers) == layers == len(model.decoder.layers)
    assert model.encoder.layers[0].self_attn.num_heads == heads
    assert model.encoder.layers[0].fc1.out_features == f and model.encoder.embed_tokens.embedding_dim == d
    scores, frozen = expected_counts(layers, d, f, one_layer)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith(".scores") for n, _ in trainable)
    assert sum(p.numel() for _, p in trainable) == scores
    sd = model.state_dict()
    frozen_unique = sum(t.numel() for k, t in sd.items() if not k.endswith((".scores", "version")))
    assert frozen_unique == frozen
    # each frozen tensor is stored once: no two state-dict entries share storage
    ptrs = [t.data_ptr() for k, t in sd.items() if not k.endswith("version")]
    assert len(ptrs) == len(set(ptrs))


def test_authors_wider_wmt_shape():
    model = build_model("one_layer_supermask_transformer_wmt_en_de_wider_authors")
    assert model.encoder.layers[0].self_attn.num_heads == 24 == model.decoder.layers[5].encoder_attn.num_heads
    assert model.encoder.layers[0].fc1.out_features == 6144 and model.encoder.embed_tokens.embedding_dim == 1536


def test_one_layer_shares_storage_and_has_one_state_dict_entry():
    model = build_model("one_layer_supermask_transformer_tiny", "--encoder-layers", "3", "--decoder-layers", "3")
    enc = model.encoder.layers
    w0 = enc[0].fc1.get_frozen_weight()
    assert enc[2].fc1.get_frozen_weight().data_ptr() == w0.data_ptr()
    assert enc[0].self_attn.q_proj.get_frozen_weight().data_ptr() != enc[0].self_attn.k_proj.get_frozen_weight().data_ptr()
    keys = [k for k in model.state_dict() if "fc1" in k and "scores" not in k]
    assert keys == ["encoder.shared_layer_weights.fc1", "decoder.shared_layer_weights.fc1"]
    # different scores, hence different masks, at every depth
    masks = [layer.fc1.mask() for layer in enc]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    # still shared after moving the model (e.g. .half(), .to(device))
    model.double()
    assert enc[1].fc1.get_frozen_weight().dtype == torch.float64
    assert enc[1].fc1.get_frozen_weight().data_ptr() == enc[0].fc1.get_frozen_weight().data_ptr()


def test_standard_variant_has_independent_layers():
    model = build_model("supermask_transformer_tiny")
    a, b = model.encoder.layers[0].fc1.get_frozen_weight(), model.encoder.layers[1].fc1.get_frozen_weight()
    assert not torch.equal(a, b)


def test_weights_regenerate_from_seed_whatever_the_global_rng():
    torch.manual_seed(0)
    a = build_model("one_layer_supermask_transformer_tiny", "--weight-seed", "11")
    torch.manual_seed(999)
    b = build_model("one_layer_supermask_transformer_tiny", "--weight-seed", "11", "--seed", "5")
    c = build_model("one_layer_supermask_transformer_tiny", "--weight-seed", "12")
    bufs = lambda m: {k: v for k, v in m.state_dict().items() if "scores" not in k}
    assert all(torch.equal(v, bufs(b)[k]) for k, v in bufs(a).items())
    assert not torch.equal(bufs(a)["encoder.shared_layer_weights.fc1"], bufs(c)["encoder.shared_layer_weights.fc1"])
    # default weight seed is --seed
    d = build_model("one_layer_supermask_transformer_tiny", "--seed", "11")
    assert torch.equal(bufs(a)["decoder.shared_layer_weights.fc2"], bufs(d)["decoder.shared_layer_weights.fc2"])


def test_every_masked_module_keeps_exact_count():
    model = build_model("supermask_transformer_tiny", "--remaining-ratio", "0.3")
    mods = supermask_modules(model)
    # 2 encoder layers x 6 linears, 2 decoder layers x 10, 2 embeddings, 1 output projection
    assert len(mods) == 2 * 6 + 2 * 10 + 3
    for _, m in mods:
        n = m.scores.numel()
        assert int(m.mask().sum()) == n - int(0.7 * n)


def test_layernorm_without_affine():
    model = build_model("supermask_transformer_tiny")
    ln = model.encoder.layers[0].final_layer_norm
    assert isinstance(ln, torch.nn.LayerNorm) and not ln.elementwise_affine


def test_tied_output_projection_uses_masked_embedding():
    model = build_model("supermask_transformer_tiny", "--share-decoder-input-output-embed")
    assert torch.equal(model.decoder.output_projection.weight, model.decoder.embed_tokens.weight)
    assert not any(isinstance(m, MaskedLinear) for n, m in model.decoder.named_modules() if "output" in n)


def test_forward_backward_through_fairseq_model():
    model = build_model("one_layer_supermask_transformer_tiny")
    src = torch.randint(4, 44, (3, 7))
    prev = torch.randint(4, 34, (3, 5))
    out, _ = model(src, torch.full((3,), 7), prev)
    assert out.shape == (3, 5, 34)
    out.logsumexp(-1).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("flags, message", [
    (["--remaining-ratio", "0"], "--remaining-ratio: remaining ratio 0.0 is outside (0, 1]"),
    (["--remaining-ratio", "1.5"], "remaining ratio 1.5 is outside (0, 1]"),
    (["--remaining-ratio", "1.2"], "remaining ratio 1.2 is outside (0, 1]"),
    (["--pretrained-embeddings", "/nonexistent/ckpt.pt"], "'/nonexistent/ckpt.pt' does not exist"),
    (["--weight-init", "gaussian"], "--weight-init 'gaussian' is unknown; allowed: kaiming_uniform"),
    (["--embed-init", "zeros"], "--embed-init 'zeros' is unknown"),
    (["--ffn-gain", "-1"], "--ffn-gain -1.0 must be a positive finite number"),
    (["--mask-structure", "2:4", "--remaining-ratio", "0.3"], "--remaining-ratio 0.3 must equal N/M = 0.5"),
])
def test_bad_options_raise_config_error(flags, message):
    with pytest.raises(ConfigError) as e:
        build_model("supermask_transformer_tiny", *flags)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_choices_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as e:
        build_model("one_layer_supermask_transformer_tiny", "--score-init", "zeros")
    assert e.value.code == 2 and "invalid choice: 'zeros'" in capsys.readouterr().err


@pytest.mark.parametrize("flags, needle", [
    (["--multicoat-ratios", "0.25,0.3"], "--multicoat-ratios '0.25,0.3': coat ratio 0.3 must lie in (0, 0.25)"),
    (["--multicoat-ratios", "half"], "--multicoat-ratios 'half'"),
    (["--ratio-anneal-updates", "-5"], "--ratio-anneal-updates -5 must be a non-negative integer"),
    (["--layer-score-lr-scale", "0"], "--layer-score-lr-scale 0.0 must be a positive finite number"),
    (["--layer-score-lr-scale", "-2"], "--layer-score-lr-scale -2.0 must be a positive finite number"),
    (["--mask-structure", "4:2"], "--mask-structure '4:2' is not a mask structure; allowed: unstructured, row or N:M"),
    (["--mask-structure", "2:4", "--multicoat-ratios", "0.25"], "takes neither --multicoat-ratios"),
    (["--mask-structure", "2:4", "--ratio-anneal-updates", "10"], "nor --ratio-anneal-updates"),
    (["--mask-structure", "1:3", "--remaining-ratio", "0.3333333333333333"], "is not a multiple of M = 3"),
])
def test_bad_mask_options_name_the_value(flags, needle):
    with pytest.raises(ConfigError) as e:
        build_model("one_layer_supermask_transformer_tiny", *flags)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_layer_score_lr_scale_scales_layer_scores_only():
    torch.manual_seed(5)
    plain = build_model("one_layer_supermask_transformer_tiny").state_dict()
    torch.manual_seed(5)
    scaled = build_model("one_layer_supermask_transformer_tiny", "--layer-score-lr-scale", "0.25").state_dict()
    scores = [k for k in plain if k.endswith(".scores")]
    layers = [k for k in scores if ".layers." in k]
    assert layers and len(layers) < len(scores)  # embeddings and the output projection are not layers
    for k in scores:
        torch.testing.assert_close(scaled[k], plain[k] * (4 if k in layers else 1), rtol=0, atol=0)
