"""Convergence on real text: valid loss and BLEU against updates and wall time, one line per model.

    python benchmarks/convergence.py RAW_DIR [--updates 1200] [--eval-every 300] [--models dense,random_emb,...]
        [--extra-test NAME=SRC,REF ...] [--work work/convergence] [--seed 1] [--threads N]

Trains, with one shape and one update budget (the same for every model), stock fairseq commands:
  dense           fairseq's dense Transformer (its own settings: adam lr 1e-3, dropout 0.3)
  random_emb      the one-layer supermask model, masked random embeddings: nothing trained but masks
  pretrained_emb  the one-layer supermask model on the dense model's embeddings, frozen (the paper's way)
  pretrained_emb_masked  the same embeddings masked like every other weight (the authors' default)
  wide            the one-layer supermask model at twice the width, masked random embeddings
A model already trained and scored in WORK is reused, and an interrupted one resumes from its last checkpoint
(run the same command again). Models train --jobs at a time (each on --threads threads); those on the dense model's embeddings wait for it.
Each run validates and saves every --eval-every updates; every saved checkpoint is then scored on the test
split (fairseq-generate, beam 5, detokenized sacreBLEU); the last one also on every --extra-test set,
binarized with the run's own sentencepiece models and dictionaries. Writes WORK/convergence.csv,
WORK/convergence.png (BLEU against updates and against wall time), WORK/bytes.png (final BLEU against the
bytes it takes to store each model: the seed-plus-bits artifact, or the dense model's fp16 weights) and
tensorboard logs under WORK/tb; prints progress, a table, and a last-line JSON.
"""

import argparse
import csv
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import (
    DENSE_ARGS,
    SUPERMASK_ARGS,
    add_run_args,
    artifact_bytes,
    check_run_args,
    fp16_bytes,
    prepare_once,
    run_guarded,
    save_plot,
    score_checkpoints,
    train,
)

from one_layer_lottery import data
from one_layer_lottery.errors import ConfigError
from one_layer_lottery.io import atomic_path, read_checkpoint

PRETRAINED = ["--pretrained-embeddings", "{work}/dense/checkpoint_last.pt"]
MODELS = {  # name: (label, width multiplier, fairseq-train arguments)
    "dense": ("dense Transformer", 1, DENSE_ARGS),
    "random_emb": ("one-layer supermask, masked random embeddings", 1, SUPERMASK_ARGS),
    "pretrained_emb": ("one-layer supermask, dense model's embeddings (frozen)", 1, [*SUPERMASK_ARGS, *PRETRAINED]),
    "pretrained_emb_masked": ("one-layer supermask, dense model's embeddings (masked, the authors' way)", 1,
                              [*SUPERMASK_ARGS, *PRETRAINED, "--pretrained-embeddings-mode", "masked"]),
    "wide": ("one-layer supermask, 2x wide, masked random embeddings", 2, SUPERMASK_ARGS),
}
COLUMNS = ["model", "label", "update", "wall_s", "valid_loss", "bleu"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, work="work/convergence", updates=1200, eval_every=300)
    p.add_argument("--models", default="dense,random_emb,pretrained_emb,pretrained_emb_masked,wide")
    p.add_argument("--extra-test", action="append", default=[], metavar="NAME=SRC,REF",
                   help="another test set (raw source and reference files); scored on the last checkpoint")
    p.add_argument("--extra-args", default="", help="more fairseq-train arguments for every supermask model")
    a = p.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        p.error(f"--models {a.models!r}: unknown {unknown}; allowed: {', '.join(MODELS)}")
    if any(m.startswith("pretrained_emb") for m in models) and "dense" not in models:
        p.error("--models: pretrained_emb needs dense (it uses the dense model's embeddings)")
    check_run_args(p, a)
    extra = {}
    for spec in a.extra_test:
        name, _, files = spec.partition("=")
        paths = files.split(",")
        if not name or not re.fullmatch(r"[\w.-]+", name) or len(paths) != 2:
            p.error(f"--extra-test {spec!r}: expected NAME=SOURCE_FILE,REFERENCE_FILE")
        extra[name] = paths
    a.models, a.extra = models, extra
    return a


def train_model(a, name: str, bin_dir: str) -> float:
    """fairseq-train one of MODELS (the benchmark's settings, --warmup and --extra-args applied)."""
    _, mult, args = MODELS[name]
    extra = (a.extra_args.split() if name != "dense" else []) + (["--warmup-updates", a.warmup] if a.warmup else [])
    return train(a, name, [x.format(work=a.work) for x in args], bin_dir, mult, extra)


