"""Training step time, peak memory and generation speed: one-layer supermask vs fairseq's dense Transformer.

Same shape, same batch, same process settings; the baseline is measured in the same run. A third
variant re-implements the published selection rule (a full sort of |scores| on every forward) to
show what threshold selection saves.

    python benchmarks/speed.py [--shape iwslt_de_en] [--tokens 4096] [--steps 4] [--json]
    python benchmarks/speed.py --device cuda --dtype fp16 [--tokens 16384]    # on a GPU

With --dtype fp16/bf16 the model is cast as fairseq's --fp16/--bf16 cast it (model.half()); both
variants then train with the same plain Adam on their trainable tensors. Peak memory is the
process's resident set on CPU and torch's peak allocation on CUDA.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
DICT_SIZES = {"iwslt_de_en": (8848, 6632), "wmt_en_de": (40000, 40000), "tiny": (2000, 2000)}


def dictionary(n):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(n - d.nspecial):
        d.add_symbol(f"w{i}")
    return d


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(variant: str, shape: str):
    from fairseq import options

    import one_layer_lottery  # noqa: F401

    n_src, n_tgt = DICT_SIZES.get(shape, DICT_SIZES["iwslt_de_en"])
    task = argparse.Namespace(source_dictionary=dictionary(n_src), target_dictionary=dictionary(n_tgt))
    arch = f"transformer_{shape}" if variant == "dense" else f"one_layer_supermask_transformer_{shape}"
    if variant == "dense" and shape == "tiny":
        arch = "transformer_tiny"
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["x", "--task", "translation", "--arch", arch, "--dropout", "0.1",
                                                "--user-dir", os.path.join(os.path.dirname(HERE), "one_layer_lottery")])
    from fairseq.models import ARCH_MODEL_REGISTRY

    model = ARCH_MODEL_REGISTRY[arch].build_model(args, task)
    if variant == "sort":
        from one_layer_lottery import supermask

        def sort_mask(scores, k):  # the published rule: sort every forward
            a = scores.detach().abs().flatten()
            j = supermask.n_pruned(a.numel(), k)
            out = torch.ones_like(a, dtype=torch.bool)
            out[a.sort().indices[:j]] = False
            return out.view_as(scores)

        supermask.topk_mask = sort_mask
        for m in model.modules():  # one sort per module, as published (no batched selection)
            if isinstance(m, supermask.SupermaskModule):
                m._group = None
    return model, task


def batch(task, tokens: int, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    length = 32
    bsz = max(1, tokens // length)
    nsrc, ntgt = len(task.source_dictionary), len(task.target_dictionary)
    src = torch.randint(4, nsrc, (bsz, length), generator=g)
    tgt = torch.randint(4, ntgt, (bsz, length), generator=g)
    prev = torch.cat([torch.full((bsz, 1), 2), tgt[:, :-1]], 1)
    return tuple(t.to(device) for t in (src, torch.full((bsz,), length), prev, tgt))


def mask_time_share(model, step, device: str) -> float:
    """Fraction of a training step spent selecting masks (timed around every selection)."""
    from one_layer_lottery import supermask

    spent = [0.0]
    originals = {name: getattr(supermask, name) for name in ("topk_mask", "select_group_masks")}

    def timed(fn):
        def run(*args):
            sync(device)
            t = time.perf_counter()
            out = fn(*args)
            sync(device)
            spent[0] += time.perf_counter() - t
            return out
        return run

    for name, fn in originals.items():
        setattr(supermask, name, timed(fn))
    sync(device)
    t = time.perf_counter()
    step()
    sync(device)
    total = time.perf_counter() - t
    for name, fn in originals.items():
        setattr(supermask, name, fn)
    return spent[0] / total


def train_run(variant: str, shape: str, tokens: int, steps: int, device: str, dtype: str) -> dict:
    import fairseq.models.transformer  # noqa: F401  (imports are not the model's memory)

    import one_layer_lottery  # noqa: F401

    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model, task = build(variant, shape)
    model.to(device=device, dtype=DTYPES[dtype]).train()
    params = [p for p in model.parameters() if p.requires_grad]
    # eps 1e-8 is 0 in fp16: the low-precision runs use fairseq's fp16-safe magnitude
    opt = torch.optim.Adam(params, lr=1e-4, eps=1e-8 if dtype == "fp32" else 1e-4)
    src, lengths, prev, tgt = batch(task, tokens, device=device)

    def step():
        out, _ = model(src, lengths, prev)
        loss = torch.nn.functional.cross_entropy(out.view(-1, out.size(-1)), tgt.view(-1), label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, optimizer state, kernels)
    step()
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024)
    out = {"step_s": statistics.median(times), "peak_rss_mb": peak,
           "trainable": sum(p.numel() for p in params), "target_tokens": int(tgt.numel())}
    if variant != "dense":
        out["mask_share"] = mask_time_share(model, step, device)
    return out


def generate_run(variant: str, shape: str, sentences: int, length: int, device: str, dtype: str) -> dict:
    from fairseq.sequence_generator import SequenceGenerator

    torch.manual_seed(0)
    model, task = build(variant, shape)
    model.to(device=device, dtype=DTYPES[dtype]).eval()
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_a=0, max_len_b=length,
                            min_len=length)
    src, lengths, _, _ = batch(task, sentences * 24, device=device)
    src, lengths = src[:sentences, :24], torch.full((sentences,), 24, device=device)
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths}}
    with torch.no_grad():
        gen.generate([model], {"net_input": {"src_tokens": src[:2], "src_lengths": lengths[:2]}})  # warm-up
        sync(device)
        t = time.perf_counter()
        hyps = gen.generate([model], sample)
        sync(device)
        dt = time.perf_counter() - t
    ntok = sum(len(h[0]["tokens"]) for h in hyps)
    return {"tokens_per_s": ntok / dt, "tokens": ntok, "seconds": dt}


def in_subprocess(kind: str, variant: str, a) -> dict:
    """Each measurement in a fresh process, so peak memory is that variant's own."""
    cmd = [sys.executable, __file__, "--_one", kind, variant, "--shape", a.shape, "--tokens", str(a.tokens),
           "--steps", str(a.steps), "--sentences", str(a.sentences), "--length", str(a.length),
           "--device", a.device, "--dtype", a.dtype]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-3000:])
        raise SystemExit(f"benchmark subprocess {kind}/{variant} failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="iwslt_de_en", choices=sorted(DICT_SIZES))
    p.add_argument("--tokens", type=int, default=4096, help="target tokens per training batch")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--sentences", type=int, default=32, help="sentences to translate (beam 5)")
    p.add_argument("--length", type=int, default=24, help="tokens generated per sentence")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                   help="model precision, as fairseq's --fp16/--bf16 cast it (fp16/bf16 need --device cuda)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    if a.dtype != "fp32" and a.device == "cpu":
        p.error(f"--dtype {a.dtype}: low precision is measured on --device cuda only")
    torch.set_num_threads(os.cpu_count() or 1)
    if a._one:
        kind, variant = a._one
        r = (train_run(variant, a.shape, a.tokens, a.steps, a.device, a.dtype) if kind == "train"
             else generate_run(variant, a.shape, a.sentences, a.length, a.device, a.dtype))
        print(json.dumps(r))
        return
    res = {}
    for variant in ("dense", "supermask", "sort"):
        res[f"train_{variant}"] = in_subprocess("train", variant, a)
        print(f"[train] {variant:>9}: {res[f'train_{variant}']}", file=sys.stderr, flush=True)
    for variant in ("dense", "supermask"):
        res[f"generate_{variant}"] = in_subprocess("generate", variant, a)
        print(f"[generate] {variant:>9}: {res[f'generate_{variant}']}", file=sys.stderr, flush=True)
    d, s, srt = res["train_dense"], res["train_supermask"], res["train_sort"]
    fig = {
        "shape": a.shape, "device": (torch.cuda.get_device_name() if a.device == "cuda" else "cpu"),
        "dtype": a.dtype, "tokens_per_batch": d["target_tokens"], "threads": torch.get_num_threads(),
        "step_s_dense": round(d["step_s"], 4), "step_s_supermask": round(s["step_s"], 4),
        "step_s_sort_baseline": round(srt["step_s"], 4),
        "step_ratio_supermask_dense": round(s["step_s"] / d["step_s"], 3),
        "step_ratio_sort_dense": round(srt["step_s"] / d["step_s"], 3),
        "peak_mem_mb_dense": round(d["peak_rss_mb"], 1), "peak_mem_mb_supermask": round(s["peak_rss_mb"], 1),
        "peak_mem_ratio_supermask_dense": round(s["peak_rss_mb"] / d["peak_rss_mb"], 3),
        "mask_selection_share_of_step": round(s["mask_share"], 3),
        "mask_selection_share_sort": round(srt["mask_share"], 3),
        "generate_tok_s_dense": round(res["generate_dense"]["tokens_per_s"], 1),
        "generate_tok_s_supermask": round(res["generate_supermask"]["tokens_per_s"], 1),
        "generate_ratio_supermask_dense": round(res["generate_supermask"]["tokens_per_s"]
                                                / res["generate_dense"]["tokens_per_s"], 3),
    }
    targets = {"step_ratio_supermask_dense": ("<=", 1.10), "peak_mem_ratio_supermask_dense": ("<=", 1.30),
               "generate_ratio_supermask_dense": (">=", 0.95)}
    for k, v in fig.items():
        t = targets.get(k)
        mark = "" if t is None else (f"  (target {t[0]} {t[1]}: "
                                     f"{'met' if (v <= t[1] if t[0] == '<=' else v >= t[1]) else 'NOT met'})")
        print(f"{k:>34}: {v}{mark}")
    if a.json:
        print(json.dumps(fig))


if __name__ == "__main__":
    main()
