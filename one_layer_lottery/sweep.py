"""Collect a Hydra multirun sweep: BLEU (translation) or dev accuracy (sentence classification, the paper's
Figs. 6-7) of every run's last checkpoint into a CSV, and a mean ± std plot.

    python -m one_layer_lottery.sweep SWEEP_DIR DATA_DIR --csv results.csv --png results.png [--x model.remaining_ratio]
"""

import argparse
import csv
import glob
import os
import statistics
import subprocess
import sys
from collections import defaultdict

import yaml

from . import data
from .errors import ConfigError, run_main
from .io import atomic_path, save_figure


def runs(sweep_dir: str):
    """(overrides dict, checkpoint path) of every finished job of a sweep."""
    for job in sorted(glob.glob(os.path.join(sweep_dir, "*", ".hydra", "overrides.yaml"))):
        job_dir = os.path.dirname(os.path.dirname(job))
        with open(job, encoding="utf-8") as f:
            overrides = dict(o.split("=", 1) for o in yaml.safe_load(f) if "=" in o)
        ckpt = os.path.join(job_dir, "ckpt", "checkpoint_last.pt")
        if os.path.exists(ckpt):
            yield {k: v for k, v in overrides.items()
                   if k not in ("task.data", "common.user_dir", "checkpoint.save_dir")}, ckpt


def evaluate(ckpt: str, data_dir: str, bin_dir: str | None = None, reference: str | None = None) -> float:
    """Detokenized sacreBLEU of a checkpoint on the test split of a prepared directory (or of `bin_dir`,
    scored against `reference`): beam 5, as every recipe here."""
    binary = os.path.join(os.path.dirname(sys.executable), "fairseq-generate")
    r = subprocess.run([binary, bin_dir or os.path.join(data_dir, "bin"), "--user-dir",
                        os.path.join(os.path.dirname(os.path.abspath(__file__))), "--path", ckpt, "--beam", "5",
                        "--batch-size", "128", "--required-batch-size-multiple", "1", "--max-len-a", "1.2",
                        "--max-len-b", "10", "--remove-bpe", "sentencepiece"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise ConfigError(f"fairseq-generate failed on {ckpt}: {r.stderr.strip().splitlines()[-1:]}")
    reference = reference or os.path.join(data_dir, "raw", f"test.{_target_lang(data_dir)}")
    return data.bleu(data.read_hypotheses(r.stdout), data.read_lines(reference))[0]


def score(ckpt: str, data_dir: str) -> tuple[str, float]:
    """("bleu", test BLEU) of a translation checkpoint; ("accuracy", dev accuracy) of a sentence classifier
    (a GLUE directory: DATA_DIR/input0, DATA_DIR/label)."""
    if os.path.isdir(os.path.join(data_dir, "label")):
        from .classify import predict, scores

        return "accuracy", scores(*predict(ckpt, data_dir))["accuracy"]
    return "bleu", evaluate(ckpt, data_dir)


def _target_lang(data_dir: str):
    from fairseq.data.data_utils import infer_language_pair

    return infer_language_pair(os.path.join(data_dir, "bin"))[1]


def plot(rows, x: str, png: str, metric: str = "bleu") -> None:
    from .io import pyplot

    plt = pyplot()

    groups = defaultdict(lambda: defaultdict(list))
    varying = {k for k in rows[0] if len({r.get(k) for r in rows}) > 1}  # constant settings make no label
    for r in rows:
        label = ", ".join(f"{k.split('.')[-1].lstrip('_')}={v}" for k, v in sorted(r.items())
                          if k in varying and k not in (x, metric, "checkpoint") and not k.endswith("seed"))
        groups[label or "runs"][float(r[x])].append(float(r[metric]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in sorted(groups.items()):
        xs = sorted(pts)
        means = [statistics.mean(pts[v]) for v in xs]
        stds = [statistics.pstdev(pts[v]) for v in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xlabel(x.split(".")[-1])
    ax.set_ylabel("BLEU (detokenized sacreBLEU)" if metric == "bleu" else "dev accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir")
    p.add_argument("data_dir")
    p.add_argument("--csv", required=True)
    p.add_argument("--png")
    p.add_argument("--x", default="model.remaining_ratio", help="the swept value on the plot's x axis")
    return run_main("one_layer_lottery.sweep", collect, p.parse_args())


def collect(a) -> None:
    rows, metric = [], "bleu"
    for overrides, ckpt in runs(a.sweep_dir):
        metric, value = score(ckpt, a.data_dir)
        rows.append({**overrides, "checkpoint": ckpt, metric: round(value, 2)})
        print(f"[sweep] {overrides} {metric} {rows[-1][metric]}", flush=True)
    if not rows:
        raise ConfigError(f"no finished runs under {a.sweep_dir!r}")
    keys = sorted({k for r in rows for k in r})
    with atomic_path(a.csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    if a.png and all(a.x in r for r in rows):
        plot(rows, a.x, a.png, metric)
    print(f"[sweep] {len(rows)} runs -> {a.csv}" + (f", {a.png}" if a.png else ""))


if __name__ == "__main__":
    sys.exit(main())
