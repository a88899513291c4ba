"""2:4 sparse storage for inference: what can be checked without a GPU (the pattern, the backend and layer
choices, the fallback to dense storage, and the attention path the sparse weights take)."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import build_model

from one_layer_lottery import semi_structured as ss
from one_layer_lottery.masks import NM as NMRule
from one_layer_lottery.masks import nm_mask, topk_mask
from one_layer_lottery.supermask import MaskedLinear

NM = ("--mask-structure", "2:4", "--remaining-ratio", "0.5")


def test_pattern_check():
    s = torch.randn(8, 16)
    assert ss.is_2_4(nm_mask(s, 2, 4))
    assert not ss.is_2_4(topk_mask(s, 0.5))  # half of the tensor, not two of every four
    assert not ss.is_2_4(torch.ones(8, 6, dtype=torch.bool))


def test_backend_and_reasons_for_dense_storage():
    assert ss.backend((7, 5), True) is None
    assert ss.backend((8, 0), False) == "cutlass" and ss.backend((8, 6), True) == "cusparselt"
    assert ss.backend((9, 0), False) is None and ss.backend((9, 0), True) == "cusparselt"  # Hopper: cuSPARSELt only
    m = MaskedLinear(64, 128, NMRule(n=2, m=4), weight=torch.randn(128, 64))
    plain = MaskedLinear(64, 128, 0.5, weight=torch.randn(128, 64))
    assert ss.why_dense(plain, (128, 64), torch.float16, "cuda", "cusparselt") == "not a 2:4 masked linear"
    assert "need a CUDA device (this one is cpu)" in ss.why_dense(m, (128, 64), torch.float16, "cpu", None)
    assert "no semi-structured backend" in ss.why_dense(m, (128, 64), torch.float16, "cuda", None)
    assert "fp16 or bf16 (the model is float32)" in ss.why_dense(m, (128, 64), torch.float32, "cuda", "cusparselt")
    assert ss.why_dense(m, (128, 64), torch.bfloat16, "cuda", "cusparselt") is None
    assert "not a multiple of (32, 64) for cutlass" in ss.why_dense(m, (128, 32), torch.float16, "cuda", "cutlass")


def test_layers_are_chosen_by_measured_speedup_each_shape_timed_once():
    calls = []

    def timer(shape, tokens):
        calls.append(shape)
        return ss.LayerTiming(shape, tokens, dense_ms=1.0, sparse_ms=0.6 if shape[0] * shape[1] >= 4096 else 1.3)

    plan = ss.choose([(128, 64), (64, 16), (128, 64), (64, 128)], 8192, timer, min_speedup=1.1)
    assert calls == [(128, 64), (64, 16), (64, 128)]
    assert {s: t.convert for s, t in plan.items()} == {(128, 64): True, (64, 16): False, (64, 128): True}
    assert plan[(128, 64)].speedup == pytest.approx(1 / 0.6)


def test_on_cpu_every_layer_keeps_dense_storage_with_its_reason():
    model = build_model("one_layer_supermask_transformer_tiny", *NM)
    r = ss.sparsify_(model, timer=lambda *a: pytest.fail("nothing to time on CPU"))
    assert r["plan"] == {} and r["modules"]
    assert all("CUDA device" in why for why in r["modules"].values())
    assert all(m._inference_weight is None for m in model.modules() if isinstance(m, MaskedLinear))


def _logits(model, src, prev):
    with torch.no_grad():
        return model(src, torch.full((src.shape[0],), src.shape[1]), prev)[0]


def test_converted_layers_take_the_sparse_path_and_give_the_same_outputs(monkeypatch):
    """With the hardware checks passed and a stand-in for torch's conversion (a copy tagged as converted),
    chosen layers answer from their inference weight, the rest stay dense, attention takes the projected path,
    and the outputs equal the dense model's."""
    torch.manual_seed(0)
    model = build_model("one_layer_supermask_transformer_tiny", *NM, "--encoder-ffn-embed-dim", "256",
                        "--decoder-ffn-embed-dim", "256").eval()
    src, prev = torch.randint(4, 40, (3, 9)), torch.randint(4, 30, (3, 6))
    src[0, :3] = model.encoder.padding_idx  # left padding, as fairseq batches it
    before = _logits(model, src, prev)
    monkeypatch.setattr(ss, "why_dense", lambda m, *a: None if getattr(m, "rule", None) == NMRule(n=2, m=4) else "no")
    used = []

    class Tagged(torch.Tensor):
        pass

    def to_sparse(w):
        assert ss.is_2_4(w)
        return w.clone().as_subclass(Tagged)

    real_linear = torch.nn.functional.linear

    def spy(x, w, *args):
        used.append(isinstance(w, Tagged))
        return real_linear(x, w.as_subclass(torch.Tensor) if isinstance(w, Tagged) else w, *args)

    def timer(shape, tokens):  # the FFN shapes pay, the 64x64 attention projections do not
        return ss.LayerTiming(shape, tokens, 1.0, 0.5 if 256 in shape else 2.0)

    r = ss.sparsify_(model, tokens=4096, timer=timer, to_sparse=to_sparse)
    status = r["modules"]
    assert status["encoder.layers.0.fc1"] == "sparse" and status["decoder.layers.1.fc2"] == "sparse"
    assert status["encoder.layers.0.self_attn.q_proj"].startswith("dense is faster at 4096 tokens")
    assert r["plan"]["256x64"]["convert"] and not r["plan"]["64x64"]["convert"]
    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    after = _logits(model, src, prev)
    assert any(used) and not all(used)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    # attention projections converted too: the projected (non-fused) attention path gives the same outputs
    monkeypatch.setattr(torch.nn.functional, "linear", real_linear)
    ss.densify_(model)
    r = ss.sparsify_(model, timer=lambda shape, n: ss.LayerTiming(shape, n, 1.0, 0.5), to_sparse=to_sparse)
    assert set(r["modules"].values()) == {"sparse"}
    from one_layer_lottery.supermask import SupermaskMultiheadAttention

    projected = []
    real = SupermaskMultiheadAttention._projected_forward
    monkeypatch.setattr(SupermaskMultiheadAttention, "_projected_forward",
                        lambda self, *a: projected.append(1) or real(self, *a))
    torch.testing.assert_close(_logits(model, src, prev), before, rtol=1e-5, atol=1e-5)
    # encoder and decoder self-attention; cross-attention (static keys) is fairseq's own path, calling the modules
    assert len(projected) == 2 + 2
    model.train()  # training again: back to the dense masked weights
    assert all(m._inference_weight is None for m in model.modules() if isinstance(m, MaskedLinear))


@pytest.mark.e2e
def test_gpu_benchmark_refuses_a_machine_without_sparse_tensor_cores():
    from conftest import ROOT

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the benchmark would run")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "sparse24.py")], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        ("sparse24: error: needs a CUDA GPU with a semi-structured sparse backend (sm80+; Hopper: cuSPARSELt); "
         "none is visible")]
