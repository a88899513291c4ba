"""GLUE dev accuracy on CPU: a dense RoBERTa-shaped classifier against the one-layer supermask RoBERTa.

    python benchmarks/glue_accuracy.py GLUE_DIR [--tasks SST-2,MRPC,RTE] [--work work/glue] [--jobs 2]
        [--layers 3 --dim 128 --ffn 256 --heads 4] [--scale 1.0] [--layer-score-lr-scales 0.03,0.1,0.3,1]

GLUE_DIR holds one folder per task in GLUE's TSV layout (e.g. ../shared/data/glue). For every task, with one
shape and one update budget (stock fairseq commands):
  dense          fairseq's `roberta` classifier, trained from scratch (nothing pre-trained exists offline)
  random_emb     the one-layer supermask RoBERTa (k = 0.5) on masked random embeddings: masks and the head
  pretrained_emb the same on frozen embeddings obtained the paper's way as far as this machine allows: a dense
                 RoBERTa of the same shape pre-trained with fairseq's own masked_lm task on the task's training
                 text (its token and position tables; RoBERTa's would come from roberta.base/model.pt)
--layer-score-lr-scales adds both supermask models at each of those --layer-score-lr-scale values (the layers'
scores' learning rate relative to --lr; the architecture's default, 0.1, otherwise), named MODEL@SCALE.
Prints dev accuracy (and F1 for MRPC), the majority-class accuracy of the dev split, the ratios to dense, and a
last-line JSON; writes WORK/glue.csv. Finished runs are reused when the command is run again. --scale
multiplies every update budget.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from common import add_parallel_args, add_shape_args, command

from one_layer_lottery.classify import predict, scores
from one_layer_lottery.errors import ConfigError
from one_layer_lottery.glue import TASKS, prepare_glue

# task: (classifier updates, sentences a batch, F1 reported); MRPC and RTE are small: several epochs
BUDGET = {"SST-2": (1500, 32, False), "MRPC": (600, 16, True), "RTE": (600, 16, False), "QQP": (3000, 32, True),
          "MNLI": (3000, 32, False)}
MLM_UPDATES = 400


def fairseq_train(a, args: list, log: str) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    with open(log, "w", encoding="utf-8") as f:
        r = subprocess.run([command("fairseq-train"), *map(str, args)], stdout=f, stderr=subprocess.STDOUT,
                           env=env, check=False)
    if r.returncode != 0:
        raise ConfigError(f"fairseq-train failed (exit {r.returncode}); see {log}")


def shape(a) -> list:
    return ["--encoder-layers", a.layers, "--encoder-embed-dim", a.dim, "--encoder-ffn-embed-dim", a.ffn,
            "--encoder-attention-heads", a.heads, "--max-positions", a.max_positions]


def pretrain_mlm(a, task: str, data: str) -> str:
    """A dense RoBERTa of the classifier's shape, masked-LM pre-trained on the task's training text."""
    save = os.path.join(a.work, task, "mlm")
    ckpt = os.path.join(save, "checkpoint_last.pt")
    if not os.path.exists(ckpt):
        updates = max(1, int(MLM_UPDATES * a.scale))
        print(f"[{task}] masked-LM pre-training of the embeddings: {updates} updates", flush=True)
        fairseq_train(a, [os.path.join(data, "input0"), "--task", "masked_lm", "--criterion", "masked_lm",
                          "--arch", "roberta", *shape(a), "--tokens-per-sample", 128, "--sample-break-mode", "complete",
                          "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "5e-4", "--lr-scheduler",
                          "polynomial_decay", "--warmup-updates", updates // 10, "--total-num-update", updates,
                          "--max-update", updates, "--batch-size", 16, "--dropout", "0.1", "--seed", a.seed,
                          "--num-workers", 0, "--disable-validation", "--no-epoch-checkpoints", "--log-format",
                          "simple", "--save-dir", save], os.path.join(save + ".log"))
    return ckpt


def classifier(a, task: str, data: str, model: str, embeddings: str | None, lr_scale: str | None = None) -> dict:
    done = os.path.join(a.work, task, f"{model}.json")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    updates, bsz, _ = BUDGET[task]
    updates = max(1, int(updates * a.scale))
    with open(os.path.join(data, "text", "train.label"), encoding="utf-8") as f:
        classes = len(set(f.read().split()))
    common = [data, "--user-dir", os.path.join(ROOT, "one_layer_lottery"), "--task", "sentence_prediction",
              "--num-classes", classes, "--init-token", 0, "--separator-token", 2, "--shorten-method", "truncate",
              "--criterion", "sentence_prediction", "--adam-betas", "(0.9,0.98)", "--lr-scheduler", "polynomial_decay",
              "--warmup-updates", max(1, updates // 10), "--total-num-update", updates, "--max-update", updates,
              "--batch-size", bsz, "--required-batch-size-multiple", 1, "--dropout", "0.1", "--seed", a.seed,
              "--num-workers", 0, "--disable-validation", "--no-epoch-checkpoints", "--log-format", "simple",
              *shape(a)]
    if model == "dense":
        args = ["--arch", "roberta", "--optimizer", "adam", "--lr", "5e-4"]
    else:
        args = ["--arch", "one_layer_supermask_roberta_base", "--optimizer", "masked_adam", "--lr", "3e-3",
                "--remaining-ratio", "0.5"] + (["--pretrained-embeddings", embeddings] if embeddings else [])
        args += ["--layer-score-lr-scale", lr_scale] if lr_scale else []
    save = os.path.join(a.work, task, model)
    print(f"[{task}] {model}: {updates} updates of {bsz} examples", flush=True)
    t0 = time.time()
    fairseq_train(a, [*common, *args, "--save-dir", save], save + ".log")
    pred, gold = predict(os.path.join(save, "checkpoint_last.pt"), data)
    r = {**scores(pred, gold), "train_s": round(time.time() - t0), "updates": updates}
    print(f"[{task}] {model}: dev accuracy {r['accuracy']:.2f} (F1 {r['f1']:.2f}; majority "
          f"{r['majority_accuracy']:.2f}), {r['train_s']} s", flush=True)
    with open(done, "w", encoding="utf-8") as f:
        json.dump(r, f)
    return r


def run_task(a, task: str, pool) -> dict:
    data = os.path.join(a.work, task, "data")
    if not os.path.isdir(os.path.join(data, "label")):
        prepare_glue(task, os.path.join(a.glue_dir, task), data, vocab_size=a.vocab, log=print)
    futures = {"dense": pool.submit(classifier, a, task, data, "dense", None),
               "random_emb": pool.submit(classifier, a, task, data, "random_emb", None)}
    for lr_scale in a.lr_scales:
        futures[f"random_emb@{lr_scale}"] = pool.submit(classifier, a, task, data, f"random_emb@{lr_scale}", None,
                                                        lr_scale)
    mlm = pretrain_mlm(a, task, data)
    futures["pretrained_emb"] = pool.submit(classifier, a, task, data, "pretrained_emb", mlm)
    for lr_scale in a.lr_scales:
        futures[f"pretrained_emb@{lr_scale}"] = pool.submit(classifier, a, task, data, f"pretrained_emb@{lr_scale}",
                                                            mlm, lr_scale)
    return {m: futures[m].result() for m in futures}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("glue_dir")
    p.add_argument("--tasks", default="SST-2,MRPC,RTE")
    p.add_argument("--work", default="work/glue")
    add_parallel_args(p, jobs=2, threads=1)
    add_shape_args(p, vocab=8000)
    p.add_argument("--max-positions", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every update budget")
    p.add_argument("--layer-score-lr-scales", default="", help="comma-separated --layer-score-lr-scale values: "
                   "both supermask models again at each")
    a = p.parse_args(argv)
    a.lr_scales = [v for v in a.layer_score_lr_scales.split(",") if v]
    for v in a.lr_scales:
        try:
            ok = 0 < float(v) < float("inf")
        except ValueError:
            ok = False
        if not ok:
            p.error(f"--layer-score-lr-scales: {v!r} is not a positive number")
    tasks = [t for t in a.tasks.split(",") if t]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        p.error(f"--tasks: unknown {bad}; allowed: {', '.join(TASKS)}")
    if not 0 < a.scale <= 100:
        p.error(f"--scale {a.scale} must lie in (0, 100]")
    try:
        if not os.path.isdir(a.glue_dir):
            raise ConfigError(f"GLUE directory {a.glue_dir!r} does not exist")
        t0, results = time.time(), {}
        with ThreadPoolExecutor(max(1, a.jobs)) as pool:
            for task in tasks:
                results[task] = run_task(a, task, pool)
    except ConfigError as e:
        print(f"glue_accuracy: error: {e}", file=sys.stderr)
        return 1
    rows = []
    print(f"\n{'task':>6} {'model':>20} {'dev acc':>8} {'F1':>6} {'majority':>9} {'ratio to dense':>15}")
    for task, res in results.items():
        dense = res["dense"]["accuracy"]
        for model, r in res.items():
            r["ratio_to_dense"] = round(r["accuracy"] / dense, 4) if dense else None
            f1 = f"{r['f1']:.2f}" if BUDGET[task][2] else "-"
            print(f"{task:>6} {model:>20} {r['accuracy']:>8.2f} {f1:>6} {r['majority_accuracy']:>9.2f} "
                  f"{r['ratio_to_dense']:>15.3f}")
            rows.append({"task": task, "model": model, **{k: r[k] for k in ("accuracy", "f1", "majority_accuracy",
                                                                              "ratio_to_dense", "updates", "train_s")}})
    with open(os.path.join(a.work, "glue.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(json.dumps({"seconds": int(time.time() - t0), "shape": [a.layers, a.dim, a.ffn, a.heads],
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
