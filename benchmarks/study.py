"""The converged study: every model trained to convergence, tuned and selected on validation, several seeds.

    python benchmarks/study.py RAW_DIR [--parts tune,core,width,followup,prune] [--work work/study] [--jobs 2] [--threads 1]
    python benchmarks/study.py RAW_DIR --status        # where every run stands, with an ETA; launches nothing
    python benchmarks/study.py RAW_DIR --report        # the tables and plots from what has finished (partial rows
                                                       # marked; each row against dense, and PAIRS against each
                                                       # other): WORK/report.md, report.json, curves.png, bytes.png
    python benchmarks/study.py RAW_DIR --publish models/multi30k-de-en   # the converged models a user would try

The protocol (one for every run): fairseq-train validates every --eval-every updates with fairseq's own BLEU
validation (--eval-bleu, beam 5, sentencepiece removed, detokenized sacreBLEU on the `val` split), keeps the best
checkpoint by validation BLEU and stops after --patience validations without a better one, or at --cap updates
(or where fairseq stops it on a non-finite gradient: it diverged, its validations standing).
The test split is scored once, with fairseq-generate and the same generation settings, on the checkpoint chosen on
validation; its hypotheses are kept for the paired bootstrap.

Parts:
  tune   successive halving per family on seed 1: --grid settings train to --stages' first budget, the best half
         (by validation BLEU) to the next, the winner to convergence
  core   the tuned dense model, the one-layer masks-only model and the one-layer model on the same seed's converged
         dense embeddings (frozen; and masked, the authors' default, on 2 seeds); 3 seeds
  width  masks-only with a multicoated mask, masks-only at twice the width, dense at an eighth, a quarter, half and
         twice the width (the byte frontier down to the artifact's bytes), the standard supermask (a random layer
         per depth); 2 seeds. Below the benchmark width dense's dropout is chosen again (0.3, 0.1, 0; seed 1 of
         each to convergence, the best on validation alone scored on test and trained on seed 2)
  followup  where masks-only misses its target, what the ablation points to, on top of the tuned setting: k annealed
         from 1 (gradual sparsity), a later-decaying score learning rate (a longer warmup under inverse_sqrt) and
         twice the grid's top learning rate; and for the same effort, dense at twice its grid's top learning rate;
         seed 1 of each to convergence, then per family the best of them and the tuned setting on validation BLEU;
         if a variant wins, it alone is scored on test and trains seeds 2 and 3 (unselected variants never see
         test); a chosen dense variant is a second baseline the supermask rows are compared with
  prune  trained-weight pruning at every --kept fraction, with the tuned dense recipe and the same early stopping:
         magnitude pruning per tensor (a cubic ramp over --prune-ramp, after dense's warmup; validation, and so the
         checkpoint chosen, starts where the ramp ends) and the stabilized lottery ticket (the converged dense
         model's magnitude mask over its weights at --rewind-update, retrained with the mask fixed), against the
         one-layer masks-only supermask at the same k; `one-layer-lottery analyze` compares seed 1's at k = 0.5
Everything lives under WORK/runs/<run>/: an interrupted command continues where it stopped (a run resumes from its
last checkpoint; a run still training when its runner stopped is adopted by the next runner), finished runs are
reused. With --ledger DIR (the project keeps benchmarks/study_runs/multi30k, committed each session) every
finished run's small files are also copied to DIR, and a work directory that lacks them gets them back: the study
survives the loss of the machine that trained it, its finished rows intact; a run that reads a restored run's
checkpoint (a pre-trained-embedding row, a ticket) waits for RUN.regen, that run trained again on its seed to the
update chosen on validation, stopping and resuming where the original's launches did (fairseq draws a later epoch's
batches anew on a resume), its validations compared with the ledger's. Runs train --jobs at a time on
--threads threads each. Every converged dense model is also scored in int8
(torch's dynamic quantization, evaluated as quantized), and in int8 with its embedding tables rounded to int8 too
(one fp16 scale a row), for the byte frontier; every supermask model is exported
and its artifact's bytes counted; a pruned model's bytes are its kept values in fp16 and a bit a position.
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from common import (
    GENERATION,
    ROOT,
    add_corpus_args,
    add_parallel_args,
    add_shape_args,
    artifact_bytes,
    command,
    generate,
    pruned,
    read_json,
    run_guarded,
    thread_env,
    write_json,
)

from one_layer_lottery import data
from one_layer_lottery.errors import ConfigError
from one_layer_lottery.io import write_text

VALID = re.compile(r"valid on 'valid' subset \|.*\| bleu ([\d.]+) \|.*\| num_updates (\d+)")
SAVED = re.compile(r"Saved checkpoint .*\(epoch \d+ @ (\d+) updates")
INNER = re.compile(r"\| train_inner \|.*\bnum_updates=(\d+)")  # every --log-interval updates
EARLY_STOP = "early stop since valid performance hasn't improved"
# fairseq's fp32 trainer raises this on a non-finite gradient norm (it saves crash.pt and exits): the run has diverged
DIVERGED = "FloatingPointError: gradients are Nan/Inf"

# family: (fairseq-train arguments every setting shares, the tuning grid: setting name -> its arguments)
FAMILIES = {
    "dense": (["--arch", "transformer", "--optimizer", "adam", "--warmup-updates", "400", "--weight-decay", "0.0001"],
              {f"lr{lr}-d{d}": ["--lr", lr, "--dropout", d]
               for d in ("0.1", "0.3") for lr in ("5e-4", "1e-3", "2e-3")}),
    "mask": (["--arch", "one_layer_supermask_transformer_tiny", "--optimizer", "masked_adam", "--warmup-updates",
              "200"],
             {f"lr{lr}-d{d}-c{c}": ["--lr", lr, "--dropout", d, "--clip-norm", c]
              # masks-only score gradients have a norm of 0.08-0.16 at this shape (fairseq's gnorm, logged from
              # update 100 on): a clip at 0.5 never binds (clip=0 % of updates; it trained update for update as no
              # clip), so the clip setting is 0.05, which binds throughout
              for lr, d, c in (("4e-3", "0.1", "0"), ("4e-3", "0.1", "0.05"), ("4e-3", "0", "0"),
                               ("8e-3", "0.1", "0"), ("8e-3", "0", "0"), ("2e-3", "0", "0"))}),
}
# row: (label, family whose tuned setting it takes, width multiplier, extra arguments, seeds, part)
ROWS = {
    "dense": ("dense Transformer, tuned", "dense", 1, [], (1, 2, 3), "core"),
    "masks_only": ("one-layer supermask, masked random embeddings (1 mask bit a weight)", "mask", 1, [], (1, 2, 3),
                   "core"),
    "pretrained_frozen": ("one-layer supermask on the same seed's dense embeddings, frozen", "mask", 1,
                          ["--pretrained-embeddings", "{dense}"], (1, 2, 3), "core"),
    "pretrained_masked": ("one-layer supermask on the same seed's dense embeddings, masked (authors' default)",
                          "mask", 1, ["--pretrained-embeddings", "{dense}", "--pretrained-embeddings-mode", "masked"],
                          (1, 2), "core"),
    "coats": ("one-layer masks-only, multicoated mask (inner coat 0.25: 1.5 mask bits a weight)", "mask", 1,
              ["--multicoat-ratios", "0.25"], (1, 2), "width"),
    "masks_only_wide": ("one-layer masks-only at twice the width", "mask", 2, [], (1, 2), "width"),
    "standard": ("standard supermask (a random layer per depth), masks-only", "mask", 1,
                 ["--arch", "supermask_transformer_tiny"], (1, 2), "width"),
    "dense_half": ("dense Transformer at half the width", "dense", 0.5, [], (1, 2), "width"),
    "dense_wide": ("dense Transformer at twice the width", "dense", 2, [], (1, 2), "width"),
    # the byte frontier down to the masks-only artifact's bytes: at half the width a dense model still stores about
    # 2 MB (its 6,000-word tables dominate); at an eighth (16/32) about 0.4 MB, the artifact's (added 2026-12-05,
    # before any width row had finished)
    "dense_quarter": ("dense Transformer at a quarter of the width", "dense", 0.25, [], (1, 2), "width"),
    "dense_eighth": ("dense Transformer at an eighth of the width", "dense", 0.125, [], (1, 2), "width"),
}
# rows whose dropout is chosen again at their own width, on validation with seed 1 (row: variant -> flags on top of
# the family's tuned setting; "" is that setting itself): dense's grid picked dropout 0.3 at the benchmark width;
# narrower, it starves the model (training nll at or above validation nll: half the width 2.50 against 2.47; an
# eighth still 5.7 at 3,000 updates). Seed 2 trains with the winner, and only the winner is scored on test (added
# 2026-12-05 09:05-09:10 UTC; at half the width seed 1 had been scored with 0.3, the choice reads validation only)
RETUNED = {row: {"d0.1": ["--dropout", "0.1"], "d0": ["--dropout", "0"]}
           for row in ("dense_half", "dense_quarter", "dense_eighth")}
# masks-only at twice the width: the family's learning rate (8e-3, tuned at the benchmark width) does not start
# there (seed 1's training nll 8.4 bits, the unigram's, and validation BLEU 0.01 after 500 updates, where every
# benchmark-width seed had 22-23; scores are initialised 1/sqrt(fan-in) wide, so the same Adam step flips more of a
# wider model's masks), so its learning rate is chosen again at its width among the family grid's three, the same
# number of settings the narrow dense rows get (added 2026-12-05 18:50 UTC, after seed 1 had trained 900 updates)
RETUNED["masks_only_wide"] = {"lr4e-3": ["--lr", "4e-3"], "lr2e-3": ["--lr", "2e-3"]}
# RETUNED rows whose candidates train to the family tuning's first halving budget (--stages) and are chosen there:
# only the best on validation up to it trains on to convergence (a wide run costs about 5 CPU hours; the narrow
# dense rows' candidates train to convergence)
STAGED = ("masks_only_wide",)
# part followup: variants of a family's tuned setting (row: label, family, extra arguments), each family's chosen
# on validation against its tuned setting
FOLLOWUPS = {
    "followup_anneal_k": ("one-layer masks-only, k annealed from 1 over the first 1,000 updates (cubic)", "mask",
                          ["--ratio-anneal-updates", "1000"]),
    "followup_warmup1000": ("one-layer masks-only, warmup 1,000 (the score lr decays later: 2.2x at 5,000)", "mask",
                            ["--warmup-updates", "1000"]),
    # added 2026-12-07 19:05 UTC: the tuned lr, 8e-3, is the top of its grid (2e-3, 4e-3, 8e-3 rose 27.22, 29.22,
    # 30.05 by 1,500) and masks-only underfits; fairseq takes the last --lr
    "followup_lr1.6e-2": ("one-layer masks-only, lr 1.6e-2 (twice its tuning grid's top)", "mask",
                          ["--lr", "1.6e-2"]),
    # added 2026-12-07 21:40 UTC, the same effort for the baseline: dense's tuned lr, 2e-3, is the top of its grid
    # too (5e-4, 1e-3, 2e-3 rose 22.46, 29.28, 34.96 by 1,500 at dropout 0.3); chosen, it is the baseline the
    # report's ratios are read against as well
    "followup_dense_lr4e-3": ("dense Transformer, lr 4e-3 (twice its tuning grid's top)", "dense", ["--lr", "4e-3"]),
}
# each family's tuned setting as the follow-up choice names it (its core row)
TUNED_ROW = {"mask": "masks_only", "dense": "dense"}
# rows whose seed 1 starts before the part's other seed-1 runs: masks-only at twice the width takes about 1.8 s
# an update (some 5 CPU hours to converge) and decides the last undecided target of the issue; started first, it
# trains beside the narrow dense rows instead of after them (added 2026-12-05 18:15 UTC; this moves when a figure
# lands, not the figure)
EARLY_ROWS = ("masks_only_wide",)
FOLLOWUP_SEEDS = (1, 2, 3)  # the chosen variant's, as the core row it would replace
PARTS = ("tune", "core", "width", "followup", "prune")
TICKET = "{ticket}"  # in a row's arguments: retrain a lottery ticket of the same seed's converged dense run
ONE_LAYER_K = 0.5  # the one-layer arch's default --remaining-ratio: at this k the prune part's supermask is masks_only


def prune_rows(a) -> dict:
    """The prune part's rows (ROWS' shape) for every --kept fraction: magnitude pruning and the lottery ticket of the
    tuned dense recipe, and the one-layer masks-only supermask at that k (at ONE_LAYER_K that is the core row)."""
    start, end = a.prune_ramp
    rows = {}
    for k, n in a.kept:
        seeds = tuple(range(1, n + 1))
        keep = ["--arch", "pruned_transformer", "--remaining-ratio", f"{k:g}"]
        rows[f"magnitude_k{k:g}"] = (
            f"magnitude pruning of the tuned dense recipe, per tensor, ramp {start:,}-{end:,} updates, k={k:g}",
            "dense", 1, [*keep, "--prune-start-update", str(start), "--prune-end-update", str(end),
                         "--validate-after-updates", str(end)], seeds, "prune")
        label = f"stabilized lottery ticket (converged dense mask, update-{a.rewind_update:,} weights), k={k:g}"
        rows[f"ticket_k{k:g}"] = (label, "dense", 1, [*keep, TICKET], seeds, "prune")
        if k != ONE_LAYER_K:
            rows[f"masks_only_k{k:g}"] = (f"one-layer supermask, masks only, k={k:g}", "mask", 1,
                                          ["--remaining-ratio", f"{k:g}"], seeds, "prune")
    return rows


def all_rows(a) -> dict:
    return {**ROWS, **{row: (label, family, 1, extra, FOLLOWUP_SEEDS, "followup")
                       for row, (label, family, extra) in FOLLOWUPS.items()}, **prune_rows(a)}


@dataclasses.dataclass
class Run:
    """One fairseq-train run and the budget asked of it now."""

    name: str
    args: list
    max_update: int
    patience: int
    priority: tuple
    seed: int = 1
    width: float = 1
    needs: tuple = ()  # runs that must be complete first (their checkpoints are read)
    ticket: tuple = ()  # a lottery ticket's (final dense checkpoint, directory of the weights to rewind to, k)
    scored: bool = True  # scored on test once converged (not a candidate that was not chosen)
    pending: bool = False  # a candidate whose choice on validation is not made yet: not final, kept off the ledger
    stops: tuple = ()  # a run trained again: the updates its original's later launches resumed from (replay_stop)

    @property
    def dir(self) -> str:
        return os.path.join(WORK, "runs", self.name)


WORK = "work/study"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_args(p, "work/study")
    add_shape_args(p)
    add_parallel_args(p, jobs=2, threads=1)
    p.add_argument("--parts", default="tune,core", help=f"comma-separated, of: {', '.join(PARTS)}")
    p.add_argument("--stages", default="1500:3,4000:1",
                   help="successive halving: BUDGET:KEPT,... (validation BLEU at BUDGET updates keeps the best KEPT "
                        "settings of a family); the last kept setting trains on to convergence")
    p.add_argument("--grid", default="", help="only these settings of each family's grid (comma-separated names; "
                                              "default: all)")
    p.add_argument("--eval-every", type=int, default=500, help="updates between validations (and saves)")
    p.add_argument("--patience", type=int, default=4, help="validations without a better BLEU before a run stops")
    p.add_argument("--cap", type=int, default=20000, help="the most updates any run trains")
    p.add_argument("--seeds", type=int, default=0, help="at most this many seeds a row (default: each row's own)")
    p.add_argument("--kept", default="0.5:2,0.1:1",
                   help="part prune: the fractions of the weights kept, each with its number of seeds (K:SEEDS,...)")
    p.add_argument("--prune-ramp", default="500:3000",
                   help="part prune: magnitude pruning's cubic ramp, START:END updates (after dense's 400 warmup "
                        "updates, while the learning rate is still high)")
    p.add_argument("--rewind-update", type=int, default=500,
                   help="part prune: the update lottery tickets rewind to (the tuned dense recipe, same seed, "
                        "trained to it again with its weights saved there)")
    p.add_argument("--ledger", default="", metavar="DIR",
                   help="keep every finished run's small files (the validations of its log, its CPU time, test "
                        "result and hypotheses; the artifact of a masks-only or coated seed) in DIR, a folder to "
                        "commit, and restore them from there into a work directory that lacks them: a study resumed "
                        "on a fresh machine keeps what it had finished (default: none)")
    p.add_argument("--status", action="store_true", help="print where every run stands and exit")
    p.add_argument("--report", action="store_true", help="write the tables and plots from finished runs and exit")
    p.add_argument("--publish", metavar="DIR", help="copy the converged models a user would try into DIR and exit")
    a = p.parse_args(argv)
    a.parts = [x for x in a.parts.split(",") if x]
    bad = [x for x in a.parts if x not in PARTS]
    if bad or not a.parts:
        p.error(f"--parts {','.join(a.parts)!r}: unknown {bad}; allowed: {', '.join(PARTS)}")
    try:
        a.stages = [(int(b), int(k)) for b, k in (s.split(":") for s in a.stages.split(","))]
    except ValueError:
        p.error(f"--stages {a.stages!r}: expected BUDGET:KEPT,... e.g. 1500:3,4000:1")
    if any(b < 1 or k < 1 for b, k in a.stages) or a.stages[-1][1] != 1 or \
            [b for b, _ in a.stages] != sorted({b for b, _ in a.stages}):
        p.error(f"--stages {a.stages}: budgets increasing and positive, kept counts positive, the last one 1")
    try:
        a.kept = [(float(k), int(n)) for k, n in (x.split(":") for x in a.kept.split(",") if x)]
        a.prune_ramp = tuple(int(x) for x in a.prune_ramp.split(":"))
    except ValueError:
        p.error(f"--kept {a.kept!r} / --prune-ramp {a.prune_ramp!r}: expected K:SEEDS,... (e.g. 0.5:2,0.1:1) and "
                f"START:END (e.g. 500:3000)")
    if any(not 0 < k < 1 or n < 1 for k, n in a.kept) or len({k for k, _ in a.kept}) != len(a.kept):
        p.error(f"--kept {a.kept}: each fraction in (0, 1), once, with at least 1 seed")
    if len(a.prune_ramp) != 2 or not 0 <= a.prune_ramp[0] <= a.prune_ramp[1] or a.rewind_update < 1:
        p.error(f"--prune-ramp {a.prune_ramp} must be START:END with 0 <= START <= END; --rewind-update "
                f"{a.rewind_update} at least 1")
    names = {n for _, grid in FAMILIES.values() for n in grid}
    a.grid = [x for x in a.grid.split(",") if x]
    if [x for x in a.grid if x not in names]:
        p.error(f"--grid: unknown {[x for x in a.grid if x not in names]}; allowed: {', '.join(sorted(names))}")
    for v, name in ((a.jobs, "--jobs"), (a.threads, "--threads"), (a.eval_every, "--eval-every"),
                    (a.patience, "--patience"), (a.cap, "--cap")):
        if v < 1:
            p.error(f"{name} {v} must be at least 1")
    return a


# ---------------------------------------------------------------- reading a run's state from its files

def validations(run: Run) -> list[tuple[int, float]]:
    """(update, validation BLEU) of every validation the run's log holds, in order."""
    log = os.path.join(run.dir, "train.log")
    if not os.path.exists(log):
        return []
    with open(log, encoding="utf-8") as f:
        seen = {int(u): float(b) for b, u in VALID.findall(f.read())}
    return sorted(seen.items())


