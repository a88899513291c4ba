"""Training step time, peak memory and generation speed: one-layer supermask vs fairseq's dense Transformer.

Same shape, same batch, same process settings; the baseline is measured in the same run. A third
variant re-implements the published selection rule (a full sort of |scores| on every forward) to
show what threshold selection saves.

    python benchmarks/speed.py [--shape iwslt_de_en] [--tokens 4096] [--rounds 5] [--json]
    python benchmarks/speed.py --sweep [--shapes tiny,iwslt_de_en,...] [--tokens 1024,4096] [--out work/speed]
    python benchmarks/speed.py --device cuda --dtype fp16 [--tokens 16384]    # on a GPU

A shared machine is noisy: every variant is built in one process and timed in alternating order (dense,
supermask, sort; then the reverse), --rounds times; a ratio is taken within each round and the median of
those paired ratios is reported with its range. Decoding (beam 5) is measured the same way. Peak memory comes
from a process of its own per variant (resident set on CPU, torch's peak allocation on CUDA). --sweep does
this for every architecture of the README's table and every --tokens, and writes speed_sweep.csv and
speed_sweep.png (ratios against model size) to --out.

With --dtype fp16/bf16 the model is cast as fairseq's --fp16/--bf16 cast it (model.half()); both
variants then train with the same plain Adam on their trainable tensors.
"""

import argparse
import contextlib
import csv
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

from common import DICT_SIZES, dictionary, median_range

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def shape_flags(shape: str) -> list[str]:
    """The shape of our architecture `shape` as explicit flags, so that dense and supermask models match exactly."""
    from one_layer_lottery.models.supermask_transformer import ARCHS

    layers, dim, ffn, heads = ARCHS[shape]
    return [x for side in ("encoder", "decoder") for x in (
        f"--{side}-layers", str(layers), f"--{side}-embed-dim", str(dim), f"--{side}-ffn-embed-dim", str(ffn),
        f"--{side}-attention-heads", str(heads))]


def build(variant: str, shape: str):
    from fairseq import options

    import one_layer_lottery  # noqa: F401

    n_src, n_tgt = next(v for k, v in DICT_SIZES.items() if shape.startswith(k))
    task = argparse.Namespace(source_dictionary=dictionary(n_src), target_dictionary=dictionary(n_tgt))
    arch = "transformer" if variant == "dense" else f"one_layer_supermask_transformer_{shape}"
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["x", "--task", "translation", "--arch", arch, "--dropout", "0.1",
                                                *shape_flags(shape), "--user-dir",
                                                os.path.join(os.path.dirname(HERE), "one_layer_lottery")])
    from fairseq.models import ARCH_MODEL_REGISTRY

    model = ARCH_MODEL_REGISTRY[arch].build_model(args, task)
    if variant == "sort":
        from one_layer_lottery import supermask

        for m in model.modules():  # one sort per module, as published (no batched selection)
            if isinstance(m, supermask.SupermaskModule):
                m._group = None
    return model, task


def sort_mask(scores, k):
    """The published rule: a full sort of |scores|."""
    from one_layer_lottery import masks

    a = scores.detach().abs().flatten()
    j = masks.n_pruned(a.numel(), k)
    out = torch.ones_like(a, dtype=torch.bool)
    out[a.sort().indices[:j]] = False
    return out.view_as(scores)


@contextlib.contextmanager
def selection(variant: str):
    """While a `sort` variant runs, masks are selected by the published rule."""
    from one_layer_lottery import masks

    real = masks.topk_mask
    if variant == "sort":
        masks.topk_mask = sort_mask
    try:
        yield
    finally:
        masks.topk_mask = real


