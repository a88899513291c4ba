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
import glob
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from one_layer_lottery import data
from one_layer_lottery.errors import ConfigError
from one_layer_lottery.sweep import evaluate

BIN = os.path.dirname(sys.executable)
MODELS = {  # name: (label, width multiplier, fairseq-train arguments)
    "dense": ("dense Transformer", 1, ["--arch", "transformer", "--optimizer", "adam", "--lr", "1e-3",
                                       "--warmup-updates", "400", "--dropout", "0.3"]),
    "random_emb": ("one-layer supermask, masked random embeddings", 1, [
        "--arch", "one_layer_supermask_transformer_tiny", "--optimizer", "masked_adam", "--lr", "4e-3",
        "--warmup-updates", "200", "--dropout", "0.1"]),
    "pretrained_emb": ("one-layer supermask, dense model's embeddings (frozen)", 1, [
        "--arch", "one_layer_supermask_transformer_tiny", "--optimizer", "masked_adam", "--lr", "4e-3",
        "--warmup-updates", "200", "--dropout", "0.1", "--pretrained-embeddings", "{work}/dense/checkpoint_last.pt"]),
    "pretrained_emb_masked": ("one-layer supermask, dense model's embeddings (masked, the authors' way)", 1, [
        "--arch", "one_layer_supermask_transformer_tiny", "--optimizer", "masked_adam", "--lr", "4e-3",
        "--warmup-updates", "200", "--dropout", "0.1", "--pretrained-embeddings", "{work}/dense/checkpoint_last.pt",
        "--pretrained-embeddings-mode", "masked"]),
    "wide": ("one-layer supermask, 2x wide, masked random embeddings", 2, [
        "--arch", "one_layer_supermask_transformer_tiny", "--optimizer", "masked_adam", "--lr", "4e-3",
        "--warmup-updates", "200", "--dropout", "0.1"]),
}
COLUMNS = ["model", "label", "update", "wall_s", "valid_loss", "bleu"]
VALID = re.compile(r"valid on 'valid' subset \| loss ([\d.]+) .*\| num_updates (\d+)")
WALL = re.compile(r"num_updates=(\d+),.* wall=(\d+)")  # fairseq's wall clock; it restarts when a run resumes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw_dir", help="raw parallel text (train/val|valid/test*.{de,en}[.gz]), e.g. ../shared/data/multi30k")
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--work", default="work/convergence")
    p.add_argument("--models", default="dense,random_emb,pretrained_emb,pretrained_emb_masked,wide")
    p.add_argument("--updates", type=int, default=1200)
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--warmup", type=int, help="warmup updates of every model (default: each model's own)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--ffn", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=6000)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--extra-test", action="append", default=[], metavar="NAME=SRC,REF",
                   help="another test set (raw source and reference files); scored on the last checkpoint")
    p.add_argument("--extra-args", default="", help="more fairseq-train arguments for every supermask model")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--jobs", type=int, default=1, help="models trained at once")
    a = p.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        p.error(f"--models {a.models!r}: unknown {unknown}; allowed: {', '.join(MODELS)}")
    if any(m.startswith("pretrained_emb") for m in models) and "dense" not in models:
        p.error("--models: pretrained_emb needs dense (it uses the dense model's embeddings)")
    if a.jobs < 1:
        p.error(f"--jobs {a.jobs} must be at least 1")
    for v, name in ((a.updates, "--updates"), (a.eval_every, "--eval-every")):
        if v < 1:
            p.error(f"{name} {v} must be a positive number of updates")
    extra = {}
    for spec in a.extra_test:
        name, _, files = spec.partition("=")
        paths = files.split(",")
        if not name or not re.fullmatch(r"[\w.-]+", name) or len(paths) != 2:
            p.error(f"--extra-test {spec!r}: expected NAME=SOURCE_FILE,REFERENCE_FILE")
        extra[name] = paths
    a.models, a.extra = models, extra
    return a


def train(a, name: str, bin_dir: str) -> float:
    """fairseq-train one model, saving and validating every --eval-every updates; returns its start time."""
    label, mult, args = MODELS[name]
    save = os.path.join(a.work, name)
    shape = ["--encoder-layers", a.layers, "--decoder-layers", a.layers, "--encoder-embed-dim", a.dim * mult,
             "--decoder-embed-dim", a.dim * mult, "--encoder-ffn-embed-dim", a.ffn * mult,
             "--decoder-ffn-embed-dim", a.ffn * mult, "--encoder-attention-heads", a.heads,
             "--decoder-attention-heads", a.heads, "--share-decoder-input-output-embed"]
    common = ["--task", "translation", "--adam-betas", "(0.9,0.98)", "--lr-scheduler", "inverse_sqrt",
              "--criterion", "label_smoothed_cross_entropy", "--label-smoothing",
              "0.1", "--max-tokens", a.max_tokens, "--max-update", a.updates, "--seed", a.seed,
              "--save-interval-updates", a.eval_every, "--validate-interval-updates", a.eval_every,
              "--keep-interval-updates", "-1", "--no-epoch-checkpoints", "--save-interval", "1000000",
              "--validate-interval", "1000000",
              "--log-format", "simple", "--log-interval", "100", "--num-workers", "0",
              "--user-dir", os.path.join(ROOT, "one_layer_lottery"), "--tensorboard-logdir",
              os.path.join(a.work, "tb", name), "--save-dir", save]
    extra = (a.extra_args.split() if name != "dense" else []) + (["--warmup-updates", a.warmup] if a.warmup else [])
    cmd = [os.path.join(BIN, "fairseq-train"), bin_dir, *[x.format(work=a.work) for x in args], *shape, *common,
           *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    print(f"[{name}] {label}: fairseq-train {' '.join(map(str, cmd[2:]))}", flush=True)
    start = time.time()
    log_path = os.path.join(a.work, f"{name}.train.log")
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # a resumed run adds to its log
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env)
        for line in proc.stdout:
            log.write(line)
            if "train_inner" in line or "valid on" in line or "Error" in line:
                print(f"[{name}] {line.split(' | ', 3)[-1].strip()}", flush=True)
    if proc.wait() != 0:
        raise ConfigError(f"fairseq-train failed for {name} (exit {proc.returncode}); see {log_path}")
    return start