def best(vals: list[tuple[int, float]], upto: int | None = None) -> tuple[int, float] | None:
    """The best validation up to an update: the latest of equals, as fairseq's checkpoint_best.pt holds it (fairseq
    copies a checkpoint there whenever its score is at least the best so far)."""
    vals = [v for v in vals if upto is None or v[0] <= upto]
    return max(vals, key=lambda v: (v[1], v[0])) if vals else None


def since_improvement(vals: list[tuple[int, float]]) -> int:
    """Validations since the score last strictly improved (fairseq's --patience counts these)."""
    top, count = None, 0
    for _, b in vals:
        if top is None or b > top:
            top, count = b, 0
        else:
            count += 1
    return count


def stopped(vals: list[tuple[int, float]], patience: int) -> bool:
    """Whether patience ran out: `patience` validations in a row without a strictly better score."""
    return bool(vals) and since_improvement(vals) >= patience


def trained(run: Run) -> int:
    """The update the run would resume from: its last validation or save (a magnitude-pruning run also saves at each
    epoch's end, see epoch_saves, and validates only from the end of its ramp)."""
    vals = validations(run)
    last = vals[-1][0] if vals else 0
    log = os.path.join(run.dir, "train.log")
    if os.path.exists(log):
        with open(log, encoding="utf-8") as f:
            last = max([last, *map(int, SAVED.findall(f.read()))])
    return last


def logged_update(run: Run) -> int:
    """The last update the run's latest launch has logged (its train_inner lines, every --log-interval updates), 0
    before any: past trained(run), a run in flight's progress between its saves (what a session's end would lose)."""
    latest = 0
    log = os.path.join(run.dir, "train.log")
    if os.path.exists(log):
        with open(log, encoding="utf-8") as f:
            for line in f:
                if LAUNCH.match(line):
                    latest = 0  # a relaunch resumes from its last save, not from where the last one logged
                elif m := INNER.search(line):
                    latest = int(m.group(1))
    return latest


def saved(run: Run) -> bool:
    """Whether the checkpoint of the run's last validation has been written: fairseq logs "Saved checkpoint" once it
    and its copies (checkpoint_best.pt, checkpoint_last.pt) are on disk; other lines may follow at once (an epoch
    that ends just after the validation)."""
    with open(os.path.join(run.dir, "train.log"), encoding="utf-8") as f:
        saves = set(map(int, SAVED.findall(f.read())))
    return trained(run) in saves


LAUNCH = re.compile(r"^# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d fairseq-train ")


def resume_points(run: Run) -> list[int]:
    """The updates the run's later launches resumed from: the last save before each launch's line in its log."""
    points, last = set(), 0
    log = os.path.join(run.dir, "train.log")
    if not os.path.exists(log):
        return []
    with open(log, encoding="utf-8") as f:
        for line in f:
            if LAUNCH.match(line):
                points.add(last)
            elif m := SAVED.search(line):
                last = int(m.group(1))
    return sorted(points - {0})


def complete(run: Run) -> bool:
    vals = validations(run)
    return bool(vals) and (vals[-1][0] >= run.max_update or stopped(vals, run.patience)) or diverged(run)


def converged(run: Run, a) -> bool:
    vals = validations(run)
    return bool(vals) and (vals[-1][0] >= a.cap or stopped(vals, a.patience)) or diverged(run)


def diverged(run: Run) -> bool:
    """Whether fairseq stopped the run on a non-finite gradient (DIVERGED in its log). Such a run ends there, as
    patience would end it: its validations stand and its best checkpoint is its choice (a setting too hot to train
    is a result, not a failure; launched again it would resume from its last save towards the same place)."""
    log = os.path.join(run.dir, "train.log")
    if not os.path.exists(log):
        return False
    with open(log, encoding="utf-8", errors="replace") as f:
        return DIVERGED in f.read()


def valid_score(run: Run, upto: int | None = None) -> float:
    """A run's best validation BLEU up to an update, for a choice between runs: -1 (below any) where it has none (it
    diverged before its first validation)."""
    top = best(validations(run), upto)
    return top[1] if top else -1.0


# ---------------------------------------------------------------- the plan

def shape(a, width: float) -> list:
    dim, ffn = int(a.dim * width), int(a.ffn * width)
    return ["--encoder-layers", a.layers, "--decoder-layers", a.layers, "--encoder-embed-dim", dim,
            "--decoder-embed-dim", dim, "--encoder-ffn-embed-dim", ffn, "--decoder-ffn-embed-dim", ffn,
            "--encoder-attention-heads", a.heads, "--decoder-attention-heads", a.heads,
            "--share-decoder-input-output-embed"]


def setting_args(family: str, setting: str) -> list:
    base, grid = FAMILIES[family]
    return [*base, *grid[setting]]


def grid(a, family: str) -> list[str]:
    return [s for s in FAMILIES[family][1] if not a.grid or s in a.grid]


def tuning(a, family: str) -> tuple[list[Run], str | None]:
    """The family's tuning runs at the budgets they have earned so far, and its winner once it is known."""
    alive = grid(a, family)
    if not alive:
        return [], None
    runs = {s: Run(f"{family}-{s}-s1", setting_args(family, s), 0, a.patience, (0, 0)) for s in alive}
    order = {s: n for n, s in enumerate(alive)}  # the families' settings alternate: both advance together
    for i, (budget, kept) in enumerate(a.stages):
        for s in alive:
            runs[s].max_update, runs[s].priority = budget, (0, i, order[s])
        if not all(complete(runs[s]) for s in alive):
            return list(runs.values()), None
        ranked = sorted(alive, key=lambda s: -valid_score(runs[s], budget))
        alive = ranked[:kept]
    winner = alive[0]
    runs[winner].max_update, runs[winner].priority = a.cap, (0, len(a.stages), 0)
    return list(runs.values()), winner


def plan(a) -> tuple[list[Run], dict]:
    """Every run the asked parts need now (later ones appear as earlier ones finish) and the families' winners."""
    runs, winners = [], {}
    for family in FAMILIES:
        fam_runs, winners[family] = tuning(a, family)
        runs += fam_runs
    chosen = {family: followup_choice(a, winners, family) for family in FAMILIES}
    for part_no, part in enumerate(PARTS[1:], 1):
        if part not in a.parts:
            continue
        for row, (_, family, width, extra, seeds, row_part) in all_rows(a).items():
            if row_part != part or winners[family] is None:
                continue
            if part == "followup" and row != chosen[family]:
                seeds = seeds[:1]
            variant = ""
            if row in RETUNED:  # its seed-1 candidates, unscored but the chosen one; seed 2 waits for the choice
                variant = retune_choice(a, row)
                base = setting_args(family, winners[family]) + extra
                # queued before the part's other seed-1 runs, narrowest first (the ledger carries a narrow run in
                # flight to the next machine, not half the width's), and at a width the other dropouts (with less
                # dropout a run converges sooner) before the family's setting; an EARLY_ROWS row's first of all
                runs += [Run(retuned_name(row, v, 1), base + flags + ["--seed", 1], retune_budget(a, row), a.patience,
                             queue(part_no, 1, (-2 if row in EARLY_ROWS else width - 2) + (0.01 if v == "" else 0)),
                             1, width, scored=False, pending=variant is None)
                         for v, flags in {"": [], **RETUNED[row]}.items() if v != variant]
                if variant is None:
                    continue
                extra = extra + RETUNED[row].get(variant, [])
            for seed in seeds[:a.seeds or None]:
                name = retuned_name(row, variant, seed)
                needs, ticket = (), ()
                if width == 1 and not extra:  # the tuned setting itself: seed 1 is the tuning run
                    name = f"{family}-{winners[family]}-s{seed}"
                args = setting_args(family, winners[family]) + extra
                if any("{dense}" in x for x in extra) or TICKET in extra:
                    if winners["dense"] is None:
                        continue
                    dense = tuned_run(a, "dense", winners["dense"], seed, part_no)
                    runs.append(dense)  # where another part trains it too, the first of the same name is kept
                    # a lost checkpoint is trained again only for a run still to train, in that run's turn
                    done = complete(Run(name, [], a.cap, a.patience, ()))
                    best_ckpt, _, source = checkpoint_of(a, dense, runs, queue(part_no, seed), done)
                    args = [x.replace("{dense}", best_ckpt) for x in args if x != TICKET]
                    needs = (dense.name, source.name)
                    if TICKET in extra:
                        rewind = rewind_run(a, winners["dense"], seed, part_no)
                        runs.append(rewind)
                        _, rewind_dir, rewind_source = checkpoint_of(a, rewind, runs, queue(part_no, seed, -1), done)
                        k = float(extra[extra.index("--remaining-ratio") + 1])
                        needs, ticket = needs + (rewind.name, rewind_source.name), (best_ckpt, rewind_dir, k)
                # a dense frontier row's second seed follows its width's choice, ahead of the part's other seed-1
                # runs: a narrow dense run costs 2-3 CPU hours (the ledger carries it) and completes the row that
                # decides the byte frontier at the supermask artifacts' bytes (added 2026-12-05 15:25 UTC)
                narrow_second = row in RETUNED and width < 1 and seed > 1
                place = queue(part_no, 1, width - 2 + 0.02) if narrow_second else queue(part_no, seed)
                if row in EARLY_ROWS and seed == 1:
                    place = queue(part_no, 1, -2)
                runs.append(Run(name, args + ["--seed", seed], a.cap, a.patience, place, seed, width,
                                tuple(dict.fromkeys(needs)), ticket, part != "followup" or row == chosen[family],
                                part == "followup" and chosen[family] is None))
    unique = {}
    for r in runs:
        unique.setdefault(r.name, r)  # seed 1 of a tuned row is its family's tuning run
    return list(unique.values()), winners