def batch(task, tokens: int, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    length = 32
    bsz = max(1, tokens // length)
    nsrc, ntgt = len(task.source_dictionary), len(task.target_dictionary)
    src = torch.randint(4, nsrc, (bsz, length), generator=g)
    tgt = torch.randint(4, ntgt, (bsz, length), generator=g)
    prev = torch.cat([torch.full((bsz, 1), 2), tgt[:, :-1]], 1)
    return tuple(t.to(device) for t in (src, torch.full((bsz,), length), prev, tgt))


def make_step(variant: str, shape: str, tokens: int, device: str, dtype: str, built=None):
    """(model, a function running one training step: forward, label-smoothed CE, backward, Adam)."""
    model, task = built or build(variant, shape)
    model.to(device=device, dtype=DTYPES[dtype]).train()
    params = [p for p in model.parameters() if p.requires_grad]
    # eps 1e-8 is 0 in fp16: the low-precision runs use fairseq's fp16-safe magnitude
    opt = torch.optim.Adam(params, lr=1e-4, eps=1e-8 if dtype == "fp32" else 1e-4)
    src, lengths, prev, tgt = batch(task, tokens, device=device)

    def step():
        with selection(variant):
            out, _ = model(src, lengths, prev)
            loss = torch.nn.functional.cross_entropy(out.view(-1, out.size(-1)), tgt.view(-1), label_smoothing=0.1)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    step.trainable, step.target_tokens = sum(p.numel() for p in params), int(tgt.numel())
    return model, step


def memory_run(variant: str, shape: str, tokens: int, device: str, dtype: str) -> dict:
    """Peak memory of two training steps of one variant, alone in this process."""
    import fairseq.models.transformer  # noqa: F401  (imports are not the model's memory)

    import one_layer_lottery  # noqa: F401

    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, step = make_step(variant, shape, tokens, device, dtype)
    step()
    step()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024)
    return {"peak_mb": peak, "trainable": step.trainable}


def timed(fn, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved_run(variants: list[str], shape: str, tokens_list: list[int], rounds: int, sentences: int,
                    length: int, device: str, dtype: str) -> dict:
    """Every variant in this one process, timed in alternating order, `rounds` times, per batch size; then
    beam-5 decoding the same way. Ratios are taken within each round (paired), so slow spells of a shared
    machine hit both sides of a ratio alike."""
    torch.manual_seed(0)
    built = {v: build(v, shape) for v in variants}
    dense_params = sum(p.numel() for p in built["dense"][0].parameters())
    out = {"shape": shape, "dense_params": dense_params, "train": {}, "decode": {}}
    for tokens in tokens_list:
        steps = {v: make_step(v, shape, tokens, device, dtype, built[v])[1] for v in variants}
        for v in variants:  # warm-up: allocations, optimizer state, kernels
            steps[v]()
        times = {v: [] for v in variants}
        for r in range(rounds):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                times[v].append(timed(steps[v], device))
        share = {v: mask_time_share(steps[v], device) for v in variants if v != "dense"}
        out["train"][tokens] = {"times": times, "mask_share": share,
                                "target_tokens": steps["dense"].target_tokens}
        print(f"[{shape}] {tokens} tokens: " + ", ".join(f"{v} {statistics.median(t):.3f} s"
                                                        for v, t in times.items()), file=sys.stderr, flush=True)
    from fairseq.sequence_generator import SequenceGenerator

    src, lengths, _, _ = batch(built["dense"][1], sentences * 24, device=device)
    src, lengths = src[:sentences, :24], torch.full((sentences,), 24, device=device)
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths}}
    decode = {v: [] for v in ("dense", "supermask") if v in variants}
    gens = {}
    for v in decode:
        model = built[v][0].eval()
        gens[v] = SequenceGenerator([model], built[v][1].target_dictionary, beam_size=5, max_len_a=0,
                                    max_len_b=length, min_len=length)
    with torch.no_grad():
        for v in decode:  # warm-up
            gens[v].generate([built[v][0]], {"net_input": {"src_tokens": src[:2], "src_lengths": lengths[:2]}})
        for r in range(rounds):
            for v in (list(decode) if r % 2 == 0 else list(decode)[::-1]):
                result = []
                seconds = timed(lambda v=v, out=result: out.append(gens[v].generate([built[v][0]], sample)), device)
                ntok = sum(len(h[0]["tokens"]) for h in result[0])
                decode[v].append(ntok / seconds)
    out["decode"] = decode
    return out


