"""Ablation of the one-layer supermask model (masked random embeddings): BLEU ratio to dense per setting.

    python benchmarks/ablation.py RAW_DIR [--settings tuned,paper,...] [--seeds 1,2] [--updates 400] [--jobs 2]
        [--src de --tgt en --dim 128 ...: any benchmarks/convergence.py shape option]

Every (setting, seed) is one benchmarks/convergence.py run (kept in WORK and reused when run again) of the `random_emb` model with the setting's
fairseq-train flags added; the dense model is trained once per seed with its own settings. Runs go
--jobs at a time, each on 2/--jobs threads. Prints a table (mean BLEU over seeds with min and max, the
difference to `tuned`, the ratio to dense at the same budget) and a last-line JSON; writes WORK/ablation.csv.
"""

import argparse
import csv
import json
import os
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
    a, shape = p.parse_known_args(argv)
    settings = [s for s in a.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        p.error(f"--settings: unknown {unknown}; allowed: {', '.join(SETTINGS)}")
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {a.seeds!r}: expected comma-separated integers")
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
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "one-layer-lottery"), "prepare", a.raw_dir, data,
                        "--src", _opt(shape, "--src", "de"), "--tgt", _opt(shape, "--tgt", "en"),
                        "--vocab-size", _opt(shape, "--vocab", "6000")], check=True)
    jobs = [("dense", "", seed) for seed in seeds] + [(s, SETTINGS[s], seed) for s in settings for seed in seeds]
    with ThreadPoolExecutor(a.jobs) as pool:
        futures = {job: pool.submit(convergence, os.path.join(a.work, f"{job[0]}.seed{job[2]}"),
                                    "dense" if job[0] == "dense" else "random_emb", job[1], job[2]) for job in jobs}
        results = {}
        for job, fut in futures.items():
            m = fut.result()
            results[job] = next(iter(m.values()))["final_bleu"]
            print(f"[ablation] {job[0]} seed {job[2]}: BLEU {results[job]:.2f}", flush=True)
    dense = [results[("dense", "", seed)] for seed in seeds]
    rows = []
    for s in settings:
        bleus = [results[(s, SETTINGS[s], seed)] for seed in seeds]
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


def _opt(args: list[str], flag: str, default: str) -> str:
    return args[args.index(flag) + 1] if flag in args else default


if __name__ == "__main__":
    sys.exit(main())