def score(a, name: str, start: float, prepared: str, extra_bins: dict) -> list[dict]:
    """One CSV row per saved checkpoint: update, wall time since the run started, valid loss, test BLEU."""
    save = os.path.join(a.work, name)
    with open(os.path.join(a.work, f"{name}.train.log"), encoding="utf-8") as f:
        text = f.read()
    losses = {int(u): float(v) for v, u in VALID.findall(text)}
    walls, resumed = {}, False
    for u, w in WALL.findall(text):
        resumed = resumed or (bool(walls) and float(w) < max(walls.values()))
        walls[int(u)] = "" if resumed else float(w)  # after a resume the clock means nothing: left blank
    ckpts = {}
    for path in glob.glob(os.path.join(save, "checkpoint_*_*.pt")):
        ckpts[int(re.search(r"_(\d+)\.pt$", path).group(1))] = path
    last = max(ckpts) if ckpts else 0
    if last < a.updates:  # the run stopped between two saves (data exhausted or --updates not a multiple)
        ckpts[a.updates] = os.path.join(save, "checkpoint_last.pt")
    rows = []
    for update in sorted(ckpts):
        bleu = round(evaluate(ckpts[update], prepared), 2)
        rows.append({"model": name, "label": MODELS[name][0], "update": update,
                     "wall_s": walls.get(update, round(os.path.getmtime(ckpts[update]) - start, 1)),
                     "valid_loss": losses.get(update, ""), "bleu": bleu})
        print(f"[{name}] update {update}: valid loss {losses.get(update, '-')}, test BLEU {bleu:.2f}", flush=True)
    final = ckpts[max(ckpts)]
    for test, (bin_dir, ref) in extra_bins.items():
        rows[-1][f"bleu_{test}"] = round(evaluate(final, prepared, bin_dir=bin_dir, reference=ref), 2)
        print(f"[{name}] {test}: BLEU {rows[-1][f'bleu_{test}']:.2f}", flush=True)
    return rows


def stored_bytes(a, name: str) -> int:
    """Bytes to ship the final model: the seed-plus-bits artifact, or the dense model's weights in fp16."""
    ckpt = os.path.join(a.work, name, "checkpoint_last.pt")
    if name == "dense":
        import torch

        state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
        unique = {t.data_ptr(): t for k, t in state.items() if t.is_floating_point() and "version" not in k}
        return 2 * sum(t.numel() for t in unique.values())
    out = os.path.join(a.work, f"{name}.olt")
    r = subprocess.run([os.path.join(BIN, "one-layer-lottery"), "export", ckpt, out, "--json"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise ConfigError(f"export failed for {name}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["bytes"]


def plot(rows: list[dict], results: dict, work: str) -> list[str]:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, r in results.items():
        ax.scatter(r["bytes"], r["final_bleu"], s=40)
        ax.annotate(name, (r["bytes"], r["final_bleu"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes (artifact; dense: fp16 weights)")
    ax.set_ylabel("final test BLEU")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        return run(a)
    except ConfigError as e:
        print(f"convergence: error: {e}", file=sys.stderr)
        return 1


def run(a) -> int:
    if not os.path.isdir(a.raw_dir):
        raise ConfigError(f"data directory {a.raw_dir!r} does not exist")
    for files in a.extra.values():
        for path in files:
            if not os.path.isfile(path):
                raise ConfigError(f"extra test file {path!r} does not exist")
    t0 = time.time()
    os.makedirs(a.work, exist_ok=True)
    prepared = os.path.join(a.work, "data")
    if not os.path.isdir(os.path.join(prepared, "bin")):
        data.prepare(a.raw_dir, prepared, a.src, a.tgt, vocab_size=a.vocab)
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
        start = train(a, name, os.path.join(prepared, "bin"))  # resumes from checkpoint_last.pt if there is one
        rows = score(a, name, start, prepared, extra_bins)
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
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(csv_path + ".tmp", csv_path)
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