def mask_time_share(step, device: str) -> float:
    """Fraction of one training step spent selecting masks (timed around every selection)."""
    from one_layer_lottery import masks, supermask

    spent = [0.0]
    originals = {(module, name): getattr(module, name)
                 for module, name in ((masks, "topk_mask"), (supermask, "select_group_masks"))}

    def timed_selection(fn):
        def run(*args):
            sync(device)
            t = time.perf_counter()
            result = fn(*args)
            sync(device)
            spent[0] += time.perf_counter() - t
            return result
        return run

    for (module, name), fn in originals.items():
        setattr(module, name, timed_selection(fn))
    try:
        total = timed(step, device)
    finally:
        for (module, name), fn in originals.items():
            setattr(module, name, fn)
    return spent[0] / total


def in_subprocess(args: list[str]) -> dict:
    """One measurement in a fresh process (peak memory is then that process's own)."""
    r = subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-3000:])
        raise SystemExit(f"benchmark subprocess {' '.join(map(str, args[:3]))} failed")
    sys.stderr.write("".join(line + "\n" for line in r.stderr.splitlines() if line.startswith("[")))
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarize(run: dict, variant: str = "supermask") -> list[dict]:
    """One row per batch size: medians and ranges of the paired (same-round) ratios to dense."""
    rows = []
    for tokens, t in run["train"].items():
        ratios = [s / d for s, d in zip(t["times"][variant], t["times"]["dense"])]
        dec = run["decode"]
        dratios = [s / d for s, d in zip(dec.get(variant, []), dec.get("dense", []))]
        rows.append({"shape": run["shape"], "dense_params": run["dense_params"], "tokens": int(tokens),
                     "target_tokens": t["target_tokens"], "rounds": len(ratios),
                     "step_s_dense": median_range(t["times"]["dense"], 4),
                     "step_s_supermask": median_range(t["times"][variant], 4),
                     "step_ratio": median_range(ratios), "mask_share": round(t["mask_share"][variant], 3),
                     "decode_ratio": median_range(dratios) if dratios else None})
    return rows


def mark(value: float, op: str, target: float) -> str:
    ok = value <= target if op == "<=" else value >= target
    return f"(target {op} {target}: {'met' if ok else 'NOT met'})"


LARGE_SHAPES = ("iwslt_de_en_wide", "iwslt_de_en_deep", "wmt_en_de_wider", "wmt_en_de_deeper")
SWEEP_SHAPES = ("tiny", "iwslt_de_en", "iwslt_de_en_wide", "iwslt_de_en_deep", "wmt_en_de", "wmt_en_de_wider",
                "wmt_en_de_deeper")


def single(a) -> dict:
    variants = ["dense", "supermask", "sort"]
    common = ["--shape", a.shape, "--device", a.device, "--dtype", a.dtype]
    run = in_subprocess(["--_interleave", ",".join(variants), "--tokens", a.tokens, "--rounds", a.rounds,
                         "--sentences", a.sentences, "--length", a.length, *common])
    mem = {v: in_subprocess(["--_memory", v, "--tokens", a.tokens, *common]) for v in ("dense", "supermask")}
    row, sort = summarize(run)[0], summarize(run, "sort")[0]
    d = run["decode"]
    return {
        "shape": a.shape, "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "dtype": a.dtype,
        "tokens_per_batch": row["target_tokens"], "rounds": a.rounds, "threads": torch.get_num_threads(),
        "step_s_dense": row["step_s_dense"], "step_s_supermask": row["step_s_supermask"],
        "step_s_sort_baseline": sort["step_s_supermask"],
        "step_ratio_supermask_dense": row["step_ratio"], "step_ratio_sort_dense": sort["step_ratio"],
        "peak_mem_mb_dense": round(mem["dense"]["peak_mb"], 1), "peak_mem_mb_supermask": round(mem["supermask"]["peak_mb"], 1),
        "peak_mem_ratio_supermask_dense": round(mem["supermask"]["peak_mb"] / mem["dense"]["peak_mb"], 3),
        "mask_selection_share_of_step": row["mask_share"], "mask_selection_share_sort": sort["mask_share"],
        "generate_tok_s_dense": median_range(d["dense"], 1), "generate_tok_s_supermask": median_range(d["supermask"], 1),
        "generate_ratio_supermask_dense": row["decode_ratio"],
    }


