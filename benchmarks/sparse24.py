"""2:4 supermasks on sparse tensor cores (GPU only): speed of semi-structured storage against dense storage of the
same masked weights, in fp16, at the same batch.

    python benchmarks/sparse24.py [--shapes iwslt_de_en,wmt_en_de,iwslt_de_en_wide,wmt_en_de_wider] [--tokens 8192]
        [--rounds 5] [--min-speedup 1.05] [--json]

Per architecture: every distinct linear shape of the one-layer 2:4 model (fc1, fc2, attention projections:
median matmul time dense vs sparse), the FFN block (fc1, ReLU, fc2), the whole encoder forward, and beam-5
decoding of 32 sentences (tokens/s, whether the hypotheses are identical, and the bytes of masked-weight storage
dense vs sparse). The model converts only the layers whose measured speed-up reaches --min-speedup
(`semi_structured.sparsify_`; the plan is printed). Ratios are medians over --rounds interleaved repeats,
with their range. Needs a CUDA GPU of compute capability 8.0 or newer.
"""

import argparse
import json
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from common import DICT_SIZES, dictionary, median_range

from one_layer_lottery import semi_structured as ss
from one_layer_lottery.masks import NM


def cuda_ms(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def rounds_of(fn_dense, fn_sparse, rounds: int) -> dict:
    """Interleaved medians: speed-up = dense time / sparse time, per round."""
    ups = []
    for r in range(rounds):
        pair = (fn_dense, fn_sparse) if r % 2 == 0 else (fn_sparse, fn_dense)
        t = [cuda_ms(f) for f in pair]
        d, s = t if r % 2 == 0 else t[::-1]
        ups.append(d / s)
    return median_range(ups)


def build_24(shape: str):
    from fairseq import options
    from fairseq.models import ARCH_MODEL_REGISTRY

    n_src, n_tgt = next(v for k, v in DICT_SIZES.items() if shape.startswith(k))
    task = argparse.Namespace(source_dictionary=dictionary(n_src), target_dictionary=dictionary(n_tgt))
    arch = f"one_layer_supermask_transformer_{shape}"
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["x", "--task", "translation", "--arch", arch, "--mask-structure",
                                                "2:4", "--remaining-ratio", "0.5", "--user-dir",
                                                os.path.join(os.path.dirname(HERE), "one_layer_lottery")])
    return ARCH_MODEL_REGISTRY[arch].build_model(args, task), task


def weight_bytes(model) -> tuple[int, int]:
    """(bytes of the masked weights stored dense, bytes of what inference holds now) for the 2:4 linears."""
    from one_layer_lottery.supermask import MaskedLinear

    dense = now = 0
    for m in model.modules():
        if isinstance(m, MaskedLinear) and m.rule == NM(n=2, m=4):
            dense += m.scores.numel() * 2
            w = m._inference_weight
            if w is None:
                now += m.scores.numel() * 2
            else:
                now += sum(t.numel() * t.element_size() for t in (w.packed, w.meta) if t is not None)
    return dense, now


