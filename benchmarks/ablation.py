"""Ablation of the one-layer supermask model (masked random embeddings): BLEU ratio to dense per setting.

    python benchmarks/ablation.py RAW_DIR [--settings tuned,paper,...] [--seeds 1,2] [--updates 400] [--jobs 2]
        [--src de --tgt en --dim 128 ...: any benchmarks/convergence.py shape option]
    python benchmarks/ablation.py RAW_DIR --ratios 0.1,0.3,0.5,0.7,0.9 [--variants one_layer:random,...]

With --ratios, the paper's Fig. 2 instead: BLEU against the remaining ratio k for the one-layer and the
standard (a random layer per depth) supermask model, on masked random embeddings and on the dense
model's embeddings (frozen), every run with the default settings and k changed; writes
WORK/ratio_sweep.csv and WORK/ratio_sweep.png (dense as a horizontal line).

Every (setting, seed) is one benchmarks/convergence.py run (kept in WORK and reused when run again) of the `random_emb` model with the setting's
fairseq-train flags added; the dense model is trained once per seed with its own settings. Runs go
--jobs at a time, each on 2/--jobs threads. Prints a table (mean BLEU over seeds with min and max, the
difference to `tuned`, the ratio to dense at the same budget) and a last-line JSON; writes WORK/ablation.csv.
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {  # name: fairseq-train flags on top of the defaults
    "tuned": "",
    "paper": "--init-preset paper",
    "authors": "--init-preset authors",
    "embed_gain_0.5": "--embed-gain 0.5",
    "embed_gain_2": "--embed-gain 2",
    "layer_gain_0.5": "--qkv-gain 0.5 --attn-out-gain 0.5 --ffn-gain 0.5",
    "layer_gain_2": "--qkv-gain 2 --attn-out-gain 2 --ffn-gain 2",
    "qkv_gain_2": "--qkv-gain 2",
    "ffn_gain_0.5": "--ffn-gain 0.5",
    "pre_ln": "--encoder-normalize-before --decoder-normalize-before",
    "score_init_magnitude": "--score-init magnitude",
    "output_scale": "--learned-output-scale --optimizer adam",  # one trained float: not masks-only
    "lr_2e-3_warmup_400": "--lr 2e-3 --warmup-updates 400",  # the former demo settings
    "lr_8e-3": "--lr 8e-3",
    "warmup_100": "--warmup-updates 100",
    "clip_0.5": "--clip-norm 0.5",
    "dropout_0.3": "--dropout 0.3",
    "ratio_0.3": "--remaining-ratio 0.3",
    "ratio_0.7": "--remaining-ratio 0.7",
    # from the strong-lottery-ticket literature beyond the paper
    "anneal_k_200": "--ratio-anneal-updates 200",  # gradual: k from 1 to 0.5 over the first 200 updates
    "multicoat_0.25": "--multicoat-ratios 0.25",  # Okoshi et al. 2022: 1.5 mask bits per weight as stored
    "multicoat_0.3_0.15": "--multicoat-ratios 0.3,0.15",  # 3 mask bits per weight
    "nm_2_4": "--mask-structure 2:4",  # two of every four consecutive input weights (sparse tensor cores)
}
VARIANTS = {  # Fig. 2's lines: (convergence.py model, extra flags)
    "one_layer:random": ("random_emb", ""),
    "standard:random": ("random_emb", "--arch supermask_transformer_tiny"),
    "one_layer:pretrained": ("pretrained_emb", ""),
    "standard:pretrained": ("pretrained_emb", "--arch supermask_transformer_tiny"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw_dir")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--updates", type=int, default=400)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="threads per run (default: 2 / --jobs)")
    p.add_argument("--work", default="work/ablation")
    p.add_argument("--ratios", help="comma-separated k in (0, 1]: the Fig. 2 sweep instead of --settings")
    p.add_argument("--variants", default=",".join(VARIANTS), help="the --ratios sweep's lines")
    a, shape = p.parse_known_args(argv)
    settings = [s for s in a.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        p.error(f"--settings: unknown {unknown}; allowed: {', '.join(SETTINGS)}")
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {a.seeds!r}: expected comma-separated integers")
    ratios, variants = [], [v for v in a.variants.split(",") if v]
    if a.ratios is not None:
        try:
            ratios = [float(r) for r in a.ratios.split(",")]
        except ValueError:
            p.error(f"--ratios {a.ratios!r}: expected comma-separated numbers in (0, 1]")
        bad = [r for r in ratios if not 0 < r <= 1]
        if bad or not ratios:
            p.error(f"--ratios {a.ratios!r}: every k must lie in (0, 1]")
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            p.error(f"--variants: unknown {unknown}; allowed: {', '.join(VARIANTS)}")
    if not os.path.isdir(a.raw_dir):
        print(f"ablation: error: data directory {a.raw_dir!r} does not exist", file=sys.stderr)
        return 1
    threads = a.threads or max(1, 2 // a.jobs)
    data = os.path.join(a.work, "data")

    def convergence(work, models, extra, seed):
        done = os.path.join(work, "result.json")
        if os.path.exists(done):  # a finished run is not trained again
            with open(done, encoding="utf-8") as f:
                return json.load(f)
        if "pretrained_emb" in models:  # the seed's dense model, trained once, lends its embeddings
            dense = os.path.join(a.work, f"dense.seed{seed}")
            os.makedirs(work, exist_ok=True)
            if not os.path.exists(os.path.join(work, "dense")):
                os.symlink(os.path.abspath(os.path.join(dense, "dense")), os.path.join(work, "dense"))
            shutil.copy(os.path.join(dense, "dense.rows.json"), work)
        cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "convergence.py"), a.raw_dir, "--work", work,
               "--models", models, "--updates", a.updates, "--eval-every", a.updates, "--seed", seed,
               "--threads", threads, f"--extra-args={extra}", *shape]
        if not os.path.isdir(os.path.join(work, "data")):
            os.makedirs(work, exist_ok=True)
            os.symlink(os.path.abspath(data), os.path.join(work, "data"))
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{work}: {r.stderr.strip()[-800:]}")
        result = json.loads(r.stdout.strip().splitlines()[-1])["models"]
        with open(done, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return result

    if not os.path.isdir(data):  # one shared preparation (sentencepiece + binarization) for every run
        from common import command  # imports fairseq: only where it is needed
        subprocess.run([command("one-layer-lottery"), "prepare", a.raw_dir, data,
                        "--src", _opt(shape, "--src", "de"), "--tgt", _opt(shape, "--tgt", "en"),
                        "--vocab-size", _opt(shape, "--vocab", "6000")], check=True)
    # (run name, convergence.py models, flags, seed); the dense runs first: the pre-trained runs wait for them
    dense_jobs = [("dense", "dense", "", seed) for seed in seeds]
    if ratios:
        jobs = [(f"k{k}.{v.replace(':', '.')}", VARIANTS[v][0], f"--remaining-ratio {k} {VARIANTS[v][1]}".strip(), seed)
                for v in variants for k in ratios for seed in seeds]
    else:
        jobs = [(s, "random_emb", SETTINGS[s], seed) for s in settings for seed in seeds]
    results = {}

    def run_job(job):
        name, model, flags, seed = job
        m = convergence(os.path.join(a.work, f"{name}.seed{seed}"),
                        "dense,pretrained_emb" if model == "pretrained_emb" else model, flags, seed)
        results[job] = m[model]["final_bleu"]
        print(f"[ablation] {name} seed {seed}: BLEU {results[job]:.2f}", flush=True)

    with ThreadPoolExecutor(a.jobs) as pool:
        for f in [pool.submit(run_job, j) for j in dense_jobs]:
            f.result()
        for f in [pool.submit(run_job, j) for j in jobs]:
            f.result()
    dense = [results[("dense", "dense", "", seed)] for seed in seeds]
    if ratios:
        return ratio_sweep(a, ratios, variants, seeds, results, dense)
    rows = []
    for s in settings:
        bleus = [results[(s, "random_emb", SETTINGS[s], seed)] for seed in seeds]
        rows.append({"setting": s, "flags": SETTINGS[s], "bleu_mean": round(statistics.mean(bleus), 2),
                     "bleu_min": min(bleus), "bleu_max": max(bleus),
                     "ratio_to_dense": round(statistics.mean(bleus) / statistics.mean(dense), 3)
                     if statistics.mean(dense) > 0 else None})
    base = next((r["bleu_mean"] for r in rows if r["setting"] == "tuned"), None)
    for r in rows:
        r["delta_vs_tuned"] = round(r["bleu_mean"] - base, 2) if base is not None else None
    with open(os.path.join(a.work, "ablation.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\ndense BLEU per seed {dense} ({a.updates} updates, the same budget); seeds {seeds}")
    print(f"{'setting':>22} {'BLEU':>6} {'range':>15} {'vs tuned':>8} {'/dense':>6}  flags")
    for r in rows:
        delta = f"{r['delta_vs_tuned']:+.2f}" if r["delta_vs_tuned"] is not None else "-"
        ratio = f"{r['ratio_to_dense']:.3f}" if r["ratio_to_dense"] is not None else "-"
        print(f"{r['setting']:>22} {r['bleu_mean']:>6.2f} [{r['bleu_min']:6.2f}, {r['bleu_max']:6.2f}] {delta:>8} "
              f"{ratio:>6}  {r['flags']}")
    print(json.dumps({"updates": a.updates, "seeds": seeds, "dense_bleu": dense, "settings": rows}))
    return 0


def ratio_sweep(a, ratios, variants, seeds, results, dense) -> int:
    """The Fig. 2 table, CSV and PNG from the finished runs."""
    rows = []
    for v in variants:
        for k in ratios:
            bleus = [b for (name, _, _, seed), b in results.items() if name == f"k{k}.{v.replace(':', '.')}"]
            rows.append({"variant": v, "remaining_ratio": k, "bleu_mean": round(statistics.mean(bleus), 2),
                         "bleu_min": min(bleus), "bleu_max": max(bleus),
                         "ratio_to_dense": round(statistics.mean(bleus) / statistics.mean(dense), 3)
                         if statistics.mean(dense) > 0 else None})
    with open(os.path.join(a.work, "ratio_sweep.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from one_layer_lottery.io import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for v in variants:
        pts = [r for r in rows if r["variant"] == v]
        arch, emb = v.split(":")
        ax.errorbar([r["remaining_ratio"] for r in pts], [r["bleu_mean"] for r in pts],
                    yerr=[[r["bleu_mean"] - r["bleu_min"] for r in pts], [r["bleu_max"] - r["bleu_mean"] for r in pts]],
                    marker="o" if arch == "one_layer" else "s", linestyle="-" if emb == "random" else "--",
                    capsize=3, label=f"{arch.replace('_', '-')} supermask, {emb} embeddings")
    ax.axhline(statistics.mean(dense), color="black", linewidth=1, label=f"dense Transformer, trained {a.updates} updates")
    ax.set_xlabel("remaining ratio k (fraction of random weights kept)")
    ax.set_ylabel("test BLEU")
    ax.set_title(f"BLEU against k, {a.updates} updates, seeds {','.join(map(str, seeds))}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = os.path.join(a.work, "ratio_sweep.png")
    fig.savefig(png, dpi=120)
    print(f"\ndense BLEU per seed {dense} ({a.updates} updates, the same budget); seeds {seeds} -> {png}")
    print(f"{'variant':>22} {'k':>5} {'BLEU':>6} {'range':>15} {'/dense':>6}")
    for r in rows:
        ratio = f"{r['ratio_to_dense']:.3f}" if r["ratio_to_dense"] is not None else "-"
        print(f"{r['variant']:>22} {r['remaining_ratio']:>5} {r['bleu_mean']:>6.2f} "
              f"[{r['bleu_min']:6.2f}, {r['bleu_max']:6.2f}] {ratio:>6}")
    print(json.dumps({"updates": a.updates, "seeds": seeds, "dense_bleu": dense, "ratios": rows}))
    return 0


def _opt(args: list[str], flag: str, default: str) -> str:
    return args[args.index(flag) + 1] if flag in args else default


if __name__ == "__main__":
    sys.exit(main())