def sweep(a) -> dict:
    """Every architecture of the README's table at every --sweep-tokens: ratios against model size."""
    rows, t0 = [], time.time()
    for shape in a.shapes:
        common = ["--shape", shape, "--device", a.device, "--dtype", a.dtype]
        # the wide and deep shapes at the smallest batch only, unless --all-tokens (a CPU budget)
        tokens = a.tokens_list if a.all_tokens or shape not in LARGE_SHAPES else a.tokens_list[:1]
        run = in_subprocess(["--_interleave", "dense,supermask", "--tokens", ",".join(map(str, tokens)),
                             "--rounds", a.rounds, "--sentences", a.sentences, "--length", a.length, *common])
        mem = {v: in_subprocess(["--_memory", v, "--tokens", max(tokens), *common]) for v in ("dense", "supermask")}
        for row in summarize(run):
            row["peak_mem_ratio"] = round(mem["supermask"]["peak_mb"] / mem["dense"]["peak_mb"], 3)
            row["peak_mem_tokens"] = max(tokens)
            rows.append(row)
            print(f"[sweep] {shape:>18} {row['tokens']:>6} tokens: step ratio {row['step_ratio']['median']:.3f} "
                  f"[{row['step_ratio']['min']:.3f}, {row['step_ratio']['max']:.3f}], decoding "
                  f"{row['decode_ratio']['median']:.3f}, memory {row['peak_mem_ratio']:.3f} "
                  f"({int(time.time() - t0)} s)", file=sys.stderr, flush=True)
    os.makedirs(a.out, exist_ok=True)
    csv_path, png = os.path.join(a.out, "speed_sweep.csv"), os.path.join(a.out, "speed_sweep.png")
    flat = [{**{k: v for k, v in r.items() if not isinstance(v, dict) and v is not None},
             **{f"{k}_{s}": v[s] for k, v in r.items() if isinstance(v, dict) for s in ("median", "min", "max")}}
            for r in rows]
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    os.replace(csv_path + ".tmp", csv_path)
    plot_sweep(rows, png)
    return {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "dtype": a.dtype,
            "rounds": a.rounds, "seconds": int(time.time() - t0), "csv": csv_path, "png": png, "rows": rows}