def last_value(args: list, flag: str, default: str | None = None) -> str | None:
    """A flag's value as fairseq reads it: the last of its occurrences (`default` if it has none)."""
    return next((x for i, x in reversed(list(enumerate(args))) if i and args[i - 1] == flag), default)


def retuned_setting(winners: dict, row: str, variant: str | None) -> str:
    """What a RETUNED row's variant sets, as "dropout 0.1" or "lr 4e-3" (None, before the choice: its family's)."""
    family, flag = ROWS[row][1], next(iter(RETUNED[row].values()))[0]
    return f"{flag[2:]} {last_value(setting_args(family, winners[family]) + RETUNED[row].get(variant, []), flag)}"


def retune_budget(a, row: str) -> int:
    """The updates a RETUNED row's candidates train to before its choice: convergence (the cap), or a STAGED row's
    first halving budget."""
    return a.stages[0][0] if row in STAGED else a.cap


def retuned_name(row: str, variant: str, seed: int) -> str:
    return f"{row}-{variant}-s{seed}" if variant else f"{row}-s{seed}"


def retune_choice(a, row: str) -> str | None:
    """A RETUNED row's choice on validation: the variant ("" for the family's setting) whose seed-1 run validates
    best up to its budget (retune_budget; the family's setting on a tie); None until all of them have reached it
    (or converged)."""
    budget = retune_budget(a, row)
    runs = {v: Run(retuned_name(row, v, 1), [], budget, a.patience, ()) for v in ("", *RETUNED[row])}
    if not all(complete(r) for r in runs.values()):
        return None
    scores = {v: valid_score(r, budget) for v, r in runs.items()}
    return max(scores, key=lambda v: (scores[v], v == ""))


def followup_choice(a, winners: dict, family: str = "mask") -> str | None:
    """Part followup's choice on validation for a family: the variant (or TUNED_ROW's, the tuned setting) whose
    converged seed-1 run has the best validation BLEU (the tuned setting on a tie); None until all of them have
    converged."""
    candidates = followup_candidates(a, winners, family)
    if not candidates or not all(complete(r) for r in candidates.values()):
        return None
    scores = {row: valid_score(r) for row, r in candidates.items()}
    return max(scores, key=lambda row: (scores[row], row == TUNED_ROW[family]))


def out_of_the_running(a, run: Run, winners: dict) -> bool:
    """Whether a candidate that converged before its choice can no longer be chosen: a competitor that has reached
    its budget validates better already, or as well and wins the tie (the family's or the tuned setting). Such a
    candidate's weights are not kept in the ledger (a supermask's take some 19 MB)."""
    groups = [(followup_candidates(a, winners, family), None, TUNED_ROW[family]) for family in FAMILIES]
    groups += [({v: Run(retuned_name(row, v, 1), [], retune_budget(a, row), a.patience, ())
                 for v in ("", *RETUNED[row])}, retune_budget(a, row), "") for row in RETUNED]
    for group, budget, favoured in groups:
        mine = next((k for k, r in group.items() if r.name == run.name), None)
        if mine is None:
            continue
        scores = {k: (valid_score(r, budget), k == favoured) for k, r in group.items()
                  if k == mine or complete(r)}
        return any(score > scores[mine] for k, score in scores.items() if k != mine)
    return False


def standing_row(a, winners: dict, row: str) -> str:
    """The row that stands for a family's tuned row (TUNED_ROW's) where it is published: its follow-up, where one was
    chosen on validation over it; else the row itself."""
    family = next((f for f, tuned in TUNED_ROW.items() if tuned == row), None)
    chosen = followup_choice(a, winners, family) if family else None
    return chosen if chosen not in (None, row) else row


def followup_candidates(a, winners: dict, family: str = "mask") -> dict:
    """Part followup's seed-1 runs for a family by row, the tuned setting's (TUNED_ROW) first; {} without the part
    or without a variant of that family."""
    rows = [row for row, (_, fam, _) in FOLLOWUPS.items() if fam == family]
    if "followup" not in a.parts or winners.get(family) is None or not rows:
        return {}
    return {TUNED_ROW[family]: tuned_run(a, family, winners[family], 1, 0),
            **{row: Run(f"{row}-s1", [], a.cap, a.patience, ()) for row in rows}}


def queue(part_no: int, seed: int, sub: float = 0) -> tuple:
    """A run's place in the queue after tuning: the core rows, seed by seed, then every later part's seed 1 before
    any part's seed 2 (each row gets its first figure before its second seed trains; the one exception, the narrow
    dense rows' seed 2 right after their width's choice, is placed in `plan`)."""
    return min(part_no, 2), seed, part_no, sub


def tuned_run(a, family: str, setting: str, seed: int, part_no: int) -> Run:
    """The family's tuned setting trained to convergence on a seed (on seed 1, its tuning run)."""
    return Run(f"{family}-{setting}-s{seed}", setting_args(family, setting) + ["--seed", seed], a.cap, a.patience,
               queue(part_no, seed), seed)


def rewind_run(a, setting: str, seed: int, part_no: int) -> Run:
    """The tuned dense recipe on a seed trained again to --rewind-update, where it saves the weights its lottery
    tickets rewind to (the converged run kept no early checkpoint)."""
    return Run(f"dense_rewind-s{seed}", setting_args("dense", setting) + [
        "--arch", "pruned_transformer", "--save-weights-at-updates", str(a.rewind_update), "--seed", seed],
        a.rewind_update, a.patience, queue(part_no, seed, -1), seed)


# ---------------------------------------------------------------- training and scoring

def train_command(a, run: Run, bin_dir: str) -> list[str]:
    remaining = run.patience - since_improvement(validations(run))
    cmd = [command("fairseq-train"), bin_dir, *run.args, *shape(a, run.width),
           "--task", "translation", "--adam-betas", "(0.9,0.98)", "--lr-scheduler", "inverse_sqrt",
           "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
           "--max-tokens", a.max_tokens, "--max-update", replay_stop(run),
           "--eval-bleu", "--eval-bleu-args", json.dumps(GENERATION), "--eval-bleu-remove-bpe", "sentencepiece",
           "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
           "--patience", max(remaining, 1), "--save-interval-updates", a.eval_every,
           "--validate-interval-updates", a.eval_every,  # else a save at an epoch's end would go unvalidated
           "--keep-interval-updates", "1", "--no-epoch-checkpoints", "--save-interval", epoch_saves(run),
           "--validate-interval", "1000000", "--log-format", "simple", "--log-interval", "100",
           "--num-workers", "0", "--user-dir", os.path.join(ROOT, "one_layer_lottery"), "--save-dir", run.dir]
    if "--seed" not in run.args:
        cmd += ["--seed", run.seed]
    if run.ticket and not os.path.exists(os.path.join(run.dir, "checkpoint_last.pt")):  # later launches resume
        cmd += ["--restore-file", ticket_path(run), "--reset-optimizer", "--reset-lr-scheduler", "--reset-dataloader",
                "--reset-meters"]
    return [str(c) for c in cmd]


def epoch_saves(run: Run) -> int:
    """fairseq's --save-interval (epochs) for the run: 1 for a run that validates only after its pruning ramp (fairseq
    saves nothing at --save-interval-updates before --validate-after-updates, so a session ending in the ramp lost all
    of it: 2,700 updates of magnitude pruning seed 2 on 2026-12-07), else never (its saves come with validations).
    An epoch's end saves checkpoint_last.pt only: unvalidated, it never becomes checkpoint_best.pt."""
    return 1 if "--validate-after-updates" in run.args else 1000000


def ticket_path(run: Run) -> str:
    return os.path.join(run.dir, "ticket.pt")


def write_ticket(a, run: Run) -> None:
    """The run's lottery ticket (once): the converged dense checkpoint's magnitude mask over the rewind run's weights
    at --rewind-update (one_layer_lottery.pruning.write_ticket, what `one-layer-lottery ticket` runs)."""
    from one_layer_lottery.pruning import write_ticket as make

    if not os.path.exists(ticket_path(run)):
        final, rewind_dir, k = run.ticket
        make(rewind_dir, ticket_path(run), k, a.rewind_update, final=final)


class Job:
    """A fairseq-train process of one run: launched by this runner, or adopted from an earlier one (its pid file)."""

    def __init__(self, run: Run, pid: int, start: float, first: int, proc: subprocess.Popen | None = None):
        self.run, self.pid, self.start, self.first, self.proc, self.returncode = run, pid, start, first, proc, None
        self.cpu_s, self.written = None, 0.0

    def meter(self, every: float = 60) -> None:
        """Samples the process's CPU time (what /proc says it has used: paused time does not count) and writes it
        to the run's cpu.json at most every `every` seconds, so a run killed with its runner loses a minute at
        most."""
        cpu = process_cpu_seconds(self.pid)
        if cpu is not None:
            self.cpu_s = cpu
        if self.cpu_s is not None and time.time() - self.written >= every:
            path = os.path.join(self.run.dir, "cpu.json")
            segments = read_json(path) if os.path.exists(path) else {}
            segments[f"{self.pid}@{round(self.start)}"] = {"cpu_s": round(self.cpu_s, 1), "first": self.first,
                                                          "last": trained(self.run)}
            write_json(path, segments)
            self.written = time.time()

    def poll(self) -> int | None:
        if self.proc is not None:
            self.returncode = self.proc.poll()
        elif not _alive(self.pid, self.run.dir):
            self.returncode = 0  # an adopted process's exit status is unknown: the plan judges it by its log
        return self.returncode

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
        else:
            try:
                os.kill(self.pid, 15)
            except ProcessLookupError:
                pass
            while _alive(self.pid, self.run.dir):
                time.sleep(1)
        self.returncode = 0


def _alive(pid: int, run_dir: str) -> bool:
    """Whether a fairseq-train of this run directory is still running under this pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
    except OSError:
        return False
    return "fairseq-train" in cmdline and run_dir in cmdline


def launch(a, run: Run, bin_dir: str) -> Job:
    os.makedirs(run.dir, exist_ok=True)
    if run.ticket:
        write_ticket(a, run)
    cmd = train_command(a, run, bin_dir)
    with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as log:  # a resumed run adds to its log
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} fairseq-train {' '.join(cmd[1:])}\n")
        log.flush()
        # its own session: it outlives this runner, whose successor adopts it (pid file)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=thread_env(a.threads),
                                start_new_session=True)
    job = Job(run, proc.pid, time.time(), trained(run), proc)
    write_json(os.path.join(run.dir, "pid.json"), {"pid": job.pid, "start": job.start, "first": job.first})
    return job


def adopt(run: Run) -> Job | None:
    """The run's fairseq-train if an earlier runner started it and it still runs."""
    path = os.path.join(run.dir, "pid.json")
    if not os.path.exists(path):
        return None
    p = read_json(path)
    return Job(run, p["pid"], p["start"], p["first"]) if _alive(p["pid"], run.dir) else None


def account(a, job: Job) -> None:
    """Adds a finished launch's wall time (and threads) to the run's compute record."""
    with open(os.path.join(job.run.dir, "compute.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"start": round(job.start), "seconds": round(time.time() - job.start, 1),
                            "threads": a.threads, "updates_from": job.first, "updates_to": trained(job.run),
                            "exit": job.returncode}) + "\n")
    pid = os.path.join(job.run.dir, "pid.json")
    if os.path.exists(pid):
        os.unlink(pid)


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds a process has used so far (/proc/PID/stat); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, utime 14, stime 15
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_rate(run_dir: str) -> tuple[list[dict], float | None]:
    """A run's measured segments (cpu.json) and its measured CPU seconds an update (None before any segment has
    finished an update: a segment that has only started has spent CPU on no counted update yet)."""
    path = os.path.join(run_dir, "cpu.json")
    segments = list(read_json(path).values()) if os.path.exists(path) else []
    done = [x for x in segments if x["last"] > x["first"]]
    return segments, (sum(x["cpu_s"] for x in done) / sum(x["last"] - x["first"] for x in done) if done else None)


def measured_rate(a, width: float) -> float | None:
    """The median measured CPU seconds an update of the study's runs at this width (for runs not measured yet)."""
    rates = [r for run in plan(a)[0] if run.width == width and (r := _own_rate(run.dir)[1])]
    return statistics.median(rates) if rates else None


def _wall_rate(run_dir: str, per_thread: bool = False) -> float | None:
    """Wall seconds an update over the run's launches that trained (compute.jsonl), times their threads if
    `per_thread`; None without any."""
    path = os.path.join(run_dir, "compute.jsonl")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if r["updates_to"] > r["updates_from"]]
    done = sum(r["updates_to"] - r["updates_from"] for r in rows)
    return sum(r["seconds"] * (r["threads"] if per_thread else 1) for r in rows) / done if done else None


def compute(run_dir: str, updates: int, rate: float | None = None) -> tuple[float, float]:
    """(measured, estimated) CPU hours of a run's first `updates` updates. Measured: the CPU time of its
    fairseq-train processes (cpu.json). Estimated: the updates no measured process trained (trained before the
    runner measured CPU time, or by a process killed before its first sample), at the run's own measured CPU seconds
    an update, else at `rate` (the study's measured rate), else at the wall seconds an update of its launches
    (compute.jsonl; wall time counts pauses and contention, hence the last resort)."""
    segments, own = _own_rate(run_dir)
    measured = sum(x["cpu_s"] for x in segments)
    unmeasured = max(updates - sum(max(x["last"] - x["first"], 0) for x in segments), 0)
    rate = own or rate
    if rate is None:
        rate = _wall_rate(run_dir, per_thread=True) or 0.0
    return measured / 3600, unmeasured * rate / 3600


def cpu_hours(run_dir: str, updates: int, rate: float | None = None) -> tuple[float, str]:
    """A run's CPU hours and how to print them: "≈" in front where part of it is estimated (see compute)."""
    measured, estimated = compute(run_dir, updates, rate)
    return measured + estimated, f"{'≈' if estimated > 0 else ''}{measured + estimated:.1f}"