def one_shape(shape: str, a) -> dict:
    from fairseq.sequence_generator import SequenceGenerator

    torch.manual_seed(0)
    model, task = build_24(shape)
    model = model.half().cuda().eval()
    from one_layer_lottery.models.supermask_transformer import ARCHS

    _, dim, ffn, _ = ARCHS[shape]
    x = torch.randn(a.tokens, dim, device="cuda", dtype=torch.float16)
    out = {"shape": shape, "tokens": a.tokens, "linears": {}}
    for name, (o, i) in {"attention projection": (dim, dim), "fc1": (ffn, dim), "fc2": (dim, ffn)}.items():
        w = ss.random_2_4((o, i), torch.float16, "cuda")
        ws = ss.convert(w)
        xi = torch.randn(a.tokens, i, device="cuda", dtype=torch.float16)
        out["linears"][f"{name} {o}x{i}"] = rounds_of(lambda x=xi, w=w: torch.nn.functional.linear(x, w),
                                                      lambda x=xi, w=ws: torch.nn.functional.linear(x, w), a.rounds)
    w1, w2 = ss.random_2_4((ffn, dim), torch.float16, "cuda"), ss.random_2_4((dim, ffn), torch.float16, "cuda")
    s1, s2 = ss.convert(w1), ss.convert(w2)
    lin = torch.nn.functional.linear
    out["ffn_block"] = rounds_of(lambda: lin(torch.relu(lin(x, w1)), w2), lambda: lin(torch.relu(lin(x, s1)), s2),
                                 a.rounds)
    bsz = max(1, a.tokens // 64)
    src = torch.randint(4, len(task.source_dictionary), (bsz, 64), device="cuda")
    lengths = torch.full((bsz,), 64, device="cuda")
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_a=0, max_len_b=24, min_len=24)
    sample = {"net_input": {"src_tokens": src[:32, :24], "src_lengths": torch.full((min(32, bsz),), 24, device="cuda")}}

    def encode():
        with torch.no_grad():
            model.encoder(src, lengths)

    def decode():
        with torch.no_grad():
            return gen.generate([model], sample)

    dense_hyps = [h[0]["tokens"].tolist() for h in decode()]
    report = ss.sparsify_(model, tokens=a.tokens, min_speedup=a.min_speedup)
    out["plan"] = report["plan"]
    out["converted"] = sum(v == "sparse" for v in report["modules"].values())
    out["kept_dense"] = sorted({v for v in report["modules"].values() if v != "sparse"})
    sparse_state = {m: m._inference_weight for m in model.modules() if hasattr(m, "_inference_weight")}
    sparse_hyps = [h[0]["tokens"].tolist() for h in decode()]
    out["identical_hypotheses"] = dense_hyps == sparse_hyps
    out["weight_bytes_dense"], out["weight_bytes_sparse"] = weight_bytes(model)

    def with_storage(sparse: bool):
        def run(fn):
            def go():
                for m, w in sparse_state.items():
                    m._inference_weight = w if sparse else None
                return fn()
            return go
        return run

    out["encoder_forward"] = rounds_of(with_storage(False)(encode), with_storage(True)(encode), a.rounds)
    ntok = sum(len(h) for h in dense_hyps)

    def tok_s(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return ntok / (start.elapsed_time(end) / 1000)

    ratios = []
    for r in range(a.rounds):
        d, s = tok_s(with_storage(False)(decode)), tok_s(with_storage(True)(decode))
        ratios.append(s / d)
    out["decoding_tok_s_ratio"] = median_range(ratios)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="iwslt_de_en,wmt_en_de,iwslt_de_en_wide,wmt_en_de_wider")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-speedup", type=float, default=1.05)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    kind = ss.device_backend(torch.device("cuda")) if torch.cuda.is_available() else None
    if kind is None:
        print("sparse24: error: needs a CUDA GPU with a semi-structured sparse backend (sm80+; Hopper: cuSPARSELt); "
              "none is visible", file=sys.stderr)
        return 1
    results = []
    for shape in [s for s in a.shapes.split(",") if s]:
        r = one_shape(shape, a)
        results.append(r)
        print(f"{shape} ({a.tokens} tokens, fp16, {kind}):")
        for name, v in r["linears"].items():
            print(f"  {name:>28}: sparse speed-up {v['median']:.2f} [{v['min']:.2f}, {v['max']:.2f}]")
        for key in ("ffn_block", "encoder_forward", "decoding_tok_s_ratio"):
            v = r[key]
            print(f"  {key:>28}: {v['median']:.2f} [{v['min']:.2f}, {v['max']:.2f}]")
        print(f"  {'converted layers':>28}: {r['converted']} (dense: {'; '.join(r['kept_dense']) or 'none'})")
        print(f"  {'identical hypotheses':>28}: {r['identical_hypotheses']}; masked-weight bytes "
              f"{r['weight_bytes_dense']:,} dense -> {r['weight_bytes_sparse']:,}")
    if a.json:
        print(json.dumps({"device": torch.cuda.get_device_name(), "backend": kind, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