def plot_sweep(rows: list[dict], png: str) -> None:
    from one_layer_lottery.io import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for tokens in sorted({r["tokens"] for r in rows}):
        pts = sorted((r["dense_params"], r) for r in rows if r["tokens"] == tokens)
        x = [p[0] / 1e6 for p in pts]
        med = [p[1]["step_ratio"]["median"] for p in pts]
        err = [[m - p[1]["step_ratio"]["min"] for m, p in zip(med, pts)],
               [p[1]["step_ratio"]["max"] - m for m, p in zip(med, pts)]]
        axes[0].errorbar(x, med, yerr=err, marker="o", capsize=3, label=f"{tokens} tokens/batch")
    one = sorted(({r["shape"]: r for r in rows}).values(), key=lambda r: r["dense_params"])
    x = [r["dense_params"] / 1e6 for r in one]
    med = [r["decode_ratio"]["median"] for r in one]
    axes[1].errorbar(x, med, yerr=[[m - r["decode_ratio"]["min"] for m, r in zip(med, one)],
                                   [r["decode_ratio"]["max"] - m for m, r in zip(med, one)]], marker="o", capsize=3)
    axes[2].plot(x, [r["peak_mem_ratio"] for r in one], marker="o")
    for r in one:
        axes[2].annotate(r["shape"], (r["dense_params"] / 1e6, r["peak_mem_ratio"]), fontsize=7, rotation=30)
    for ax, title, target in ((axes[0], "training step time, supermask / dense", 1.10),
                              (axes[1], "beam-5 decoding tokens/s, supermask / dense", 0.95),
                              (axes[2], "peak training memory, supermask / dense", 1.30)):
        ax.axhline(target, color="r", ls=":", lw=1)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("dense parameters (millions)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(png + ".tmp.png", png)


def main(argv=None) -> None:
    from one_layer_lottery.models.supermask_transformer import ARCHS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="iwslt_de_en", choices=sorted(ARCHS))
    p.add_argument("--tokens", default=None,
                   help="target tokens per training batch (default 4096; --sweep: comma-separated, default 1024,4096)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved repeats of every measurement")
    p.add_argument("--sentences", type=int, default=32, help="sentences to translate (beam 5)")
    p.add_argument("--length", type=int, default=24, help="tokens generated per sentence")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                   help="model precision, as fairseq's --fp16/--bf16 cast it (fp16/bf16 need --device cuda)")
    p.add_argument("--sweep", action="store_true", help="every architecture (--shapes) at every --tokens")
    p.add_argument("--shapes", default=",".join(SWEEP_SHAPES), help="the sweep's architectures")
    p.add_argument("--all-tokens", action="store_true",
                   help="the wide and deep shapes at every --tokens too (default: at the first only)")
    p.add_argument("--out", default="work/speed", help="where the sweep writes its CSV and PNG")
    p.add_argument("--json", action="store_true")
    p.add_argument("--_interleave", help=argparse.SUPPRESS)
    p.add_argument("--_memory", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    if a.dtype != "fp32" and a.device == "cpu":
        p.error(f"--dtype {a.dtype}: low precision is measured on --device cuda only")
    a.tokens = a.tokens or ("1024,4096" if a.sweep else "4096")
    try:
        a.tokens_list = [int(t) for t in str(a.tokens).split(",")]
    except ValueError:
        p.error(f"--tokens {a.tokens!r}: expected comma-separated positive integers")
    if any(t < 32 for t in a.tokens_list) or (len(a.tokens_list) > 1 and not (a.sweep or a._interleave)):
        p.error(f"--tokens {a.tokens!r}: at least 32 tokens a batch, several only with --sweep")
    if a.rounds < 1:
        p.error(f"--rounds {a.rounds} must be at least 1")
    a.shapes = [s for s in a.shapes.split(",") if s]
    bad = [s for s in a.shapes if s not in ARCHS]
    if bad:
        p.error(f"--shapes: unknown {bad}; allowed: {', '.join(ARCHS)}")
    torch.set_num_threads(os.cpu_count() or 1)
    if a._interleave:
        print(json.dumps(interleaved_run(a._interleave.split(","), a.shape, a.tokens_list, a.rounds, a.sentences,
                                         a.length, a.device, a.dtype)))
        return
    if a._memory:
        print(json.dumps(memory_run(a._memory, a.shape, a.tokens_list[0], a.device, a.dtype)))
        return
    if a.sweep:
        r = sweep(a)
        print(f"{'shape':>18} {'params':>8} {'tokens':>6} {'step ratio [range]':>24} {'decoding [range]':>24} "
              f"{'memory':>7}")
        for row in r["rows"]:
            s, d = row["step_ratio"], row["decode_ratio"]
            print(f"{row['shape']:>18} {row['dense_params'] / 1e6:>7.1f}M {row['tokens']:>6} "
                  f"{s['median']:>8.3f} [{s['min']:.3f}, {s['max']:.3f}] {d['median']:>8.3f} "
                  f"[{d['min']:.3f}, {d['max']:.3f}] {row['peak_mem_ratio']:>7.3f}")
        worst = max(row["step_ratio"]["median"] for row in r["rows"])
        slowest = min(row["decode_ratio"]["median"] for row in r["rows"])
        print(f"worst step median {worst:.3f} {mark(worst, '<=', 1.10)}; slowest decoding median {slowest:.3f} "
              f"{mark(slowest, '>=', 0.95)}; {r['seconds']} s -> {r['csv']}, {r['png']}")
        if a.json:
            print(json.dumps(r))
        return
    fig = single(a)
    targets = {"step_ratio_supermask_dense": ("<=", 1.10), "peak_mem_ratio_supermask_dense": ("<=", 1.30),
               "generate_ratio_supermask_dense": (">=", 0.95)}
    for k, v in fig.items():
        shown = f"{v['median']} [{v['min']}, {v['max']}]" if isinstance(v, dict) else v
        t = targets.get(k)
        value = v["median"] if isinstance(v, dict) else v
        print(f"{k:>34}: {shown}" + (f"  {mark(value, *t)}" if t else ""))
    if a.json:
        print(json.dumps(fig))


if __name__ == "__main__":
    main()