def scored_on_test(a, ckpt: str, prepared: str) -> tuple[list[str], list[str], tuple[float, str]]:
    """A checkpoint's test hypotheses (fairseq-generate, GENERATION's settings), the references, and (BLEU,
    sacreBLEU's signature)."""
    hyps = generate(ckpt, os.path.join(prepared, "bin"), threads=a.threads)
    refs = data.read_lines(os.path.join(prepared, "raw", f"test.{a.tgt}"))
    return hyps, refs, data.bleu(hyps, refs)


def score(a, run: Run, prepared: str) -> dict:
    """Test BLEU of the checkpoint chosen on validation, scored once; hypotheses kept for the bootstrap; the bytes
    it takes to store (the artifact of a supermask model; a dense model in fp16, and in int8 scored as such)."""
    vals = validations(run)
    chosen = best(vals)
    ckpt, bin_dir = os.path.join(run.dir, "checkpoint_best.pt"), os.path.join(prepared, "bin")
    hyps, refs, (bleu, signature) = scored_on_test(a, ckpt, prepared)
    write_text(os.path.join(run.dir, "test.hyp"), "".join(h + "\n" for h in hyps))
    out = {"run": run.name, "best_update": chosen[0], "valid_bleu": chosen[1], "test_bleu": round(bleu, 2),
           "updates": vals[-1][0],
           "stopped_by": "diverged" if diverged(run) else "patience" if stopped(vals, a.patience) else "cap",
           "signature": signature}
    measured, estimated = compute(run.dir, vals[-1][0], measured_rate(a, run.width))
    out.update(cpu_hours=round(measured + estimated, 2), cpu_hours_estimated=round(estimated, 2))
    if run.name.startswith(("magnitude", "ticket")):
        size, kept = pruned(ckpt)
        out.update(sparse_bytes=size, kept_fraction=round(kept, 4))
    elif run.name.startswith("dense"):
        out.update(dense_bytes(ckpt, bin_dir, refs, run.dir, a.threads))
    else:
        out.update(artifact_bytes(ckpt, os.path.join(run.dir, "model.olt")))
    write_json(os.path.join(run.dir, "result.json"), out)
    return out


def dense_bytes(ckpt: str, bin_dir: str, refs: list[str], run_dir: str, threads: int) -> dict:
    """fp16 bytes of a dense model, and its int8 forms (dynamic quantization; and that with the embedding tables
    in int8 as well): bytes and test BLEU, as quantized."""
    import torch
    from common import fp16_bytes, load_for_inference

    torch.set_num_threads(max(threads, 1))
    model, task = load_for_inference(ckpt, bin_dir)
    return {"fp16_bytes": fp16_bytes(model.state_dict()), **int8_form(model, task, refs, run_dir),
            **int8_form(model, task, refs, run_dir, tables=True)}


def int8_form(model, task, refs: list[str], run_dir: str, tables: bool = False) -> dict:
    """A dense model quantized (its linears dynamically; with `tables`, its embedding tables rounded to int8 first,
    in place), scored on test: its bytes and BLEU, its hypotheses kept for the bootstrap."""
    from common import int8_bytes, quantize_int8, quantize_tables_int8, translate_in_process

    saved = quantize_tables_int8(model) if tables else 0
    q = quantize_int8(model)
    hyps = translate_in_process(q, task)
    form = "int8emb" if tables else "int8"
    write_text(os.path.join(run_dir, f"test.{form}.hyp"), "".join(h + "\n" for h in hyps))
    return {f"{form}_bytes": int8_bytes(q) - saved, f"{form}_test_bleu": round(data.bleu(hyps, refs)[0], 2)}


def backfill_forms(a, runs: list[Run], active: dict, prepared: str) -> list[str]:
    """Scores the int8 form with int8 tables of a dense run scored before that form existed (2026-12-05 16:27 UTC),
    where its checkpoint is on this machine (a run restored from the ledger has none: its row leaves that form
    out), and records it in the ledger again; the names of the runs it scored."""
    import torch
    from common import load_for_inference

    done = []
    for r in runs:
        res = result(r.name)
        ckpt = os.path.join(r.dir, "checkpoint_best.pt")
        if (r.name in active or not r.name.startswith("dense") or res is None or "int8emb_bytes" in res
                or "fp16_bytes" not in res or not os.path.exists(ckpt)):
            continue
        torch.set_num_threads(max(a.threads, 1))
        model, task = load_for_inference(ckpt, os.path.join(prepared, "bin"))
        refs = data.read_lines(os.path.join(prepared, "raw", f"test.{a.tgt}"))
        res.update(int8_form(model, task, refs, r.dir, tables=True))
        write_json(os.path.join(r.dir, "result.json"), res)
        if a.ledger and os.path.exists(os.path.join(a.ledger, r.name, "run.json")):
            os.unlink(os.path.join(a.ledger, r.name, "run.json"))  # recorded before: written again with the form
            record(a, r)
        done.append(r.name)
    return done


def result(run_name: str) -> dict | None:
    path = os.path.join(WORK, "runs", run_name, "result.json")
    return read_json(path) if os.path.exists(path) else None


# ---------------------------------------------------------------- the ledger: finished runs, kept where they outlive the machine

LEDGER_FILES = ("cpu.json", "compute.jsonl", "result.json", "test.hyp", "test.int8.hyp", "test.int8emb.hyp")
LEDGER_LOG = re.compile(r"^# |valid on 'valid' subset \||Saved checkpoint |" + re.escape(EARLY_STOP) + "|"
                        + re.escape(DIVERGED))


def fingerprint(a) -> dict:
    """What makes two studies' runs interchangeable: the corpus as prepared (its dictionaries), the shape and the
    protocol. A ledger written under another one is refused."""
    digest = hashlib.sha256()
    bin_dir = os.path.join(a.work, "data", "bin")
    for f in sorted(os.listdir(bin_dir)):
        if f.startswith("dict."):
            with open(os.path.join(bin_dir, f), "rb") as fh:
                digest.update(f.encode() + fh.read())
    return {"src": a.src, "tgt": a.tgt, "dictionaries": digest.hexdigest()[:16], "vocab": a.vocab, "dim": a.dim,
            "ffn": a.ffn, "layers": a.layers, "heads": a.heads, "max_tokens": a.max_tokens,
            "eval_every": a.eval_every, "patience": a.patience, "cap": a.cap}


def check_ledger(a) -> None:
    """Writes the ledger's fingerprint on first use; refuses, in one line, a ledger of another study."""
    path = os.path.join(a.ledger, "study.json")
    mine = fingerprint(a)
    if not os.path.exists(path):
        os.makedirs(a.ledger, exist_ok=True)
        write_json(path, mine)
        return
    theirs = read_json(path)
    differ = [f"{k} {mine.get(k)!r} (ledger: {theirs.get(k)!r})" for k in sorted(set(mine) | set(theirs))
              if mine.get(k) != theirs.get(k)]
    if differ:
        raise ConfigError(f"--ledger {a.ledger}: written by another study: {'; '.join(differ)}; pass another folder")


def final(a, run: Run, winners: dict) -> bool:
    """Whether a run will not train again: scored; converged and left unscored (a follow-up variant not chosen), or
    diverged before its first validation (nothing to score); or stopped at its budget (a tuning setting the halving
    dropped, a rewind run) once both winners are known. A candidate converged before its choice is not final: were
    it restored from the ledger without its checkpoint and then chosen, nothing could score it."""
    if not complete(run) or run.name.endswith(".regen") or run.pending:
        return False
    if run.max_update < a.cap:
        return None not in winners.values()
    return result(run.name) is not None or not run.scored or not validations(run)


def record(a, run: Run, artifact: bool = False, kind: str = "") -> bool:
    """Copies a run's small files into the ledger (its log cut to the lines the runner reads: launches,
    validations, saves, the early stop; and the artifact if asked), once per state; run.json goes last, so a
    record cut short is written again. A finished run's record holds no checkpoint; `kind` "candidate" (converged
    before its choice) adds its best checkpoint's weights, "carried" (in flight) its best weights and its last
    checkpoint, "read" (a complete run that later runs are built on) the file they read (read_later), each in parts
    under PART_BYTES. True if it wrote."""
    dest = os.path.join(a.ledger, run.name)
    state = {"updates": trained(run), "scored": result(run.name) is not None, **({kind: True} if kind else {})}
    if os.path.exists(os.path.join(dest, "run.json")) and read_json(os.path.join(dest, "run.json")) == state:
        return False
    checkpoints = {}
    if kind:  # read first: an unreadable or torn checkpoint writes nothing (the next save tries again)
        checkpoints = ledger_checkpoints(a, run, kind)
        if checkpoints is None:
            return False
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(run.dir, "train.log"), encoding="utf-8") as f:
        write_text(os.path.join(dest, "train.log"), "".join(x for x in f if LEDGER_LOG.search(x)))
    for name in LEDGER_FILES + (("model.olt",) if artifact else ()):
        if os.path.exists(os.path.join(run.dir, name)):
            shutil.copyfile(os.path.join(run.dir, name), os.path.join(dest, name))
    for f in os.listdir(dest):
        if PART.match(f):
            os.unlink(os.path.join(dest, f))
    for name, blob in checkpoints.items():
        write_parts(blob, os.path.join(dest, name))
    write_json(os.path.join(dest, "run.json"), state)
    return True


# ---------------------------------------------------------------- checkpoints that outlive the machine (in the ledger)

PART_BYTES = 1_900_000  # a ledger file stays under 2 MiB, the repository's limit for a tracked file
CARRY_BYTES = 8 * 2 ** 20  # a run in flight is carried when its last checkpoint takes at most this
PART = re.compile(r"^((?:checkpoint_(?:best|last)|weights_update\d+)\.pt)\.\d+$")


def read_later(a, run: Run) -> dict[str, str]:
    """The file that later runs read from a complete run built on by them, and the form the ledger keeps it in: a
    rewind run's weight snapshot (tickets rewind to it) as written; a run trained again (RUN.regen: tickets, the
    analysis and --publish read its last checkpoint) its weights alone. Each costs 1 to 3.5 CPU hours to train again
    and is read for as long as the study runs, across machines. Other runs: nothing."""
    if run.name.startswith("dense_rewind-"):
        return {f"weights_update{a.rewind_update}.pt": "as written"}
    if run.name.endswith(".regen"):
        return {"checkpoint_last.pt": "weights"}
    return {}