def stored_bytes(a, name: str) -> int:
    """Bytes to store the final model: the seed-plus-bits artifact without what a dense model needs as well (its
    sentencepiece models and dictionaries), or the dense model's weights in fp16."""
    ckpt = os.path.join(a.work, name, "checkpoint_last.pt")
    if name == "dense":
        return fp16_bytes(read_checkpoint(ckpt)["model"])
    return artifact_bytes(ckpt, os.path.join(a.work, f"{name}.olt"))["model_bytes"]


def plot(rows: list[dict], results: dict, work: str) -> list[str]:
    from one_layer_lottery.io import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name in results:
        pts = [r for r in rows if r["model"] == name]
        for ax, x in zip(axes, ("update", "wall_s")):
            xy = [(r[x], r["bleu"]) for r in pts if r[x] != ""]
            ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=pts[0]["label"])
    axes[0].set_xlabel("updates")
    axes[1].set_xlabel("training wall time (s, 2 CPU cores, validation included)")
    axes[0].set_ylabel("test BLEU (detokenized sacreBLEU, beam 5)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths = [os.path.join(work, "convergence.png"), os.path.join(work, "bytes.png")]
    save_plot(fig, paths[0])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, r in results.items():
        ax.scatter(r["bytes"], r["final_bleu"], s=40)
        ax.annotate(name, (r["bytes"], r["final_bleu"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes (artifact; dense: fp16 weights)")
    ax.set_ylabel("final test BLEU")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_plot(fig, paths[1])
    return paths


def main(argv=None) -> int:
    return run_guarded("convergence", run, parse_args(argv))


def run(a) -> int:
    if not os.path.isdir(a.raw_dir):
        raise ConfigError(f"data directory {a.raw_dir!r} does not exist")
    for files in a.extra.values():
        for path in files:
            if not os.path.isfile(path):
                raise ConfigError(f"extra test file {path!r} does not exist")
    t0 = time.time()
    prepared = prepare_once(a)
    extra_bins = {name: (data.prepare_test(prepared, src, ref, os.path.join(a.work, "extra", name), a.src, a.tgt), ref)
                  for name, (src, ref) in a.extra.items()}
    futures = {}

    def one(name: str) -> list[dict]:
        done = os.path.join(a.work, f"{name}.rows.json")
        if os.path.exists(done):  # trained and scored by an earlier run of the same command
            with open(done, encoding="utf-8") as f:
                return json.load(f)
        if name.startswith("pretrained_emb"):
            futures["dense"].result()  # its embeddings come from the dense model's checkpoint
        start = train_model(a, name, os.path.join(prepared, "bin"))  # resumes from checkpoint_last.pt if any
        rows = score_checkpoints(a, name, MODELS[name][0], start, prepared, extra_bins)
        with open(done, "w", encoding="utf-8") as f:
            json.dump(rows, f)
        return rows

    # the dense model first (others wait for it), then the longest
    order = sorted(a.models, key=lambda m: (m != "dense", -MODELS[m][1]))
    with ThreadPoolExecutor(a.jobs) as pool:
        for name in order:
            futures[name] = pool.submit(one, name)
    rows, results = [], {}
    for name in a.models:
        pts = futures[name].result()
        rows += pts
        results[name] = {"final_bleu": pts[-1]["bleu"], "best_bleu": max(r["bleu"] for r in pts),
                         "train_s": pts[-1]["wall_s"] or None, "bytes": stored_bytes(a, name),
                         **{k: v for k, v in pts[-1].items() if k.startswith("bleu_")}}
    dense = results.get("dense", {}).get("final_bleu")
    for r in results.values():
        r["ratio_final"] = round(r["final_bleu"] / dense, 4) if dense else None
        r["ratio_best"] = round(r["best_bleu"] / dense, 4) if dense else None
    csv_path = os.path.join(a.work, "convergence.csv")
    keys = COLUMNS + sorted({k for r in rows for k in r} - set(COLUMNS))
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    pngs = plot(rows, results, a.work)
    print(f"\n{a.raw_dir}: {a.updates} updates per model, {a.layers}+{a.layers} layers, {a.dim}/{a.ffn} "
          f"(wide: x2), {int(time.time() - t0)} s in all -> {csv_path}, {', '.join(pngs)}")
    print(f"{'model':>22} {'final BLEU':>10} {'best':>6} {'ratio':>6} {'train s':>8} {'stored bytes':>13}")
    for name, r in results.items():
        ratio = f"{r['ratio_final']:.3f}" if r["ratio_final"] is not None else "-"
        train_s = f"{r['train_s']:.0f}" if r["train_s"] else "-"
        print(f"{name:>22} {r['final_bleu']:>10.2f} {r['best_bleu']:>6.2f} {ratio:>6} {train_s:>8} "
              f"{r['bytes']:>13,}")
    print(json.dumps({"updates": a.updates, "seconds": int(time.time() - t0), "models": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
