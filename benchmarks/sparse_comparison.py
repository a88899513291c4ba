"""Random-weight supermasks beside trained-weight pruning, at the same fractions of weights kept.

    python benchmarks/sparse_comparison.py RAW_DIR [--kept 0.5,0.3,0.1] [--updates 500] [--rewind-update 50]
        [--methods one_layer,standard,magnitude,ticket[,ticket_sign]] [--jobs 2] [--work work/sparse]
        [--dim 128 --ffn 256 --layers 3 ...: the shape options every training benchmark shares]

Trains with one shape and one update budget (stock fairseq-train runs, benchmarks/common.py's helpers):
  dense        fairseq's dense Transformer, saving its weights at updates 0 and --rewind-update
  one_layer    the one-layer supermask model (masked random embeddings) at k = the kept fraction
  standard     the standard supermask model (a random layer per depth) at the same k
  magnitude    the dense Transformer with gradual magnitude pruning (--remaining-ratio k, a cubic ramp from
               updates/5 to 3*updates/5), every tensor at that sparsity
  magnitude_global  the same with one threshold over all tensors (--prune-scope global)
  ticket       stabilized lottery ticket (Brix et al. 2020): the dense model's final magnitude mask over its
               weights at --rewind-update, retrained for the same budget with the mask fixed
  ticket_sign  the same with the rewind point's signs and one magnitude per tensor
Scores every final checkpoint on the test split (fairseq-generate, beam 5, detokenized sacreBLEU) and counts the
bytes to store it the same way for every method: a 1-bit position mask per maskable weight plus fp16 values
of what must be stored (a pruned model's kept weights, biases and LayerNorms; nothing for a supermask's
random weights, which regenerate from a seed). Then `one-layer-lottery analyze` compares each sparse model
with the dense one, layer by layer, on the validation split. Writes WORK/sparse.csv, WORK/sparse.png (BLEU
against the fraction kept and against bytes; dense as a line), WORK/analysis.json and WORK/analysis.png,
prints a table and a last-line JSON. Finished runs are reused when the command is run again.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import DENSE_ARGS as DENSE
from common import (
    SUPERMASK_ARGS,
    add_run_args,
    check_run_args,
    checkpoint_bytes,
    command,
    prepare_once,
    run_guarded,
    save_plot,
    score_checkpoints,
    train,
)

from one_layer_lottery.errors import ConfigError
from one_layer_lottery.io import atomic_path

DENSE_ARGS = [("pruned_transformer" if x == "transformer" else x) for x in DENSE]  # the flags of pruning
METHODS = {
    "one_layer": "one-layer supermask (random weights)",
    "standard": "standard supermask (random weights)",
    "magnitude": "magnitude pruning (trained)",
    "magnitude_global": "magnitude pruning, one global threshold (trained)",
    "ticket": "stabilized lottery ticket (trained)",
    "ticket_sign": "lottery ticket, rewind signs only (trained)",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, work="work/sparse", updates=500, eval_every=500)  # 13 runs in about 90 minutes on 2 cores
    p.set_defaults(jobs=2)
    p.add_argument("--kept", default="0.5,0.3,0.1", help="fractions of the weights kept (k)")
    p.add_argument("--methods", default="one_layer,standard,magnitude,ticket",
                   help=f"any of {', '.join(METHODS)}")
    p.add_argument("--rewind-update", type=int, default=50)
    p.add_argument("--analysis-sentences", type=int, default=500)
    a = p.parse_args(argv)
    try:
        a.kept_list = [float(v) for v in a.kept.split(",")]
    except ValueError:
        p.error(f"--kept {a.kept!r}: expected comma-separated fractions in (0, 1)")
    if not a.kept_list or any(not 0 < k < 1 for k in a.kept_list):
        p.error(f"--kept {a.kept!r}: every fraction kept must lie in (0, 1)")
    a.method_list = [m for m in a.methods.split(",") if m]
    unknown = [m for m in a.method_list if m not in METHODS]
    if unknown or not a.method_list:
        p.error(f"--methods: unknown {unknown}; allowed: {', '.join(METHODS)}")
    check_run_args(p, a)
    if not 0 <= a.rewind_update < a.updates:
        p.error(f"--rewind-update {a.rewind_update} must lie in [0, --updates {a.updates})")
    a.eval_every = a.updates  # the comparison scores each run's last checkpoint only
    return a


def run_name(method: str, k: float) -> str:
    return f"{method}_{k:g}"


def flags(a, method: str, k: float) -> list[str]:
    """fairseq-train arguments of one run (on top of the shape and common arguments, common.train)."""
    if method == "one_layer":
        return [*SUPERMASK_ARGS, "--remaining-ratio", str(k)]
    if method == "standard":
        return [*SUPERMASK_ARGS, "--arch", "supermask_transformer_tiny", "--remaining-ratio", str(k)]
    if method.startswith("magnitude"):
        return [*DENSE_ARGS, "--remaining-ratio", str(k), "--prune-start-update", str(a.updates // 5),
                "--prune-end-update", str(3 * a.updates // 5)] + (["--prune-scope", "global"] if "global" in method
                                                                   else [])
    ticket = os.path.abspath(os.path.join(a.work, "tickets", f"{run_name(method, k)}.pt"))
    return [*DENSE_ARGS, "--restore-file", ticket, "--reset-optimizer", "--reset-lr-scheduler", "--reset-dataloader",
            "--reset-meters", "--remaining-ratio", str(k)]


def main(argv=None) -> int:
    return run_guarded("sparse_comparison", run, parse_args(argv))


def run(a) -> int:
    t0 = time.time()
    prepared = prepare_once(a)
    bin_dir = os.path.join(prepared, "bin")
    runs = {"dense": ("dense Transformer", [*DENSE_ARGS, "--save-weights-at-updates", f"0,{a.rewind_update}"])}
    for method in a.method_list:
        for k in a.kept_list:
            runs[run_name(method, k)] = (f"{METHODS[method]}, k={k:g}", flags(a, method, k))

    def one(name: str) -> dict:
        done = os.path.join(a.work, f"{name}.rows.json")
        if os.path.exists(done):
            with open(done, encoding="utf-8") as f:
                return json.load(f)
        if name.startswith("ticket"):
            dense_done.result()
            method, k = name.rsplit("_", 1)
            ticket = os.path.join(a.work, "tickets", f"{name}.pt")
            cmd = [command("one-layer-lottery"), "ticket", os.path.join(a.work, "dense"),
                   ticket, "--remaining-ratio", k, "--rewind-update", str(a.rewind_update), "--json"]
            if method == "ticket_sign":
                cmd.append("--sign-only")
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise ConfigError(f"ticket {name}: {r.stderr.strip()[-400:]}")
            print(f"[{name}] {r.stdout.strip()}", flush=True)
        start = train(a, name, runs[name][1], bin_dir)
        row = score_checkpoints(a, name, runs[name][0], start, prepared, {})[-1]
        with open(done, "w", encoding="utf-8") as f:
            json.dump(row, f)
        return row

    names = [run_name(m, k) for m in a.method_list for k in a.kept_list]
    with ThreadPoolExecutor(a.jobs) as pool:
        dense_done = pool.submit(one, "dense")
        futures = {n: pool.submit(one, n) for n in sorted(names, key=lambda n: n.startswith("ticket"))}
        dense_row = dense_done.result()
        rows = {n: f.result() for n, f in futures.items()}
    dense_bleu = dense_row["bleu"]
    results = {"dense": {"method": "dense", "kept": 1.0, "bleu": dense_bleu,
                         "bytes": checkpoint_bytes(os.path.join(a.work, "dense", "checkpoint_last.pt"))}}
    for method in a.method_list:
        for k in a.kept_list:
            n = run_name(method, k)
            results[n] = {"method": method, "kept": k, "bleu": rows[n]["bleu"],
                          "ratio_to_dense": round(rows[n]["bleu"] / dense_bleu, 4) if dense_bleu else None,
                          "bytes": checkpoint_bytes(os.path.join(a.work, n, "checkpoint_last.pt"))}
    write_csv(results, os.path.join(a.work, "sparse.csv"))
    png = plot(results, a, os.path.join(a.work, "sparse.png"))
    analysis = analyze(a, names, bin_dir)
    seconds = int(time.time() - t0)
    print(f"\n{a.raw_dir}: {a.updates} updates per run, {a.layers}+{a.layers} layers, {a.dim}/{a.ffn}, "
          f"{seconds} s in all -> {os.path.join(a.work, 'sparse.csv')}, {png}")
    print(f"{'method':>12} {'kept':>5} {'BLEU':>6} {'ratio':>6} {'bytes':>11}  "
          f"{'mean CKA':>8} {'attn agreement':>14}")
    for n, r in results.items():
        m = analysis["models"].get(n, {}) if analysis else {}
        cka = sum(m["cka_by_layer"].values()) / len(m["cka_by_layer"]) if m else None
        agree = sum(m["attention_agreement"].values()) / len(m["attention_agreement"]) if m else None
        r["mean_cka"] = round(cka, 4) if cka is not None else None
        r["mean_attention_agreement"] = round(agree, 4) if agree is not None else None
        ratio = f"{r['ratio_to_dense']:.3f}" if r.get("ratio_to_dense") is not None else "-"
        print(f"{r['method']:>12} {r['kept']:>5.2f} {r['bleu']:>6.2f} {ratio:>6} {r['bytes']:>11,}  "
              f"{r['mean_cka'] if cka is not None else '-':>8} "
              f"{r['mean_attention_agreement'] if agree is not None else '-':>14}")
    print(json.dumps({"updates": a.updates, "seconds": seconds, "rewind_update": a.rewind_update,
                      "results": results}))
    return 0


def write_csv(results: dict, path: str) -> None:
    keys = ["run", "method", "kept", "bleu", "ratio_to_dense", "bytes"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for n, r in results.items():
            w.writerow({"run": n, **{k: r.get(k, "") for k in keys[1:]}})


def analyze(a, names: list[str], bin_dir: str) -> dict | None:
    out = os.path.join(a.work, "analysis.json")
    cmd = [command("one-layer-lottery"), "analyze",
           os.path.join(a.work, "dense", "checkpoint_last.pt"),
           *[os.path.join(a.work, n, "checkpoint_last.pt") for n in names], "--data", bin_dir,
           "--labels", ",".join(names), "--sentences", str(a.analysis_sentences), "--json",
           "--png", os.path.join(a.work, "analysis.png")]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise ConfigError(f"analyze failed: {r.stderr.strip()[-400:]}")
    with open(out, "w", encoding="utf-8") as f:
        f.write(r.stdout)
    return json.loads(r.stdout)


def plot(results: dict, a, png: str) -> str:
    from one_layer_lottery.io import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    dense = results["dense"]
    for method in a.method_list:
        pts = sorted((r["kept"], r["bleu"], r["bytes"]) for r in results.values() if r["method"] == method)
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=METHODS[method])
        axes[1].plot([p[2] for p in pts], [p[1] for p in pts], marker="o", label=METHODS[method])
    axes[0].axhline(dense["bleu"], color="k", ls="--", label=f"dense ({dense['bleu']:.1f})")
    axes[1].axhline(dense["bleu"], color="k", ls="--")
    axes[1].scatter([dense["bytes"]], [dense["bleu"]], color="k", marker="s")
    axes[0].set_xlabel("fraction of weights kept (k)")
    axes[1].set_xlabel("bytes to store (position bits + fp16 stored values)")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("test BLEU (detokenized sacreBLEU, beam 5)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_plot(fig, png)
    return png


if __name__ == "__main__":
    sys.exit(main())