def ledger_checkpoints(a, run: Run, kind: str) -> dict | None:
    """What a record of `kind` keeps besides the run's small files: a candidate its checkpoint_best.pt as weights
    alone (what fairseq-generate reads); a carried run that and, to resume it, checkpoint_last.pt as written; a run
    read later what read_later names. None unless each file loads, and a checkpoint_last.pt holds the update of the
    run's last save (a save still being copied is not taken)."""
    import io as bytes_io

    import torch

    from one_layer_lottery.io import weights_checkpoint  # its import allows fairseq's classes in safe loading

    files = {"candidate": {"checkpoint_best.pt": "weights"},
             "carried": {"checkpoint_best.pt": "weights", "checkpoint_last.pt": "as written"},
             "read": read_later(a, run)}[kind]
    out = {}
    for name, form in files.items():
        path = os.path.join(run.dir, name)
        try:
            with open(path, "rb") as f:
                blob = f.read()
            state = torch.load(bytes_io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - missing, torn or being written: not this time
            return None
        if name == "checkpoint_last.pt" and state["optimizer_history"][-1]["num_updates"] != trained(run):
            return None
        if form == "weights":
            buf = bytes_io.BytesIO()
            torch.save(weights_checkpoint(state["cfg"], state["model"], state["optimizer_history"][-1]), buf)
            blob = buf.getvalue()
        out[name] = blob
    return out


def write_parts(blob: bytes, prefix: str) -> None:
    for i in range(0, max(len(blob), 1), PART_BYTES):
        with open(f"{prefix}.{i // PART_BYTES}", "wb") as f:
            f.write(blob[i:i + PART_BYTES])


def join_parts(folder: str) -> list[str]:
    """Joins a restored run's checkpoint parts back into its checkpoints (the parts removed); the names joined."""
    groups: dict[str, list[str]] = {}
    for f in os.listdir(folder):
        if m := PART.match(f):
            groups.setdefault(m.group(1), []).append(f)
    for name, parts in sorted(groups.items()):
        target = os.path.join(folder, name)
        parts.sort(key=lambda f: int(f.rsplit(".", 1)[1]))
        with open(target + ".tmp", "wb") as out:
            for f in parts:
                with open(os.path.join(folder, f), "rb") as h:
                    out.write(h.read())
        os.replace(target + ".tmp", target)
        for f in parts:
            os.unlink(os.path.join(folder, f))
    return sorted(groups)


def carry(a, active: dict) -> list[str]:
    """Records each small run in flight (its last checkpoint at most CARRY_BYTES) once per save, so a runner on a
    fresh machine resumes it from the ledger; the names written."""
    if not a.ledger:
        return []
    out = []
    for name, job in active.items():
        last = os.path.join(job.run.dir, "checkpoint_last.pt")
        if (os.path.exists(last) and os.path.getsize(last) <= CARRY_BYTES and saved(job.run)
                and record(a, job.run, kind="carried")):
            out.append(name)
    return out


def keep(a, runs: list[Run], winners: dict, active: dict) -> list[str]:
    """Records every finished run not yet in the ledger (with its artifact where --publish may copy it: a
    masks-only or coated seed, or a seed of masks-only's chosen follow-up), every complete run that later runs are
    built on (with the file they read, read_later) and every candidate converged before its choice (with its
    weights, which score it if it is chosen on a fresh machine, unless it is out of the running already); the names
    written."""
    if not a.ledger:
        return []
    standing = standing_row(a, winners, "masks_only")
    artifact = ("coats-", f"mask-{winners['mask']}-s") + ((f"{standing}-s",) if standing != "masks_only" else ())
    out = []
    for r in runs:
        if r.name in active:
            continue
        if read_later(a, r) and complete(r) and not lost(r):
            wrote = record(a, r, kind="read")
        elif final(a, r, winners):
            wrote = record(a, r, r.name.startswith(artifact))
        else:
            # a STAGED candidate at its budget carries no weights: chosen, it trains on from its last checkpoint
            wrote = r.pending and r.max_update == a.cap and complete(r) and record(
                a, r, kind="" if out_of_the_running(a, r, winners) else "candidate")
        if wrote:
            out.append(r.name)
    return out


def restore(a) -> list[str]:
    """The ledger's runs that this work directory lacks, copied in (marked restored.json: their checkpoints stayed
    on the machine that trained them)."""
    if not a.ledger:
        return []
    check_ledger(a)
    names = []
    for name in sorted(os.listdir(a.ledger)):
        src, dest = os.path.join(a.ledger, name), os.path.join(WORK, "runs", name)
        if not os.path.exists(os.path.join(src, "run.json")) or os.path.exists(os.path.join(dest, "train.log")):
            continue
        shutil.copytree(src, dest, dirs_exist_ok=True)
        join_parts(dest)
        write_json(os.path.join(dest, "restored.json"), {"from": os.path.abspath(src),
                                                         "at": time.strftime("%Y-%m-%d %H:%M:%S")})
        names.append(name)
    return names


def lost(run: Run) -> bool:
    """Restored from the ledger without its checkpoints (what other runs, the analysis and --publish read; a
    candidate's, a carried run's and a read run's are restored)."""
    return (os.path.exists(os.path.join(run.dir, "restored.json"))
            and not any(PART.match(f"{f}.0") for f in os.listdir(run.dir)))  # a file the ledger keeps in parts


def regen_run(a, run: Run, priority: tuple | None = None) -> Run:
    """A restored run trained again on its seed to the update its checkpoint was chosen at (a budget run: to its
    budget), no patience, for the runs that read that checkpoint (its checkpoint_last.pt). fairseq seeds every
    update from --seed and the update number, but a launch that resumes in a later epoch draws that epoch's batches
    anew (it builds them with the epoch it starts in: the same sentence lengths, other sentences), so the run
    trained again stops where its original's launches resumed (`stops`) and resumes there too, for as long as it
    validates as the original did. On the machine and code that trained the run it then retraces it bit for bit
    (tests/test_study.py); elsewhere it need not (on 2026-12-06 another CPU validated dense's seed 1 at 22.18 after
    500 updates, the ledger 22.48), so the report compares its validations with the ledger's."""
    vals = validations(run)
    upto = run.max_update if run.max_update < a.cap else best(vals)[0]
    return Run(f"{run.name}.regen", run.args, upto, 10 ** 9, priority or run.priority, run.seed, run.width,
               stops=tuple(u for u in resume_points(run) if u < upto))


def replay_path(run: Run, update: int) -> str:
    """A run trained again: its checkpoint at `update`, the last of its original's stops it reached."""
    return os.path.join(run.dir, f"checkpoint_replay_{update}.pt")


def replay_stop(run: Run) -> int:
    """The update this launch of the run trains to: its budget, or for a run trained again that still retraces its
    original the next update the original resumed from."""
    return min([u for u in run.stops if u > trained(run)] + [run.max_update]) if retracing(run) else run.max_update


def retracing(run: Run) -> bool:
    """Whether a run trained again has validated as its original at every update both reached (another CPU rounds
    differently from the first update on: then it is a new draw, and stops or going back would buy nothing)."""
    return bool(run.stops) and not regen_agreement(run)[1]


def replay_rewind(run: Run) -> int | None:
    """Before a launch of a run trained again: at one of its stops, keeps that checkpoint (replay_path, the one
    before it removed); interrupted anywhere else (its session ended), goes back to the last stop it reached (its log
    after that save set aside in train.log.rewound), else to the start, since resuming there would draw other
    batches than its original did. The update gone back to, or None."""
    here = trained(run)
    if not retracing(run) or here == 0 or here >= run.max_update:
        return None
    last = os.path.join(run.dir, "checkpoint_last.pt")
    if here in run.stops:
        shutil.copyfile(last, replay_path(run, here) + ".tmp")
        os.replace(replay_path(run, here) + ".tmp", replay_path(run, here))
        for u in run.stops:
            if u != here and os.path.exists(replay_path(run, u)):
                os.unlink(replay_path(run, u))
        return None
    back = max([u for u in run.stops if u < here], default=0)
    if back and not os.path.exists(replay_path(run, back)):
        back = 0  # its checkpoint there is gone (a fresh machine)
    log = os.path.join(run.dir, "train.log")
    with open(log, encoding="utf-8") as f:
        lines = f.readlines()
    cut = 0
    if back:
        cut = next(i for i, x in enumerate(lines) if (m := SAVED.search(x)) and int(m.group(1)) == back) + 1
    with open(log + ".rewound", "a", encoding="utf-8") as f:
        f.writelines(lines[cut:])
    write_text(log, "".join(lines[:cut]) + f"# went back from update {here} to {back}: its original resumed at "
               f"{', '.join(map(str, run.stops))} only (the rest of this log: train.log.rewound)\n")
    if back:
        shutil.copyfile(replay_path(run, back), last + ".tmp")
        os.replace(last + ".tmp", last)
    elif os.path.exists(last):
        os.unlink(last)
    return back


def checkpoint_of(a, run: Run, runs: list, priority: tuple | None = None, reader_done: bool = False
                  ) -> tuple[str, str, Run]:
    """Where a needed run's checkpoint is read: (its best checkpoint, its directory, the run that must be complete
    first); a lost run's regenerated run stands in for it and joins `runs`, queued at `priority` (its reader's
    place: trained in the reader's turn, not its own run's), unless the reader is complete already (a restored
    row needs nothing trained again)."""
    if not lost(run) or reader_done:
        return os.path.join(run.dir, "checkpoint_best.pt"), run.dir, run
    regen = regen_run(a, run, priority)
    runs.append(regen)
    return os.path.join(regen.dir, "checkpoint_last.pt"), regen.dir, regen


def regen_agreement(regen: Run) -> tuple[str, str]:
    """How a regenerated run's validations compare with the ledger's for the same updates: ("N of M validations as
    in the ledger", the differing figures, or "" where all agree)."""
    again = dict(validations(regen))
    before = {u: b for u, b in validations(Run(regen.name[:-len(".regen")], [], 0, 0, ())) if u in again}
    same = sum(again[u] == b for u, b in before.items())
    return (f"{same} of {len(before)} validations as in the ledger",
            "" if same == len(before) else f" (ledger {before}, again {again})")


def regen_lines(runs: list[Run]) -> list[str]:
    """Each complete regenerated run's validations against the ledger's for the same updates."""
    return [f"{r.name}: {''.join(regen_agreement(r))}" for r in runs if r.name.endswith(".regen") and complete(r)]


# ---------------------------------------------------------------- progress

def seconds_per_update(run: Run) -> float | None:
    """Seconds an update of one of the run's processes: its measured CPU time (cpu.json; with one thread a run and a
    core each, that is its wall time too), else its launches' wall time (which counts pauses)."""
    own = _own_rate(run.dir)[1]
    return own if own is not None else _wall_rate(run.dir)


def arch(run: Run) -> str:
    """The run's model ("" where its arguments name none)."""
    return last_value(run.args, "--arch", "")


def rate_guess(run: Run, runs: list[Run], rates: dict) -> float:
    """Seconds an update a run will take: its own; else the median of its peers' (the same model at the same width:
    a dense model at an eighth of the width takes about 0.4 s, at the benchmark width 1.7); else every measured
    run's median, scaled by width^1.5; else 1.8 (the benchmark shape, measured 2026-12-02)."""
    if rates.get(run.name):
        return rates[run.name]
    peers = [rates[r.name] for r in runs if rates.get(r.name) and r.width == run.width and arch(r) == arch(run)]
    if peers:
        return statistics.median(peers)
    known = [rates[r.name] / r.width ** 1.5 for r in runs if rates.get(r.name)]
    return (statistics.median(known) if known else 1.8) * run.width ** 1.5


def typical_length(runs: list[Run], cap: int) -> int:
    """Updates a run to convergence is expected to take before it starts: the median of the converged runs' (those
    trained to convergence and complete), else 6,000."""
    done = [trained(r) for r in runs if r.max_update == cap and complete(r)]
    return int(statistics.median(done)) if done else 6000


def status(a, runs: list[Run], active: dict) -> str:
    """One line per run (updates, best validation BLEU, state) and the ETA of what is planned now, each run at its
    own rate (rate_guess) and, before it converges, at least the typical length (typical_length)."""
    rates = {r.name: seconds_per_update(r) for r in runs}
    typical = typical_length(runs, a.cap)  # reads every run's log: once, not once a run
    lines, left = [], 0.0
    for r in sorted(runs, key=lambda r: (r.priority, r.name)):
        vals, done = validations(r), trained(r)
        b = best(vals)
        state = ("running" if r.name in active else "scored" if result(r.name) and r.max_update == a.cap
                 else "done" if complete(r) else "waiting") + (" (diverged)" if diverged(r) else "") + (
                     " (restored: no checkpoint here)" if lost(r) else "")
        target = r.max_update if r.max_update < a.cap else f"conv. (cap {a.cap})"
        if state in ("running", "waiting"):
            guess = (r.max_update if r.max_update < a.cap
                     else max(done + a.patience * a.eval_every, typical))
            now = max(done, logged_update(r))
            left += max(guess - now, 0) * rate_guess(r, runs, rates)
            if state == "running" and now > done:
                state += f" (at update {now:,}; saved at {done:,})"
        if r.stops and vals:
            state += " (retracing the ledger's run)" if retracing(r) else " (a new draw: validated otherwise)"
        lines.append(f"  {r.name:<34} {done:>6} / {target:<16} best valid BLEU "
                     f"{(f'{b[1]:.2f} @ {b[0]}' if b else '-'):<15} {state}"
                     f"{'' if r.scored else ' (test only if chosen on validation)'}")
    lines.append(f"  {len(runs)} runs planned so far; about {left / 3600:,.1f} h of single-thread training left, "
                 f"{a.jobs} at a time: ETA {left / a.jobs / 3600:.1f} h (later stages add runs; each run at its own "
                 f"rate, else its peers')")
    return "\n".join(lines)


# ---------------------------------------------------------------- the tables

def bootstrap_ratio(model: list[list[str]], dense: list[list[str]], refs: list[str], samples: int = 1000,
                    seed: int = 12345) -> tuple[float, float]:
    """95 % paired bootstrap interval of mean-over-seeds BLEU(model) / mean-over-seeds BLEU(dense).

    sacreBLEU's paired bootstrap resampling: the same resampled test sentences for every system, each system's
    corpus BLEU recomputed from its per-sentence statistics; seeds are averaged inside every sample.
    """
    return paired_bootstrap([model, dense], refs, lambda m: m[0] / m[1] if m[1] else float("nan"), samples, seed)


_STATS: dict = {}  # sentence_stats' results by content: a report resamples the same hypotheses many times


def sentence_stats(hyps: list[str], refs: list[str]):
    """sacreBLEU's per-sentence BLEU statistics of hypotheses against references (a numpy array, a row a sentence),
    extracted once per content (the references cached once per content, as sacreBLEU caches them)."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    refs_key = hashlib.sha1("\n".join(refs).encode()).hexdigest()
    key = (refs_key, hashlib.sha1("\n".join(hyps).encode()).hexdigest(), len(hyps))
    if key not in _STATS:
        if refs_key not in _STATS:
            _STATS[refs_key] = BLEU(references=[refs])
        _STATS[key] = np.array(_STATS[refs_key]._extract_corpus_statistics(hyps, None))
    return _STATS[key]


def paired_bootstrap(systems: list[list[list[str]]], refs: list[str], statistic, samples: int = 1000,
                     seed: int = 12345) -> tuple[float, float]:
    """95 % paired bootstrap interval of statistic([mean-over-seeds BLEU of each system]) (see bootstrap_ratio)."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    metric = BLEU()
    stats = [[sentence_stats(h, refs) for h in hyps] for hyps in systems]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        idx = rng.integers(0, len(refs), len(refs))
        values.append(statistic([statistics.mean(metric._compute_score_from_stats(list(st[idx].sum(0))).score
                                                 for st in side) for side in stats]))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def read_hyps(run_name: str, name: str = "test.hyp") -> list[str]:
    with open(os.path.join(WORK, "runs", run_name, name), encoding="utf-8") as f:
        return f.read().splitlines()


def tuning_table(a, lines: list[str]) -> dict:
    winners = {}
    for family in FAMILIES:
        runs, winners[family] = tuning(a, family)
        budgets = [b for b, _ in a.stages]
        lines += [(f"\n### Tuning: {family} (seed 1, validation BLEU; successive halving at "
                   f"{', '.join(f'{b:,}' for b in budgets)} updates)\n"),
                  "| setting | " + " | ".join(f"best by {b:,}" for b in budgets) + " | converged (update) | "
                  "CPU h |", "|---" * (len(budgets) + 3) + "|"]
        total, estimated, rate = 0.0, False, measured_rate(a, 1)
        for r in runs:
            vals = validations(r)
            cells = []
            for b in budgets:
                x = best(vals, b) if vals and vals[-1][0] >= b or (vals and stopped(vals, a.patience)) else None
                cells.append(f"{x[1]:.2f}" if x else "-")
            res = result(r.name)
            conv = f"{res['valid_bleu']:.2f} ({res['best_update']:,})" if res else (
                "running" if r.max_update == a.cap else "-")
            hours, shown = cpu_hours(r.dir, trained(r), rate)
            total += hours
            estimated = estimated or shown.startswith("≈")
            mark = " **winner**" if r.name.endswith(f"{winners[family]}-s1") else ""
            lines.append(f"| `{r.name[len(family) + 1:-3]}`{mark} | " + " | ".join(cells) +
                         f" | {conv} | {shown} |")
        lines.append(f"\nSettings: `{' '.join(FAMILIES[family][0])}` plus the row's flags. Tuning compute: "
                     f"{'≈' if estimated else ''}{total:.1f} CPU hours" +
                     (" (≈: partly estimated: updates trained before the runner measured CPU time, or by a process "
                      "killed before its first sample, at the measured CPU seconds an update)" if estimated else "") +
                     f". Winner: {winners[family] or 'not yet known'}.")
    return winners


def row_results(a, winners: dict) -> dict:
    """Every row with at least one scored seed: per-seed test BLEU, mean and spread, compute, bytes."""
    runs = {r.name: r for r in plan(a)[0]}
    rows = {}
    for row, (label, family, width, extra, seeds, part) in all_rows(a).items():
        if winners[family] is None:
            continue
        variant = retune_choice(a, row) if row in RETUNED else ""
        names = [n for n in runs if n.startswith(retuned_name(row, variant or "", "")) or (
                 width == 1 and not extra and n.startswith(f"{family}-{winners[family]}-s"))]
        res = [result(n) for n in names if result(n)]
        if not res:
            continue
        bleus = [r["test_bleu"] for r in res]
        if row in RETUNED:
            label += f" ({retuned_setting(winners, row, variant)}, " + (
                "chosen at its width)" if variant is not None else "its width's choice pending)")
        rows[row] = {"label": label, "part": part, "seeds_done": len(res),
                     "seeds_planned": len(seeds[:a.seeds or None]),
                     "test_bleu": bleus, "mean": round(statistics.mean(bleus), 2),
                     "spread": [min(bleus), max(bleus)], "valid_bleu": [r["valid_bleu"] for r in res],
                     "best_update": [r["best_update"] for r in res], "updates": [r["updates"] for r in res],
                     "cpu_hours": round(sum(r["cpu_hours"] for r in res), 2),
                     "cpu_hours_estimated": round(sum(r.get("cpu_hours_estimated", 0) for r in res), 2),
                     "runs": [r["run"] for r in res]}
        for key in ("artifact_bytes", "model_bytes", "fp16_bytes", "int8_bytes", "int8_test_bleu", "sparse_bytes",
                    "kept_fraction", "int8emb_bytes", "int8emb_test_bleu"):
            if all(key in r for r in res):  # a form scored on every seed (int8 tables: not on runs restored before)
                rows[row][key] = round(statistics.mean(r[key] for r in res), 2)
    return rows


def paired_ratio(ratio: float, runs: list[str], against: list[str], refs: list[str]) -> dict:
    """{"ratio", "interval"}: a ratio of test BLEU and its paired bootstrap interval, runs' outputs against against's
    (bootstrap_ratio), both rounded as the report prints them."""
    return {"ratio": round(ratio, 3), "interval": [round(x, 3) for x in bootstrap_ratio(
        [read_hyps(n) for n in runs], [read_hyps(n) for n in against], refs)]}


def ratios_(rows: dict, refs: list[str]) -> None:
    """Each row's mean test BLEU over dense's, with its paired bootstrap interval over the test sentences."""
    dense = rows.get("dense")
    for row, r in rows.items():
        if dense and dense["mean"] > 0 and row != "dense":
            r.update(paired_ratio(r["mean"] / dense["mean"], r["runs"], dense["runs"], refs))


def results_table(rows: dict, lines: list[str]) -> None:
    lines += ["\n### Results (test_2016_flickr, checkpoint chosen on validation BLEU)\n",
              ("| model | seeds | test BLEU per seed | mean [spread] | ratio to dense [95 % paired bootstrap] | "
               "best update / trained | CPU h |"), "|---|---|---|---|---|---|---|"]
    for row, r in rows.items():
        ratio = (f"{r['ratio']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]" if "ratio" in r
                 else "1.000" if row == "dense" else "-")
        reuse = {"pretrained": " + dense's", "ticket": " + dense's + its rewind run's"}.get(row.split("_")[0], "")
        lines.append(f"| {r['label']} | {seeds_of(r)} | "
                     f"{' / '.join(f'{b:.2f}' for b in r['test_bleu'])} | {r['mean']:.2f} "
                     f"[{r['spread'][0]:.2f}, {r['spread'][1]:.2f}] | {ratio} | "
                     f"{' / '.join(f'{b:,}' for b in r['best_update'])} of {' / '.join(f'{u:,}' for u in r['updates'])}"
                     f" | {'≈' if r['cpu_hours_estimated'] > 0 else ''}{r['cpu_hours']:.1f}{reuse} |")


# pairs of rows the docs compare beside dense: (row, against, what the pair tells apart)
PAIRS = (("standard", "masks_only", "a random layer per depth against one layer reused at every depth"),
         ("masks_only_wide", "dense_wide", "masks only against a trained model, both at twice the width"))


def seed_of(run_name: str) -> int:
    """A run's seed from its name (`...-s2`, `...-s2.regen`)."""
    return int(re.search(r"-s(\d+)(?:\.|$)", run_name).group(1))


def comparisons(rows: dict, refs: list[str], lines: list[str], pairs: tuple = PAIRS) -> list[dict]:
    """The pairs' (PAIRS') ratios of mean test BLEU, each row's seeds against the other's, and seed by seed over the
    seeds both rows have, each with its paired bootstrap interval over the test sentences (bootstrap_ratio)."""
    out = []
    for row, other, what in pairs:
        if row not in rows or other not in rows or not rows[other]["mean"]:
            continue
        r, o = rows[row], rows[other]
        twins = {seed_of(n): (n, b) for n, b in zip(o["runs"], o["test_bleu"]) if b}
        by_seed = {seed: paired_ratio(bleu / twins[seed][1], [name], [twins[seed][0]], refs)
                   for name, bleu in zip(r["runs"], r["test_bleu"]) if (seed := seed_of(name)) in twins}
        out.append({"model": row, "against": other, "what": what, "seeds": [len(r["runs"]), len(o["runs"])],
                    **paired_ratio(r["mean"] / o["mean"], r["runs"], o["runs"], refs), "by_seed": by_seed})
    if out:
        lines += ["\n### Paired comparisons beside dense (test BLEU; 95 % paired bootstrap over the test sentences)\n",
                  "| model | against | what the pair tells apart | seeds | ratio of the means | seed by seed |",
                  "|---|---|---|---|---|---|"]
        for c in out:
            each = "; ".join(f"s{s}: {v['ratio']:.3f} [{v['interval'][0]:.3f}, {v['interval'][1]:.3f}]"
                             for s, v in sorted(c["by_seed"].items())) or "-"
            lines.append(f"| {rows[c['model']]['label']} | {rows[c['against']]['label']} | {c['what']} | "
                         f"{c['seeds'][0]} against {c['seeds'][1]} | {c['ratio']:.3f} [{c['interval'][0]:.3f}, "
                         f"{c['interval'][1]:.3f}] | {each} |")
    return out


def followup_table(a, winners: dict, lines: list[str], family: str = "mask") -> dict:
    """Part followup for a family: each variant's seed-1 run beside the tuned setting's, on validation only (the
    choice); {} where the family has no variant."""
    candidates = followup_candidates(a, winners, family)
    if not candidates:
        return {}
    chosen, rate = followup_choice(a, winners, family), measured_rate(a, 1)
    what, first = {"mask": ("masks-only variants", "variant"), "dense": ("dense variants", "dense variant")}[family]
    lines += [f"\n### Follow-up: {what}, seed 1, chosen on validation BLEU\n",
              f"| {first} | flags on top of the tuned setting | best valid BLEU (update) | trained | CPU h |",
              "|---|---|---|---|---|"]
    table = {}
    for row, run in candidates.items():
        label, _, extra = FOLLOWUPS.get(row, ("the tuned setting", family, []))
        table[row], cells = candidate(run, rate)
        mark = " **chosen**" if row == chosen else ""
        lines.append(f"| {label}{mark} | `{' '.join(extra) or '-'}` | {cells}")
    lines.append("\n" + ("Not chosen yet: every variant's seed 1 must converge first." if chosen is None else
                          "The tuned setting stays best on validation: no variant goes on to test." if
                          chosen == TUNED_ROW[family] else
                          f"Chosen: `{chosen}`; only it is scored on test, and it trains seeds 2 and 3." + (
                              " The paired comparisons read the supermask rows against it too." if family == "dense"
                              else "")))
    return {"variants": table, "chosen": chosen}


# rows read against dense's follow-up where one is chosen over the tuned grid's setting (the targets' rows)
AGAINST_DENSE = ("masks_only", "pretrained_frozen", "pretrained_masked", "coats", "masks_only_wide")


def followup_pairs(a, winners: dict) -> tuple:
    """PAIRS' shape: where dense's follow-up is chosen on validation, the targets' rows (and masks-only's chosen
    follow-up) against it; () until then, or where the tuned setting stays."""
    chosen = {family: followup_choice(a, winners, family) for family in FAMILIES}
    if chosen["dense"] in (None, "dense"):
        return ()
    extra = () if chosen["mask"] in (None, "masks_only") else (chosen["mask"],)
    return tuple((row, chosen["dense"], "against dense's follow-up, chosen on validation over the tuned grid's")
                 for row in AGAINST_DENSE + extra)


def candidate(run: Run, rate: float | None, budget: int | None = None) -> tuple[dict, str]:
    """A candidate's seed-1 run on validation: its best (up to `budget`, where it is chosen at one), updates trained
    and state (a run that trains past the budget, the chosen one, converges); and those as a table's last three
    cells (best valid BLEU (update) | trained | CPU h)."""
    vals, done = validations(run), trained(run)
    top = best(vals, budget) if vals else None
    state = ("training" if vals else "waiting") if not complete(run) else "diverged" if diverged(run) else (
        "converged" if budget is None or run.max_update > budget else f"reached {budget:,}")
    cells = (f"{f'{top[1]:.2f} ({top[0]:,})' if top else '-'} | {done:,} ({state}) | "
             f"{cpu_hours(run.dir, done, rate)[1]} |")
    return {"valid_bleu": top[1] if top else None, "best_update": top[0] if top else None, "trained": done,
            "state": state}, cells


def retune_table(a, winners: dict, lines: list[str]) -> dict:
    """The RETUNED rows' seed-1 candidates on validation (the choice), each row's chosen variant."""
    if "width" not in a.parts or None in (winners["dense"], winners["mask"]):
        return {}
    lines += ["\n### Settings chosen again at a row's own width (seed 1, validation BLEU)\n",
              "| row | setting | best valid BLEU (update) | trained | CPU h |", "|---|---|---|---|---|"]
    table = {}
    for row, variants in RETUNED.items():
        chosen, rate = retune_choice(a, row), measured_rate(a, ROWS[row][2])
        budget = retune_budget(a, row)
        for v in ("", *variants):  # the chosen one trains on to convergence (the cap), the others stop at the budget
            run = Run(retuned_name(row, v, 1), [], a.cap if v == chosen else budget, a.patience, ())
            setting = retuned_setting(winners, row, v)
            seen, cells = candidate(run, rate, budget if budget < a.cap else None)
            table[run.name] = {"setting": setting, "valid_bleu": seen["valid_bleu"], "state": seen["state"],
                               "chosen": v == chosen}
            lines.append(f"| {row}{' **chosen**' if v == chosen else ''} | {setting} | {cells}")
    staged = [f"{row} at {retune_budget(a, row):,} updates" for row in STAGED]
    lines.append("\nEach row's chosen setting alone is scored on test and trains seed 2 (the others never see test). "
                 "A row chooses on its candidates' best validation once all have converged, except "
                 f"{', '.join(staged)} (the family tuning's first halving budget: the table reads each candidate's best "
                 "up to it; the chosen one then trains on to convergence).")
    return table


def pruning_table(a, rows: dict, lines: list[str]) -> None:
    """Part prune at every --kept fraction: trained-weight pruning beside the one-layer supermask (seed means)."""
    if not any(r["part"] == "prune" for r in rows.values()):
        return
    lines += ["\n### Trained-weight pruning at convergence (mean test BLEU, ratio to dense, stored bytes)\n",
              "| k | magnitude pruning | stabilized lottery ticket | one-layer supermask, masks only |", "|---|---|---|---|"]
    for k, _ in a.kept:
        cells = []
        for row in (f"magnitude_k{k:g}", f"ticket_k{k:g}", "masks_only" if k == ONE_LAYER_K else f"masks_only_k{k:g}"):
            r = rows.get(row)
            if r is None:
                cells.append("-")
                continue
            size = r.get("sparse_bytes", r.get("model_bytes"))
            kept = f", {r['kept_fraction']:.3f} kept" if "kept_fraction" in r else ""
            cells.append(f"{r['mean']:.2f} ({r.get('ratio', float('nan')):.3f}; {size:,.0f} B{kept}; "
                         f"{r['seeds_done']}/{r['seeds_planned']} seeds)")
        lines.append(f"| {k:g} | " + " | ".join(cells) + " |")


def analysis(a, rows: dict) -> dict | None:
    """`one-layer-lottery analyze` of seed 1's converged models at k = ONE_LAYER_K against seed 1's dense model
    (kept fraction, CKA of states and attention agreement, layer by layer, on validation): WORK/analysis.json and
    analysis.png; each model read where `stand_in` finds it (the JSON's "sources" say what stood in). Computed again
    only when what it reads changes, and recorded in the ledger (LEDGER/analysis/), which a machine without all four
    models reads instead (marked "recorded"); None until then."""
    k = f"{ONE_LAYER_K:g}"
    picked = {"dense": "dense", f"magnitude_k{k}": "magnitude", f"ticket_k{k}": "ticket", "masks_only": "one_layer"}
    by_name = {r.name: r for r in plan(a)[0]}
    paths, sources = {}, {}
    for row, label in picked.items():
        first = [n for n in rows.get(row, {}).get("runs", []) if n.endswith("-s1")]
        found = stand_in(a, by_name[first[0]]) if first and first[0] in by_name else None
        if found is None:  # not trained yet, or restored from the ledger without a stand-in (the report says so)
            return analysis_from_ledger(a)
        paths[label], how = found
        sources[label] = f"{first[0]}: {how}"
    inputs = {label: [p, os.path.getsize(p), os.path.getmtime(p)] for label, p in paths.items()}
    done = os.path.join(a.work, "analysis.json")
    cached = read_json(done) if os.path.exists(done) else {}
    if cached.get("inputs") == inputs:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(done)))
        return record_analysis(a, {"computed": stamp, **cached})  # (analyses before 2026-12-07 lack "computed")
    dense = paths.pop("dense")
    cmd = [command("one-layer-lottery"), "analyze", dense, *paths.values(), "--data",
           os.path.join(a.work, "data", "bin"), "--labels", ",".join(paths), "--json", "--png",
           os.path.join(a.work, "analysis.png")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(a.threads), check=False)
    if r.returncode != 0:
        raise ConfigError(f"analyze failed: {r.stderr.strip()[-400:]}")
    out = {**json.loads(r.stdout), "sources": sources, "inputs": inputs,
           "computed": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_json(done, out)
    return record_analysis(a, out)


def recorded_analysis(a) -> dict | None:
    """The analysis the ledger holds (its figures as computed on the machine that had the models), or None."""
    kept = os.path.join(a.ledger, "analysis", "analysis.json") if a.ledger else None
    return read_json(kept) if kept and os.path.exists(kept) else None


def record_analysis(a, out: dict) -> dict:
    """Copies the analysis (JSON and PNG) into the ledger unless it holds this one already; returns it."""
    if a.ledger and recorded_analysis(a) != out:
        kept = os.path.join(a.ledger, "analysis")
        os.makedirs(kept, exist_ok=True)
        shutil.copyfile(os.path.join(a.work, "analysis.png"), os.path.join(kept, "analysis.png"))
        write_json(os.path.join(kept, "analysis.json"), out)  # last: a record cut short is written again
    return out


def analysis_from_ledger(a) -> dict | None:
    """On a machine without the four models: the ledger's analysis, its PNG copied to WORK/analysis.png."""
    out = recorded_analysis(a)
    if out is None:
        return None
    shutil.copyfile(os.path.join(a.ledger, "analysis", "analysis.png"), os.path.join(a.work, "analysis.png"))
    return {**out, "recorded": True}


def analysis_lines(result: dict, lines: list[str]) -> None:
    lines += [f"\n### Seed 1's models at k = {ONE_LAYER_K:g} against dense (validation, `one-layer-lottery analyze`)\n",
              "| model | mean CKA to dense | mean attention agreement |", "|---|---|---|"]
    for label, m in result["models"].items():
        cka, agree = m["cka_by_layer"].values(), m["attention_agreement"].values()
        lines.append(f"| {label} | {sum(cka) / len(cka):.3f} | {sum(agree) / len(agree):.3f} |")
    read = [f"{label} {how}" for label, how in result.get("sources", {}).items() if "best checkpoint" not in how]
    if read:
        lines.append(f"\nRead from stand-ins: {'; '.join(read)}.")
    if result.get("recorded"):
        lines.append(f"\nAs recorded in the ledger (computed {result['computed']} on a machine "
                     f"that had the four models; this one has not).")


# a dense model's stored forms: (label suffix, bytes key, test BLEU key (fp16: the row's mean), hypotheses file)
DENSE_FORMS = (("fp16", "fp16_bytes", "mean", "test.hyp"), ("int8", "int8_bytes", "int8_test_bleu", "test.int8.hyp"),
               ("int8+emb", "int8emb_bytes", "int8emb_test_bleu", "test.int8emb.hyp"))
DENSE_SUFFIXES = tuple(f" {form}" for form, *_ in DENSE_FORMS)


def seeds_of(row: dict) -> str:
    """A row's seeds so far, as "2/2" or "1/2 (partial)"."""
    done, planned = row["seeds_done"], row["seeds_planned"]
    return f"{done}/{planned}" + (" (partial)" if done < planned else "")


def bytes_points(rows: dict) -> list[tuple[str, float, float]]:
    """(label, stored bytes, test BLEU) of every stored form: a supermask artifact's model (without the sentencepiece
    models and dictionaries, which a dense model needs as well), dense weights in fp16, in int8, and in int8 with
    int8 embedding tables (where every seed of the row has it)."""
    out = []
    for row, r in rows.items():
        if "model_bytes" in r:
            out.append((row, r["model_bytes"], r["mean"]))
        if "sparse_bytes" in r:
            out.append((row, r["sparse_bytes"], r["mean"]))
        out += [(f"{row} {form}", r[size], r[bleu]) for form, size, bleu, _ in DENSE_FORMS if size in r]
    return sorted(out, key=lambda p: p[1])


def frontier(points: list[tuple[str, float, float]]) -> list[dict]:
    """Every other stored model against the dense models in each stored form (DENSE_FORMS): the dense BLEU at its
    bytes, linear in log bytes between the two dense models that bracket them. Outside the dense models' bytes the
    nearest one decides only where it can: a model that scores above a dense model storing more bytes is above the
    frontier, one below a dense model storing fewer is below it; anything else is not decided yet."""
    out = []
    by_form = {form: sorted((p for p in points if p[0].endswith(f" {form}")), key=lambda p: p[1])
               for form, *_ in DENSE_FORMS}
    for label, x, y in points:
        if label.endswith(DENSE_SUFFIXES):
            continue
        for form, dense in by_form.items():
            lo = next((p for p in reversed(dense) if p[1] <= x), None)
            hi = next((p for p in dense if p[1] >= x), None)
            at, verdict = None, "not decided"
            if lo and hi:
                t = 0.0 if hi[1] == lo[1] else (math.log(x) - math.log(lo[1])) / (math.log(hi[1]) - math.log(lo[1]))
                at = lo[2] + t * (hi[2] - lo[2])
                verdict = "above" if y > at else "below"
                by = f"{lo[0]} {lo[1]:,.0f} B ({lo[2]:.2f}) .. {hi[0]} {hi[1]:,.0f} B ({hi[2]:.2f})"
            elif hi:
                verdict = "above" if y > hi[2] else verdict
                by = f"smaller than every dense model; the smallest: {hi[0]} {hi[1]:,.0f} B ({hi[2]:.2f})"
            elif lo:
                verdict = "below" if y < lo[2] else verdict
                by = f"larger than every dense model; the largest: {lo[0]} {lo[1]:,.0f} B ({lo[2]:.2f})"
            else:
                by = "no dense model scored yet"
            out.append({"model": label, "bytes": x, "bleu": y, "form": form, "dense_bleu": at, "verdict": verdict,
                        "by": by, "larger": hi[0] if hi else None, "smaller": lo[0] if lo else None,
                        "t": t if lo and hi else None})
    return out


def frontier_intervals(verdicts: list[dict], rows: dict, refs: list[str]) -> None:
    """Each model's test BLEU over that of the smallest dense model storing at least as many bytes in the same form
    (the one it must beat), with the ratio's paired bootstrap interval (against the int8 model's own hypotheses in
    int8); and over the frontier at its bytes, where that is interpolated, with the interval of the same resamples
    of both dense models. The verdict then stands only where the interval says so: "above" (or "below") where all
    of it lies above (below) 1, "level" where a bracketed model's interval holds 1, "not decided" outside."""
    def hyps(label):
        dense, form = label.rsplit(" ", 1)
        _, _, key, name = next(f for f in DENSE_FORMS if f[0] == form)
        return rows[dense][key], [read_hyps(n, name) for n in rows[dense]["runs"]]

    for v in verdicts:
        if v["model"] not in rows:
            continue
        model = [read_hyps(n) for n in rows[v["model"]]["runs"]]
        if v["larger"]:
            value, dense = hyps(v["larger"])
            v["over_larger"] = round(v["bleu"] / value, 3) if value else None
            v["over_larger_interval"] = [round(x, 3) for x in bootstrap_ratio(model, dense, refs)]
        if v["t"] is not None:
            t, (_, lo), (_, hi) = v["t"], hyps(v["smaller"]), hyps(v["larger"])
            v["over_line"] = round(v["bleu"] / v["dense_bleu"], 3) if v["dense_bleu"] else None
            v["over_line_interval"] = [round(x, 3) for x in paired_bootstrap(
                [model, lo, hi], refs, lambda m, t=t: m[0] / ((1 - t) * m[1] + t * m[2]) if m[1] or m[2] else 1.0)]
            low, high = v["over_line_interval"]
            v["verdict"] = "above" if low > 1 else "below" if high < 1 else "level"
        elif v["larger"] and v["verdict"] == "above" and v["over_larger_interval"][0] <= 1:
            v["verdict"] = "not decided"
        elif v["smaller"] and v["verdict"] == "below":
            value, dense = hyps(v["smaller"])
            if bootstrap_ratio(model, dense, refs)[1] >= 1:
                v["verdict"] = "not decided"


def frontier_lines(points: list[tuple[str, float, float]], lines: list[str], rows: dict, refs: list[str]) -> list[dict]:
    verdicts = frontier(points)
    frontier_intervals(verdicts, rows, refs)

    def over(v, key="over_larger"):
        if v.get(key) is None:
            return "-"
        lo, hi = v[f"{key}_interval"]
        return f"{v[key]:.3f} [{lo:.3f}, {hi:.3f}]" + (f" of {v['larger']}" if key == "over_larger" else "")
    if verdicts:
        lines += ["\n### At each model's bytes, the dense frontier\n",
                  ("Dense test BLEU at the model's stored bytes, linear in log bytes between the dense models that "
                   "bracket them (means over each row's seeds so far), and the model's BLEU over it with its 95 % "
                   "paired bootstrap interval (both dense models resampled with it); the verdict is above or below "
                   "only where the whole interval is, else level. The last column divides the model's BLEU by the "
                   "smallest dense model's that stores at least as many bytes, with its interval.\n"),
                  ("| model | bytes | test BLEU | form | dense at these bytes | over it | verdict | from | over the "
                   "next larger dense model |"), "|---|---|---|---|---|---|---|---|---|",
                  *(f"| {v['model']} | {v['bytes']:,.0f} | {v['bleu']:.2f} | {v['form']} | "
                    f"{'-' if v['dense_bleu'] is None else format(v['dense_bleu'], '.2f')} | {over(v, 'over_line')} | "
                    f"{v['verdict']} | {v['by']} | {over(v)} |" for v in verdicts)]
    return verdicts


LABEL_OFFSETS = ((4, 4), (4, -11), (-4, 4), (-4, -11), (4, 12), (4, -19))  # points: right, then left of the point


def place_labels(ax, points: list[tuple[str, float, float]]) -> dict[str, tuple[int, int]]:
    """Label each point where its text overlaps no label placed before it, highest BLEU first: the first offset of
    LABEL_OFFSETS (above right, below right, above left, ...) that is clear, measured on the drawn text, else the
    first. Returns the offset each label took."""
    renderer = ax.figure.canvas.get_renderer()
    placed, taken = [], {}
    for label, x, y in sorted(points, key=lambda p: -p[2]):
        for dx, dy in LABEL_OFFSETS:
            text = ax.annotate(label, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset points",
                               ha="left" if dx > 0 else "right")
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                break
            text.remove()
        else:
            dx, dy = LABEL_OFFSETS[0]
            text = ax.annotate(label, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset points")
            box = text.get_window_extent(renderer)
        placed.append(box)
        taken[label] = (dx, dy)
    return taken


def plots(a, rows: dict) -> list[str]:
    """curves.png (validation BLEU against updates, seed 1 of every row) and bytes.png (test BLEU against bytes)."""
    from common import save_plot

    from one_layer_lottery.io import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (row, r) in enumerate(rows.items()):
        vals = validations(Run(r["runs"][0], [], 0, 0, ()))
        # past the colour cycle's ten, a dashed line: no two rows drawn alike
        ax.plot([u for u, _ in vals], [b for _, b in vals], label=row, lw=1.2, ls="-" if i < 10 else "--")
    ax.set_xlabel("updates")
    ax.set_ylabel("validation BLEU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_plot(fig, os.path.join(a.work, "curves.png"))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    points = bytes_points(rows)
    for (kind, size, _, _), marker in zip(DENSE_FORMS, "s^v"):
        pts = [p for p in points if p[0].endswith(f" {kind}")]
        widths = ", ".join(f"{ROWS[row][2]:g}" for row in sorted((r for r in rows if size in rows[r]),
                                                                  key=lambda r: ROWS[r][2]))
        if pts:
            ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=marker, label=f"dense, {kind} (width x {widths})")
    others = [p for p in points if not p[0].endswith(DENSE_SUFFIXES)]
    for label, x, y in others:
        ax.scatter([x], [y], s=40, zorder=3)
    ax.set_xscale("log")
    ticks = [t for t in (1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7) if points and min(p[1] for p in points) / 1.5 < t
             < max(p[1] for p in points) * 1.5]
    ax.set_xticks(ticks, [f"{t / 1e6:g} MB" for t in ticks])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("stored bytes (supermask: its artifact without tokenizer and dictionaries; dense: weights)")
    ax.set_ylabel("test BLEU (checkpoint chosen on validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.autoscale_view()  # the limits the labels are measured in
    place_labels(ax, others)
    save_plot(fig, os.path.join(a.work, "bytes.png"))
    return [os.path.join(a.work, "curves.png"), os.path.join(a.work, "bytes.png")]


def tuning_plot(a) -> str | None:
    """tuning.png: validation BLEU against updates of every tuning setting, one panel a family, the halving's
    budgets marked; None before any validation."""
    curves = {family: [(r.name[len(family) + 1:-3], validations(r)) for r in tuning(a, family)[0]]
              for family in FAMILIES}
    if not any(vals for runs in curves.values() for _, vals in runs):
        return None
    from common import save_plot

    from one_layer_lottery.io import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, len(curves), figsize=(10, 4), sharey=True)
    for ax, (family, runs) in zip(axes, curves.items()):
        for name, vals in runs:
            ax.plot([u for u, _ in vals], [b for _, b in vals], marker=".", lw=1.2, label=name)
        for budget, _ in a.stages[:-1]:
            ax.axvline(budget, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{family} (seed 1)", fontsize=9)
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation BLEU")
    path = os.path.join(a.work, "tuning.png")
    save_plot(fig, path)
    return path


def report(a) -> str:
    """The tuning tables, the results table (partial rows marked), the bytes frontier, two plots and a JSON of the
    same, under WORK."""
    lines = [(f"# Converged study ({time.strftime('%Y-%m-%d')}; `python benchmarks/study.py {a.raw_dir} "
              f"--parts {','.join(a.parts)}`)")]
    winners = tuning_table(a, lines)
    rows = row_results(a, winners)
    refs = data.read_lines(os.path.join(a.work, "data", "raw", f"test.{a.tgt}"))
    ratios_(rows, refs)
    results_table(rows, lines)
    compared_pairs = comparisons(rows, refs, lines, PAIRS + followup_pairs(a, winners))
    retuned = retune_table(a, winners, lines)
    followup = {family: table for family in FAMILIES if (table := followup_table(a, winners, lines, family))}
    pruning_table(a, rows, lines)
    compared = analysis(a, rows)
    if compared:
        analysis_lines(compared, lines)
    points = bytes_points(rows)
    if points:
        lines += ["\n### Stored bytes against test BLEU\n", "| model (stored form) | bytes | test BLEU | seeds |",
                  "|---|---|---|---|", *(f"| {label} | {x:,.0f} | {y:.2f} | {seeds_of(rows[label.split()[0]])} |"
                                         for label, x, y in points)]
    verdicts = frontier_lines(points, lines, rows, refs)
    written = ([p] if (p := tuning_plot(a)) else []) + (plots(a, rows) if rows else []) + (
        [os.path.join(a.work, "analysis.png")] if compared else [])
    planned = plan(a)[0]
    restored = sorted(r.name for r in planned if lost(r))
    if restored:
        lines.append(f"\nRestored from the ledger without their checkpoints ({len(restored)}: "
                     f"{', '.join(restored)}): their rows stand; a run built on one of them waits for it to be "
                     f"trained again (RUN.regen), which the analysis and --publish then read for a dense model "
                     f"(for a supermask model its artifact, expanded).")
    lines += [f"\n{x}" for x in regen_lines(planned)]
    if written:
        lines.append("\n" + ", ".join(written))
    text = "\n".join(lines) + "\n"
    write_text(os.path.join(a.work, "report.md"), text)
    write_json(os.path.join(a.work, "report.json"), {"winners": winners, "rows": rows, "bytes": points,
                                                         "frontier": verdicts, "followup": followup,
                                                         "retuned": retuned, "comparisons": compared_pairs})
    return text


def fp16_tied(model: dict) -> dict:
    """A state dict's float tensors in fp16, tensors that shared one storage (a tied output projection) still sharing
    one (by data_ptr, io.stored_bytes' rule), so the file holds the bytes fp16_bytes counts, not the table twice."""
    halves = {}
    for v in model.values():
        if v.is_floating_point() and v.data_ptr() not in halves:
            halves[v.data_ptr()] = v.half()
    return {k: halves[v.data_ptr()] if v.is_floating_point() else v for k, v in model.items()}


def stand_in(a, run: Run) -> tuple[str, str] | None:
    """The checkpoint a run's model is read from on this machine, and what it is: its best checkpoint; for a run
    restored from the ledger without it, a supermask's artifact expanded (the same masks: `one-layer-lottery expand`,
    cached as expanded.pt) or its run trained again to its chosen update once that is complete (RUN.regen, from
    which its tickets and pre-trained-embedding rows were built); None where neither is here."""
    here = os.path.join(run.dir, "checkpoint_best.pt")
    if os.path.exists(here):
        return here, "its best checkpoint"
    if os.path.exists(os.path.join(run.dir, "model.olt")):
        from one_layer_lottery import artifact

        here = os.path.join(run.dir, "expanded.pt")
        if not os.path.exists(here):
            artifact.expand(os.path.join(run.dir, "model.olt"), here)
        return here, "its artifact expanded (the same masks)"
    regen = regen_run(a, run)
    here = os.path.join(regen.dir, "checkpoint_last.pt")
    if os.path.exists(here) and complete(regen):
        return here, f"trained again to its chosen update {regen.max_update:,}: {regen_agreement(regen)[0]}"
    return None


def nearest_the_median(bleus: list[float], names: list[str]) -> list[tuple[float, str]]:
    """(test BLEU, run) of a row's seeds, the median seed first (the lower middle one of an even count), then the
    others by how far their test BLEU lies from the median seed's, the higher of two equally far first."""
    ranked = sorted(zip(bleus, names))
    mid = ranked[(len(ranked) - 1) // 2]
    return sorted(ranked, key=lambda x: (x != mid, abs(x[0] - mid[0]), -x[0]))


def published_source(a, row: dict, artifact: bool, runs: list[Run], prepared: str
                     ) -> tuple[str, str, float, str] | None:
    """Where a row's published model comes from: (its run, the file to read, its test BLEU, a note), the median seed
    when its files are here, else the seed nearest the median (nearest_the_median) whose run trained again
    (RUN.regen, for a ticket or a pre-trained-embedding row) is complete. That checkpoint need not be the ledger's bit
    for bit (another machine), so its own test BLEU is scored and its validations are compared with the ledger's;
    None where neither is here."""
    ranked = nearest_the_median(row["test_bleu"], row["runs"])
    by_name = {r.name: r for r in runs}
    for i, (bleu, name) in enumerate(ranked):
        elsewhere = "" if i == 0 else f"not the median seed ({ranked[0][1]}'s files are not here)"
        if artifact:
            src = os.path.join(WORK, "runs", name, "model.olt")
            if os.path.exists(src):
                return name, src, bleu, elsewhere
            continue
        found = stand_in(a, by_name[name]) if name in by_name else None
        if found is None:
            continue
        src, how = found
        if src.endswith("checkpoint_best.pt"):
            return name, src, bleu, elsewhere
        again = scored_on_test(a, src, prepared)[2][0]
        return name, src, round(again, 2), "; ".join(
            x for x in (f"{how}; the ledger's test BLEU {bleu:.2f}", elsewhere) if x)
    return None


def publish(a, out: str) -> list[str]:
    """The converged models a user would try: the median seed's masks-only and coated artifacts (each carrying its
    sentencepiece models) and the tuned dense model in fp16 (a follow-up chosen on validation in its tuned row's
    place: standing_row) (also in parts under PART_BYTES, which the repository
    can hold: the whole file is ignored), with a README of their test BLEU and commands."""
    from one_layer_lottery.io import read_checkpoint, save, weights_checkpoint

    runs, winners = plan(a)
    rows = row_results(a, winners)
    prepared = os.path.join(WORK, "data")
    os.makedirs(out, exist_ok=True)
    written, notes, parts = [], [], 0
    for row, name in (("masks_only", "masks_only.olt"), ("coats", "coats.olt"), ("dense", "dense_fp16.pt")):
        row = standing_row(a, winners, row)  # a follow-up chosen on validation stands for its tuned row
        source = published_source(a, rows[row], name.endswith(".olt"), runs, prepared) if row in rows else None
        if source is None:
            if row in rows:
                print(f"[study] {name}: no seed of {row} has its files on this machine (restored from the ledger "
                      f"without them): not published", flush=True)
            continue
        run_name, src, bleu, note = source
        target = os.path.join(out, name)
        if name.endswith(".olt"):
            shutil.copyfile(src, target)
        else:
            state = read_checkpoint(src)
            save(weights_checkpoint(state["cfg"], fp16_tied(state["model"]), state["optimizer_history"][-1]), target)
            for old in (f for f in os.listdir(out) if re.fullmatch(re.escape(name) + r"\.\d+", f)):
                os.unlink(os.path.join(out, old))
            if os.path.getsize(target) > PART_BYTES:
                with open(target, "rb") as f:
                    write_parts(f.read(), target)
                parts = -(-os.path.getsize(target) // PART_BYTES)
        written.append(name)
        r = rows[row]
        notes.append(f"| `{name}` | {r['label']} | {bleu:.2f} | {run_name}{f' ({note})' if note else ''} | "
                     f"{r['seeds_done']}/{r['seeds_planned']} | {os.path.getsize(target):,} |")
    for folder, prefix in (("bin", "dict."), ("spm", "spm.")):  # what the dense model needs to read raw text
        for f in sorted(os.listdir(os.path.join(prepared, folder))):
            if f.startswith(prefix) and f.endswith((".txt", ".model")):
                shutil.copyfile(os.path.join(prepared, folder, f), os.path.join(out, f))
    spm = f"spm.{a.src}.model" if os.path.exists(os.path.join(out, f"spm.{a.src}.model")) else "spm.joined.model"
    where = os.path.abspath(out)  # as seen from the repository's root
    where = os.path.relpath(where, ROOT) if where.startswith(ROOT + os.sep) else where
    join = [f"cat {where}/dense_fp16.pt.{{0..{parts - 1}}} > {where}/dense_fp16.pt   # once"] if parts else []
    write_text(os.path.join(out, "README.md"), "\n".join([
        "# Multi30k de-en models (converged study, benchmarks/study.py)", "",
        ("| file | model | test BLEU (test_2016_flickr) | run (the median of the seeds finished) | seeds finished | "
         "bytes |"), "|---|---|---|---|---|---|", *notes, "",
        ("A supermask model, plain text in and out: `one-layer-lottery translate FILE.olt \"Ein Hund läuft durch "
         "den Park.\"`."), "",
        *([("The dense model, with stock fairseq from the repository's root (the user-dir lets torch load a fairseq "
            "checkpoint safely; its test BLEU above is its run's fp32 checkpoint's, and the fp16 copy here can "
            "translate a sentence or two differently"
            + (f"; the repository's files stay under 2 MiB, so it holds this one in {parts} parts, "
               "`dense_fp16.pt.0` onwards, joined once by the first line):" if parts else "):")), "", "```bash",
           *join,
           f"echo \"Ein Hund läuft durch den Park.\" | fairseq-interactive {where} --user-dir one_layer_lottery \\",
           f"    --path {where}/dense_fp16.pt --source-lang {a.src} --target-lang {a.tgt} --beam 5 \\",
           f"    --bpe sentencepiece --sentencepiece-model {where}/{spm}", "```", ""]
          if "dense_fp16.pt" in written else []),
        (f"Reproduce: `python benchmarks/study.py RAW_DIR --parts {','.join(a.parts)}` trains every run to "
         f"convergence under its work directory (runs/RUN), tuning first; `--publish DIR` copies these files from "
         f"the median seed of each row. Published {time.strftime('%Y-%m-%d', time.gmtime())}."), ""]))
    return written


# ---------------------------------------------------------------- the loop

def main(argv=None) -> int:
    global WORK
    a = parse_args(argv)
    WORK = a.work
    if a.report:
        return run_guarded("study", lambda: restore_printed(a) or print(report(a)))
    if a.publish:
        return run_guarded("study", lambda: restore_printed(a) or print(
            f"[study] published {', '.join(publish(a, a.publish)) or 'nothing'} -> {a.publish}"))
    return run_guarded("study", loop, a)


def loop(a) -> int:
    if not os.path.isdir(a.raw_dir):
        raise ConfigError(f"data directory {a.raw_dir!r} does not exist")
    os.makedirs(a.work, exist_ok=True)
    prepared = os.path.join(a.work, "data")
    if not a.status and not os.path.isdir(os.path.join(prepared, "bin")):
        data.prepare(a.raw_dir, prepared, a.src, a.tgt, vocab_size=a.vocab)
    restore_printed(a)
    if a.status:
        runs, winners = plan(a)
        print(status(a, runs, {r.name: j for r in runs if (j := adopt(r))}))
        print("  winners so far: " + ", ".join(f"{f}: {w or 'not yet'}" for f, w in winners.items()))
        return 0
    active = {r.name: j for r in plan(a)[0] if (j := adopt(r))}
    for name in active:
        print(f"[study] {name}: still training (started by an earlier runner), followed", flush=True)
    # once: a run scored from here on gets every form from score()
    for name in backfill_forms(a, plan(a)[0], active, prepared):
        print(f"[study] {name}: scored in int8 with int8 embedding tables too", flush=True)
    last_status, failures = 0.0, {}
    while True:
        runs, winners = plan(a)
        reap(a, active, failures)
        for r in to_score(a, runs, active):
            res = score(a, r, prepared)
            print(f"[study] {r.name}: converged at {res['updates']} updates (best valid BLEU "
                  f"{res['valid_bleu']:.2f} at {res['best_update']}); test BLEU {res['test_bleu']:.2f}", flush=True)
        for name in keep(a, runs, winners, active):
            print(f"[study] {name}: recorded in the ledger {a.ledger}", flush=True)
        carry(a, active)  # quietly, every save
        for r in ready(runs, active)[:max(a.jobs - len(active), 0)]:
            if (back := replay_rewind(r)) is not None:
                print(f"[study] {r.name}: went back to update {back}, where its original resumed (resumed "
                      f"elsewhere, it would draw other batches)", flush=True)
            until = replay_stop(r)
            stop = f" (stopping at {until}, where its original resumed)" if until < r.max_update else ""
            print(f"[study] {r.name}: training from update {trained(r)} to "
                  f"{r.max_update if r.max_update < a.cap else 'convergence'}{stop}", flush=True)
            active[r.name] = launch(a, r, os.path.join(prepared, "bin"))
        if not active:
            break
        if time.time() - last_status > 1800:
            print(time.strftime("[study] %Y-%m-%d %H:%M status\n") + status(a, runs, active), flush=True)
            last_status = time.time()
        wait(active)
    runs, winners = plan(a)
    print(status(a, runs, {}))
    print("[study] nothing left to train for --parts " + ",".join(a.parts) + "; winners: " +
          ", ".join(f"{f}: {w}" for f, w in winners.items()))
    return 0


def restore_printed(a) -> None:
    if not os.path.isdir(os.path.join(a.work, "data", "bin")):
        return  # no corpus prepared to check the ledger against (the loop prepares it, then restores)
    names = restore(a)
    if names:
        print(f"[study] restored from the ledger {a.ledger} (finished runs, their checkpoints not here): "
              f"{', '.join(names)}", flush=True)


def to_score(a, runs: list[Run], active: dict) -> list[Run]:
    """The runs to score on test now: converged, not training, not scored before, not a follow-up variant left
    unchosen on validation, and validated at least once (a run that diverged before that has no checkpoint to
    score)."""
    return [r for r in runs if r.name not in active and r.max_update == a.cap and r.scored and converged(r, a)
            and result(r.name) is None and validations(r)]


def ready(runs: list[Run], active: dict) -> list[Run]:
    """The runs that may train now, in the order they start: a run already under way before any fresh one (a
    runner restarted after its trainers stopped resumes them rather than leave them half-trained behind new
    runs), then by part and seed."""
    by_name = {r.name: r for r in runs}
    free = [r for r in runs if r.name not in active and not complete(r)
            and all(by_name.get(n) and complete(by_name[n]) for n in r.needs)]
    return sorted(free, key=lambda r: (trained(r) == 0, r.priority, r.name))


def wait(active: dict, seconds: float = 5) -> None:
    """Up to `seconds`, less as soon as a job's process has exited (its run's next stage starts at once)."""
    deadline = time.time() + seconds
    while time.time() < deadline and all(job.poll() is None for job in active.values()):
        time.sleep(0.2)


def reap(a, active: dict, failures: dict) -> None:
    """Account for finished jobs; stop those whose patience ran out (counted over the whole log: fairseq's own
    count restarts when a run resumes) or that reached their budget (one adopted from an earlier runner may have
    been launched with a larger one), once the checkpoint of their last validation is written."""
    for name, job in list(active.items()):
        job.meter()
        if job.poll() is None:
            if not (complete(job.run) and saved(job.run)):
                continue
            job.stop()
        job.meter(every=0)  # written now: the latest sample (the process may already be gone)
        account(a, job)
        del active[name]
        if job.returncode != 0 and diverged(job.run):
            print(f"[study] {name}: diverged (fairseq: non-finite gradients; last saved at update "
                  f"{trained(job.run):,}); it ends there, its validations standing", flush=True)
        elif job.returncode != 0:
            failures[name] = failures.get(name, 0) + 1
            print(f"[study] {name}: fairseq-train exited {job.returncode} (see {job.run.dir}/train.log)", flush=True)
            if failures[name] >= 2:
                raise ConfigError(f"run {name} failed twice; see {job.run.dir}/train.log")


if __name__ == "__main__":
    sys.exit(main())
