"""benchmarks/study.py, the converged study: its bookkeeping from logs (unit) and the runner on a tiny budget (e2e)."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

import pytest
import sacrebleu
import torch
from conftest import ROOT, make_dictionary, run_card

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import common
import study

SCRIPT = os.path.join(ROOT, "benchmarks", "study.py")
TINY = ["--src", "src", "--tgt", "tgt", "--vocab", "600", "--dim", "32", "--ffn", "64", "--layers", "1", "--heads",
        "2", "--max-tokens", "1024", "--eval-every", "4", "--grid", "lr1e-3-d0.1,lr4e-3-d0.1-c0"]


def _valid_line(update: int, bleu: float) -> str:
    return (f"2026-12-02 10:00:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.1 | nll_loss 9 | "
            f"ppl 512 | bleu {bleu} | wps 1 | wpb 5 | bsz 2 | num_updates {update} | best_bleu {bleu}\n")


def _run_with_log(work, name, points, patience=3):
    run = study.Run(name, [], 0, patience, ())
    os.makedirs(run.dir, exist_ok=True)
    with open(os.path.join(run.dir, "train.log"), "w", encoding="utf-8") as f:
        f.writelines(_valid_line(u, b) for u, b in points)
    return run


def test_best_patience_and_halving_read_from_the_logs(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    run = _run_with_log(tmp_path, "r", [(4, 1.0), (8, 3.0), (12, 3.0), (16, 2.0), (20, 2.5)])
    vals = study.validations(run)
    assert study.best(vals) == (12, 3.0)  # the latest of equals: what fairseq's checkpoint_best.pt holds
    assert study.best(vals, upto=8) == (8, 3.0)
    # patience counts validations without a strictly better score, as fairseq's --patience: 12, 16 and 20
    assert study.stopped(vals, 3) and not study.stopped(vals, 4)
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--patience", "3",
                          "--grid", "lr1e-3-d0.1,lr2e-3-d0.1"])
    # halving ranks by the best validation up to the budget: lr2e-3 leads at 8 updates, lr1e-3 only later
    _run_with_log(tmp_path, "dense-lr1e-3-d0.1-s1", [(4, 1.0), (8, 2.0), (12, 9.0)])
    _run_with_log(tmp_path, "dense-lr2e-3-d0.1-s1", [(4, 3.0), (8, 2.5)])
    runs, winner = study.tuning(a, "dense")
    assert winner == "lr2e-3-d0.1"
    assert {r.name: r.max_update for r in runs} == {"dense-lr1e-3-d0.1-s1": 8, "dense-lr2e-3-d0.1-s1": a.cap}


def _saved_line(update: int, bleu: float) -> str:
    return (f"2026-12-02 10:00:01 | INFO | fairseq.checkpoint_utils | Saved checkpoint ckpt/checkpoint_3_{update}.pt "
            f"(epoch 3 @ {update} updates, score {bleu}) (writing took 0.1 seconds)\n")


def test_a_run_out_of_patience_is_stopped_once_its_last_validation_is_saved(tmp_path, monkeypatch):
    """Even where an epoch ends right after that save (the study's masks-only winner trained on past its patience
    when the save was followed within seconds by the epoch's end)."""
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--patience", "2"])
    run = _run_with_log(tmp_path, "r", [(4, 3.0), (8, 2.0), (12, 2.5)], patience=2)  # 2 without a better one
    run.max_update = 100  # far from its budget: patience stops it
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    active = {"r": study.Job(run, proc.pid, time.time(), 0, proc)}
    try:
        study.reap(a, active, {})
        assert "r" in active and proc.poll() is None  # the checkpoint of update 12 is not written yet: it trains on
        with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as f:
            f.write(_saved_line(12, 2.5))
            f.write("2026-12-02 10:00:02 | INFO | fairseq_cli.train | end of epoch 3 (average epoch stats below)\n"
                    "2026-12-02 10:00:02 | INFO | fairseq.trainer | begin training epoch 4\n")
        study.reap(a, active, {})
        assert "r" not in active and proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_a_run_that_diverges_ends_there_its_validations_standing_and_is_no_failure(tmp_path, monkeypatch, capsys):
    """fairseq's fp32 trainer raises on a non-finite gradient norm; a learning rate above the grid may do that. Such a
    run is over (a choice reads its validations so far), the runner goes on, and a restored copy says so too."""
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--patience", "4", "--parts", "followup", "--grid",
                          "lr1e-3-d0.1,lr4e-3-d0-c0"])
    crash = ("Traceback (most recent call last):\n  File \"fairseq/trainer.py\", line 970, in train_step\n"
             f"{study.DIVERGED}\n")
    run = _run_with_log(tmp_path, "followup_dense_lr4e-3-s1", [(4, 1.0), (8, 2.5)], patience=4)
    run.max_update = a.cap
    assert not study.complete(run) and not study.diverged(run)  # improving, far from its cap: it would train on
    with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as f:
        f.write(_saved_line(8, 2.5) + crash)
    assert study.diverged(run) and study.complete(run) and study.converged(run, a)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    proc.wait()
    active, failures = {run.name: study.Job(run, proc.pid, time.time(), 0, proc)}, {}
    study.reap(a, active, failures)
    assert not active and failures == {}  # not counted: two failures stop the whole study
    assert "diverged" in capsys.readouterr().out
    # the choice reads what it validated; one that diverged before validating ranks below every other
    winners = {"dense": "lr1e-3-d0.1", "mask": "lr4e-3-d0-c0"}
    _run_with_log(tmp_path, "dense-lr1e-3-d0.1-s1", [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.5), (20, 1.5), (24, 1.5)])
    assert study.followup_choice(a, winners, "dense") == "followup_dense_lr4e-3"
    planned = {r.name: r for r in study.plan(a)[0]}
    assert planned["followup_dense_lr4e-3-s1"] not in study.ready(list(planned.values()), {})
    early = _run_with_log(tmp_path, "followup_dense_lr4e-3-s1", [])
    with open(os.path.join(early.dir, "train.log"), "a", encoding="utf-8") as f:
        f.write(crash)
    assert study.valid_score(early) == -1.0 and study.followup_choice(a, winners, "dense") == "dense"
    planned = {r.name: r for r in study.plan(a)[0]}
    assert study.final(a, planned["followup_dense_lr4e-3-s1"], winners)
    assert study.to_score(a, [dataclasses.replace(planned["followup_dense_lr4e-3-s1"], scored=True)], {}) == []
    # the ledger keeps the line: restored elsewhere, the run is still over
    a.ledger = str(tmp_path / "ledger")
    with open(os.path.join(early.dir, "train.log"), "w", encoding="utf-8") as f:
        f.write(_valid_line(4, 1.0) + "| INFO | train_inner | num_updates=6\n" + crash)
    assert study.record(a, planned["followup_dense_lr4e-3-s1"])
    assert (tmp_path / "ledger" / early.name / "train.log").read_text(encoding="utf-8").splitlines()[-1] == (
        study.DIVERGED)


def test_a_run_past_its_budget_is_stopped_once_that_validation_is_saved(tmp_path, monkeypatch):
    """A run adopted from an earlier runner may have been launched with a larger --max-update than its plan's now
    (a candidate chosen at a halving budget)."""
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--patience", "4"])
    run = _run_with_log(tmp_path, "r", [(4, 1.0), (8, 2.0)], patience=4)  # improving: patience would not stop it
    run.max_update = 12
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    active = {"r": study.Job(run, proc.pid, time.time(), 0, proc)}
    try:
        with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as f:
            f.write(_saved_line(8, 2.0))
        study.reap(a, active, {})
        assert "r" in active  # below its budget: it trains on
        with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as f:
            f.write(_valid_line(12, 3.0))
        study.reap(a, active, {})
        assert "r" in active  # at its budget, but update 12's checkpoint is not written yet
        with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as f:
            f.write(_saved_line(12, 3.0))
        study.reap(a, active, {})
        assert "r" not in active and proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_cpu_time_is_measured_from_the_process_and_estimated_only_where_it_was_not(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    run = _run_with_log(tmp_path, "r", [(100, 1.0), (200, 2.0)])
    # a busy child: its CPU seconds, sampled from /proc and written to cpu.json, count; wall time does not
    busy = "import time\nwhile time.process_time() < 1.5: pass\ntime.sleep(1.5)"  # 1.5 s of CPU, 1.5 s idle
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-c", busy])
    job = study.Job(run, proc.pid, time.time(), 0, proc)
    while proc.poll() is None:
        job.meter()
        time.sleep(0.2)
    job.meter(every=0)
    wall = time.time() - t0
    segment = next(iter(common.read_json(os.path.join(run.dir, "cpu.json")).values()))
    assert 1.4 <= segment["cpu_s"] <= 2.0 < wall and (segment["first"], segment["last"]) == (0, 200)
    assert study.compute(run.dir, 200) == (segment["cpu_s"] / 3600, 0.0)
    assert not study.cpu_hours(run.dir, 200)[1].startswith("≈")
    own = segment["cpu_s"] / 200  # measured CPU seconds an update
    # 100 updates more whose process was killed before a sample: estimated at the run's measured rate, and marked
    assert study.compute(run.dir, 300, rate=99.0)[1] == pytest.approx(100 * own / 3600)
    assert study.cpu_hours(run.dir, 300)[1][0] == "≈"
    # a relaunch that has not reached a validation yet: its CPU counts, but it sets no rate for unmeasured updates
    study.write_json(os.path.join(run.dir, "cpu.json"), {**common.read_json(os.path.join(run.dir, "cpu.json")),
                                                         "99@7": {"cpu_s": 90.0, "first": 300, "last": 300}})
    assert study.compute(run.dir, 300) == pytest.approx(((segment["cpu_s"] + 90) / 3600, 100 * own / 3600))
    # a run never measured: the study's measured rate, else its launches' wall time an update (pauses and all)
    other = _run_with_log(tmp_path, "other", [(100, 1.0)])
    with open(os.path.join(other.dir, "compute.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"start": 5, "seconds": 720.0, "threads": 1, "updates_from": 0, "updates_to": 100}) + "\n")
    assert study.compute(other.dir, 100, rate=2.0) == (0.0, pytest.approx(200 / 3600))
    assert study.compute(other.dir, 100) == (0.0, pytest.approx(0.2))
    # the ETA's seconds an update: measured where measured, else wall time
    assert study.seconds_per_update(run) == pytest.approx(own) and study.seconds_per_update(other) == 7.2


def test_the_eta_takes_each_run_at_its_own_rate_else_its_peers(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    dense, mask = ["--arch", "transformer"], ["--arch", "x", "--arch", "one_layer"]  # fairseq reads the last
    runs = [study.Run("narrow", dense, 0, 3, (), width=0.125), study.Run("narrow2", dense, 0, 3, (), width=0.125),
            study.Run("full", mask, 0, 3, ()), study.Run("wide", mask, 0, 3, (), width=2),
            study.Run("narrow_new", dense, 0, 3, (), width=0.125)]
    rates = {"narrow": 0.4, "narrow2": 0.6, "full": 1.8, "wide": None, "narrow_new": None}
    assert study.arch(runs[2]) == "one_layer" and study.arch(study.Run("r", [], 0, 3, ())) == ""
    assert study.rate_guess(runs[0], runs, rates) == 0.4  # its own
    assert study.rate_guess(runs[4], runs, rates) == pytest.approx(0.5)  # its peers' median: same model and width
    # no peer: the measured runs' median rate at the benchmark width, scaled by width^1.5
    at_width_1 = sorted([0.4 / 0.125 ** 1.5, 0.6 / 0.125 ** 1.5, 1.8])[1]
    assert study.rate_guess(runs[3], runs, rates) == pytest.approx(at_width_1 * 2 ** 1.5)
    assert study.rate_guess(runs[3], runs, {}) == pytest.approx(1.8 * 2 ** 1.5)  # nothing measured yet


def test_the_eta_expects_a_fresh_run_to_train_as_long_as_the_converged_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    fresh = study.Run("fresh", [], 100, 2, ())
    assert study.typical_length([fresh], 100) == 6000  # nothing converged yet
    short = _run_with_log(tmp_path, "short", [(4, 2.0), (8, 1.0), (12, 1.0)])  # patience 2: converged at 12
    long = _run_with_log(tmp_path, "long", [(4, 1.0), (8, 2.0), (12, 3.0), (16, 1.0), (20, 1.0)])  # at 20
    going = _run_with_log(tmp_path, "going", [(4, 1.0), (8, 2.0), (12, 3.0), (16, 4.0)])  # not converged
    capped = _run_with_log(tmp_path, "capped", [(4, 1.0)])  # a fixed budget, not trained to convergence
    for r in (short, long, going):
        r.max_update, r.patience = 100, 2
    capped.max_update, capped.patience = 4, 2
    assert study.typical_length([fresh, short, long, going, capped], 100) == 16  # the median of 12 and 20


def _inner_line(update: int) -> str:
    return (f"2026-12-02 10:00:00 | INFO | train_inner | epoch 002:     69 / 131 loss=8.004, nll_loss=7.273, "
            f"ppl=154.68, wps=1929.8, ups=0.57, wpb=3379.6, bsz=224.3, num_updates={update}, lr=0.001, gnorm=0.955\n")


def test_status_shows_a_run_in_flight_at_its_logged_update_and_counts_its_eta_from_there(tmp_path, monkeypatch):
    """Between saves (every 500 updates; a magnitude-pruning run's first at its ramp's end) a run in flight's
    progress is its latest launch's train_inner lines; a relaunch resumes from its last save."""
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path)])
    run = _run_with_log(tmp_path, "r", [(1000, 1.0)])
    run.max_update = 10000  # a fixed budget under the cap: the ETA counts to it, at 1.8 s an update (none measured)
    with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as f:
        f.writelines([_saved_line(1000, 1.0), _inner_line(3900), _inner_line(4000)])
    text = study.status(a, [run], {"r": None})
    assert "running (at update 4,000; saved at 1,000)" in text
    assert "about 3.0 h of single-thread training left" in text  # (10,000 - 4,000) x 1.8 s
    with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as f:
        f.write("# 2026-12-02 11:00:00 fairseq-train bin --arch transformer\n")  # a relaunch, from 1,000
    text = study.status(a, [run], {"r": None})
    assert "(at update" not in text and "about 4.5 h of single-thread training left" in text


def test_a_run_under_way_resumes_before_fresh_runs(tmp_path, monkeypatch):
    """A restarted runner (the trainers stop with the session) resumes a half-trained run before starting a fresh
    one that ranks earlier; among fresh runs, part and seed order; a run waits for those it needs."""
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    first = study.Run("core-s1", [], 100, 3, (1, 1, 0))
    later = study.Run("core-s2", [], 100, 3, (1, 2, 0))
    half = _run_with_log(tmp_path, "core-s3", [(4, 1.0), (8, 2.0)])
    half.priority, half.max_update = (1, 3, 0), 100
    needy = study.Run("width-s1", [], 100, 3, (2, 1, 0), needs=("core-s1",))
    runs = [first, later, half, needy]
    assert [r.name for r in study.ready(runs, {})] == ["core-s3", "core-s1", "core-s2"]
    assert [r.name for r in study.ready(runs, {"core-s3": None})] == ["core-s1", "core-s2"]


def test_every_row_gets_its_first_seed_before_a_later_part_trains_a_second(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--patience", "2",
                          "--parts", "core,width,prune", "--grid", "lr1e-3-d0.1,lr4e-3-d0-c0"])
    _run_with_log(tmp_path, "dense-lr1e-3-d0.1-s1", [(4, 1.0), (8, 2.0)])
    _run_with_log(tmp_path, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0)])
    names = [r.name for r in sorted(study.plan(a)[0], key=lambda r: (r.priority, r.name))]
    blocks = [names[2:4], names[4:8], names[8:11], names[11:32], names[32:]]  # after the two tuning runs
    assert [sorted(b) for b in blocks] == [
        ["pretrained_frozen-s1", "pretrained_masked-s1"],  # core, seed by seed
        ["dense-lr1e-3-d0.1-s2", "mask-lr4e-3-d0-c0-s2", "pretrained_frozen-s2", "pretrained_masked-s2"],
        ["dense-lr1e-3-d0.1-s3", "mask-lr4e-3-d0-c0-s3", "pretrained_frozen-s3"],
        sorted(["coats-s1", "dense_half-s1", "dense_wide-s1", "dense_quarter-s1", "dense_eighth-s1",  # width ...
                "dense_half-d0.1-s1", "dense_half-d0-s1", "dense_quarter-d0.1-s1", "dense_quarter-d0-s1",
                "dense_eighth-d0.1-s1", "dense_eighth-d0-s1",
                "masks_only_wide-s1", "masks_only_wide-lr4e-3-s1", "masks_only_wide-lr2e-3-s1", "standard-s1",
                "dense_rewind-s1", "magnitude_k0.1-s1", "magnitude_k0.5-s1", "masks_only_k0.1-s1", "ticket_k0.1-s1",
                "ticket_k0.5-s1"]),  # ... and prune, seed 1 of each before either's seed 2
        sorted(["coats-s2", "dense_wide-s2",  # the narrow rows and twice the width wait for their setting's choice
                "standard-s2", "dense_rewind-s2",
                "magnitude_k0.5-s2", "ticket_k0.5-s2"])]
    assert names.index("dense_rewind-s1") < names.index("ticket_k0.5-s1")
    assert {n[:15] for n in names[11:14]} == {"masks_only_wide"}  # it decides the open target: first of its part


def test_followup_variants_are_chosen_on_validation_and_only_the_chosen_one_sees_test(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--patience", "2", "--parts",
                          "followup", "--grid", "lr1e-3-d0.1,lr4e-3-d0-c0"])
    _run_with_log(tmp_path, "dense-lr1e-3-d0.1-s1", [(4, 1.0), (8, 2.0)])
    _run_with_log(tmp_path, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)])  # converged: 2.0

    def planned():
        return {r.name: r for r in study.plan(a)[0] if r.name.startswith("followup")}

    runs = planned()
    assert set(runs) == {"followup_anneal_k-s1", "followup_warmup1000-s1", "followup_lr1.6e-2-s1",
                         "followup_dense_lr4e-3-s1"}
    assert not any(r.scored for r in runs.values())  # no test score before the choice
    anneal = runs["followup_anneal_k-s1"].args
    assert anneal[anneal.index("--lr") + 1] == "4e-3" and anneal[-4:] == ["--ratio-anneal-updates", "1000",
                                                                          "--seed", 1]
    warm = runs["followup_warmup1000-s1"].args  # its warmup comes after the family's 200: fairseq takes the last
    assert [x for i, x in enumerate(warm) if i and warm[i - 1] == "--warmup-updates"] == ["200", "1000"]
    _run_with_log(tmp_path, "followup_anneal_k-s1", [(4, 1.0), (8, 2.5), (12, 2.0), (16, 2.0)])  # best on valid
    _run_with_log(tmp_path, "followup_warmup1000-s1", [(4, 1.0), (8, 2.2)])  # still training
    assert study.followup_choice(a, {"mask": "lr4e-3-d0-c0"}) is None and set(planned()) == set(runs)
    winners = {"dense": "lr1e-3-d0.1", "mask": "lr4e-3-d0-c0"}
    assert not study.out_of_the_running(a, runs["followup_anneal_k-s1"], winners)  # 2.5 leads the tuned 2.0
    assert not study.final(a, runs["followup_anneal_k-s1"], {"dense": "lr1e-3-d0.1", "mask": "lr4e-3-d0-c0"})
    _run_with_log(tmp_path, "followup_warmup1000-s1", [(4, 1.0), (8, 2.2), (12, 2.0), (16, 2.0)])
    assert study.followup_choice(a, {"mask": "lr4e-3-d0-c0"}) is None  # one variant still to converge
    fast = runs["followup_lr1.6e-2-s1"].args
    assert [x for i, x in enumerate(fast) if i and fast[i - 1] == "--lr"] == ["4e-3", "1.6e-2"]  # the last counts
    _run_with_log(tmp_path, "followup_lr1.6e-2-s1", [(4, 0.5), (8, 0.4), (12, 0.3)])
    assert study.followup_choice(a, {"mask": "lr4e-3-d0-c0"}) == "followup_anneal_k"
    assert study.standing_row(a, winners, "masks_only") == "followup_anneal_k"  # --publish ships its artifact
    runs = planned()
    assert {n: r.scored for n, r in runs.items()} == {
        "followup_anneal_k-s1": True, "followup_anneal_k-s2": True, "followup_anneal_k-s3": True,
        "followup_warmup1000-s1": False, "followup_lr1.6e-2-s1": False, "followup_dense_lr4e-3-s1": False}
    assert [r.name for r in study.to_score(a, list(runs.values()), {})] == ["followup_anneal_k-s1"]
    # the chosen variant's scored seeds go to the ledger with their artifacts, which --publish ships in its place
    a.ledger = str(tmp_path / "ledger")
    second = _run_with_log(tmp_path, "followup_anneal_k-s2", [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)])
    study.write_json(os.path.join(second.dir, "result.json"), {"run": second.name, "test_bleu": 2.0})
    (pathlib.Path(second.dir) / "model.olt").write_bytes(b"artifact")
    assert study.keep(a, [runs["followup_anneal_k-s2"]], winners, {}) == [second.name]
    assert (tmp_path / "ledger" / second.name / "model.olt").read_bytes() == b"artifact"
    a.ledger = None
    lines = []
    table = study.followup_table(a, {"mask": "lr4e-3-d0-c0"}, lines)
    assert table["chosen"] == "followup_anneal_k" and table["variants"]["masks_only"]["valid_bleu"] == 2.0
    assert any("**chosen**" in x and "2.50 (8)" in x for x in lines)
    # a tie with the tuned setting keeps the tuned setting: nothing more trains, nothing goes to test
    _run_with_log(tmp_path, "followup_anneal_k-s1", [(4, 1.0), (8, 2.0), (12, 2.0), (16, 2.0)])
    _run_with_log(tmp_path, "followup_warmup1000-s1", [(4, 1.0), (8, 1.9), (12, 1.5), (16, 1.5)])
    assert study.followup_choice(a, {"mask": "lr4e-3-d0-c0"}) == "masks_only"
    assert {n: r.scored for n, r in planned().items()} == {
        "followup_anneal_k-s1": False, "followup_warmup1000-s1": False, "followup_lr1.6e-2-s1": False,
        "followup_dense_lr4e-3-s1": False}
    # before the choice, a converged variant that the tuned setting beats (or ties) is out of the running: the
    # ledger keeps its log, not its weights (a supermask's take some 19 MB); one still in the running keeps them
    _run_with_log(tmp_path, "followup_warmup1000-s1", [(4, 1.0), (8, 2.2)])  # training: it may yet win
    assert study.out_of_the_running(a, runs["followup_anneal_k-s1"], winners)  # 2.0, tied with the tuned 2.0
    assert not study.out_of_the_running(a, runs["followup_warmup1000-s1"], winners)
    a.ledger = str(tmp_path / "ledger")
    for name, scores in (("followup_anneal_k-s1", [(4, 1.0), (8, 2.0), (12, 2.0), (16, 2.0)]),
                         ("followup_warmup1000-s1", [(4, 1.0), (8, 2.5), (12, 2.0), (16, 2.0)])):
        run = _run_with_log(tmp_path, name, scores)
        _checkpoint(os.path.join(run.dir, "checkpoint_best.pt"), 8, 1.0)
        with open(os.path.join(run.dir, "train.log"), "a", encoding="utf-8") as f:
            f.write(_saved_line(16, 2.0))
        _checkpoint(os.path.join(run.dir, "checkpoint_last.pt"), 16, 2.0)
        if name.startswith("followup_anneal"):  # the warmup variant still trains past its first validations
            kept = study.keep(a, list(planned().values()), winners, {"followup_warmup1000-s1": None})
            assert sorted(kept) == [name, "followup_lr1.6e-2-s1"]  # out of the running, converged: no weights
            assert not any(study.PART.match(f) for f in os.listdir(tmp_path / "ledger" / name))
    assert study.followup_choice(a, winners) == "followup_warmup1000"


def test_dense_has_its_own_follow_up_chosen_against_its_tuned_setting_and_read_as_a_second_baseline(tmp_path,
                                                                                                      monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--patience", "2", "--parts",
                          "followup", "--grid", "lr1e-3-d0.1,lr4e-3-d0-c0"])
    winners = {"dense": "lr1e-3-d0.1", "mask": "lr4e-3-d0-c0"}
    _run_with_log(tmp_path, "dense-lr1e-3-d0.1-s1", [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)])  # converged: 2.0
    _run_with_log(tmp_path, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)])

    def dense_runs():
        return {r.name: r for r in study.plan(a)[0] if r.name.startswith("followup_dense")}

    run = dense_runs()["followup_dense_lr4e-3-s1"]
    assert [x for i, x in enumerate(run.args) if i and run.args[i - 1] == "--lr"] == ["1e-3", "4e-3"]
    assert "transformer" in run.args and not run.scored and run.pending
    assert study.followup_choice(a, winners, "dense") is None and study.followup_pairs(a, winners) == ()
    # the masks-only variants' choice does not wait for dense's, nor dense's for theirs
    for name in ("followup_anneal_k-s1", "followup_warmup1000-s1", "followup_lr1.6e-2-s1"):
        _run_with_log(tmp_path, name, [(4, 1.0), (8, 1.5), (12, 1.5), (16, 1.5)])
    assert study.followup_choice(a, winners) == "masks_only"
    _run_with_log(tmp_path, "followup_dense_lr4e-3-s1", [(4, 1.0), (8, 2.0), (12, 2.0), (16, 2.0)])  # a tie
    assert study.followup_choice(a, winners, "dense") == "dense" and set(dense_runs()) == {run.name}
    assert study.followup_pairs(a, winners) == () and not dense_runs()[run.name].scored
    _run_with_log(tmp_path, "followup_dense_lr4e-3-s1", [(4, 1.0), (8, 2.5), (12, 2.0), (16, 2.0)])  # it wins
    assert study.followup_choice(a, winners, "dense") == "followup_dense_lr4e-3"
    runs = dense_runs()
    assert {n: r.scored for n, r in runs.items()} == {f"followup_dense_lr4e-3-s{s}": True for s in (1, 2, 3)}
    assert runs["followup_dense_lr4e-3-s2"].args[-2:] == ["--seed", 2]
    assert study.standing_row(a, winners, "dense") == "followup_dense_lr4e-3"  # --publish ships it as the dense
    assert study.standing_row(a, winners, "masks_only") == "masks_only"  # (no masks-only variant was chosen)
    assert study.standing_row(a, winners, "coats") == "coats"
    pairs = study.followup_pairs(a, winners)
    assert [(row, other) for row, other, _ in pairs] == [(row, "followup_dense_lr4e-3") for row in study.AGAINST_DENSE]
    lines = []
    table = study.followup_table(a, winners, lines, "dense")
    assert table["chosen"] == "followup_dense_lr4e-3" and table["variants"]["dense"]["valid_bleu"] == 2.0
    assert lines[1].startswith("| dense variant |")  # its own header: docs/study_tables.py copies each table once
    assert any("**chosen**" in x and "2.50 (8)" in x for x in lines)
    # the comparisons read a row's seeds against the chosen dense variant's, as PAIRS' rows
    rows = {"masks_only": {"label": "m", "runs": ["m-s1"], "test_bleu": [10.0], "mean": 10.0},
            "followup_dense_lr4e-3": {"label": "d", "runs": ["f-s1"], "test_bleu": [20.0], "mean": 20.0}}
    for name, hyp in (("m-s1", "a b c"), ("f-s1", "a b c d")):
        os.makedirs(tmp_path / "runs" / name, exist_ok=True)
        (tmp_path / "runs" / name / "test.hyp").write_text(hyp + "\n", encoding="utf-8")
    out = study.comparisons(rows, ["a b c d"], [], pairs)
    assert [(c["model"], c["against"], c["ratio"]) for c in out] == [("masks_only", "followup_dense_lr4e-3", 0.5)]


def test_the_smallest_dense_widths_choose_their_dropout_on_validation_before_any_test_score(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--patience", "2", "--parts", "width",
                          "--grid", "lr1e-3-d0.3,lr4e-3-d0-c0"])
    _run_with_log(tmp_path, "dense-lr1e-3-d0.3-s1", [(4, 1.0), (8, 2.0)])
    _run_with_log(tmp_path, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0)])

    def planned(row="dense_eighth"):
        return {r.name: r for r in study.plan(a)[0] if r.name.startswith(row)}

    runs = planned()
    assert set(runs) == {"dense_eighth-s1", "dense_eighth-d0.1-s1", "dense_eighth-d0-s1"}  # no seed 2 yet
    # queued narrowest first (what the ledger can carry), at a width the other dropouts (sooner converged) before the
    # family's, all before the part's other seed-1 runs
    order = [r.name for r in study.ready(study.plan(a)[0], {}) if r.name.startswith(("dense_", "coats")) and r.seed == 1]
    assert order == ["dense_eighth-d0-s1", "dense_eighth-d0.1-s1", "dense_eighth-s1", "dense_quarter-d0-s1",
                     "dense_quarter-d0.1-s1", "dense_quarter-s1", "dense_half-d0-s1", "dense_half-d0.1-s1",
                     "dense_half-s1", "coats-s1", "dense_wide-s1"]
    assert not any(r.scored for r in runs.values())
    d0 = runs["dense_eighth-d0-s1"].args  # the family's dropout, then the variant's: fairseq takes the last
    assert [x for i, x in enumerate(d0) if i and d0[i - 1] == "--dropout"] == ["0.3", "0"] and d0[-2:] == ["--seed", 1]
    assert runs["dense_eighth-d0-s1"].width == 0.125 and "--dropout" not in runs["dense_eighth-s1"].args[-2:]
    _run_with_log(tmp_path, "dense_eighth-s1", [(4, 1.0), (8, 2.0), (12, 2.0), (16, 2.0)])
    _run_with_log(tmp_path, "dense_eighth-d0.1-s1", [(4, 1.0), (8, 3.0), (12, 2.0), (16, 2.0)])  # best on valid
    _run_with_log(tmp_path, "dense_eighth-d0-s1", [(4, 1.0), (8, 2.5)])  # still training
    assert study.retune_choice(a, "dense_eighth") is None and set(planned()) == set(runs)
    winners = {"dense": "lr1e-3-d0.3", "mask": "lr4e-3-d0-c0"}
    # a converged candidate stays off the ledger until the choice (restored without its checkpoint and then chosen,
    # it could not be scored)
    assert not study.final(a, planned()["dense_eighth-s1"], winners)
    _run_with_log(tmp_path, "dense_eighth-d0-s1", [(4, 1.0), (8, 2.5), (12, 2.0), (16, 2.0)])
    assert study.retune_choice(a, "dense_eighth") == "d0.1"
    runs = planned()
    assert study.final(a, runs["dense_eighth-s1"], winners) and not study.final(a, runs["dense_eighth-d0.1-s1"], winners)
    assert {n: r.scored for n, r in runs.items()} == {"dense_eighth-s1": False, "dense_eighth-d0-s1": False,
                                                       "dense_eighth-d0.1-s1": True, "dense_eighth-d0.1-s2": True}
    assert runs["dense_eighth-d0.1-s2"].args == runs["dense_eighth-d0.1-s1"].args[:-1] + [2]
    assert [r.name for r in study.to_score(a, list(runs.values()), {})] == ["dense_eighth-d0.1-s1"]
    # its seed 2 trains next, ahead of the other widths' candidates and the part's other seed-1 runs
    order = [r.name for r in study.ready(study.plan(a)[0], {}) if r.name.startswith(("dense_", "coats"))]
    assert order[:3] == ["dense_eighth-d0.1-s2", "dense_quarter-d0-s1", "dense_quarter-d0.1-s1"]
    assert set(planned("dense_quarter")) == {"dense_quarter-s1", "dense_quarter-d0.1-s1", "dense_quarter-d0-s1"}
    # the results row holds the chosen variant's seeds only, its dropout named; the table marks the choice
    for name, bleu in (("dense_eighth-s1", 9.0), ("dense_eighth-d0.1-s1", 5.0)):
        study.write_json(os.path.join(tmp_path, "runs", name, "result.json"), {
            "run": name, "test_bleu": bleu, "valid_bleu": 3.0, "best_update": 8, "updates": 16, "cpu_hours": 0.1,
            "fp16_bytes": 10, "int8_bytes": 8, "int8_test_bleu": bleu})
    row = study.row_results(a, {"dense": "lr1e-3-d0.3", "mask": "lr4e-3-d0-c0"})["dense_eighth"]
    assert row["runs"] == ["dense_eighth-d0.1-s1"] and row["test_bleu"] == [5.0]
    assert row["label"].endswith("(dropout 0.1, chosen at its width)")
    # a row scored with the family's setting before its width's choice (half the width) shows that, marked pending
    study.write_json(os.path.join(tmp_path, "runs", "dense_half-s1", "result.json"), {
        "run": "dense_half-s1", "test_bleu": 7.0, "valid_bleu": 3.0, "best_update": 8, "updates": 16,
        "cpu_hours": 0.1, "fp16_bytes": 10, "int8_bytes": 8, "int8_test_bleu": 7.0})
    row = study.row_results(a, {"dense": "lr1e-3-d0.3", "mask": "lr4e-3-d0-c0"})["dense_half"]
    assert row["test_bleu"] == [7.0] and row["label"].endswith("(dropout 0.3, its width's choice pending)")
    lines = []
    table = study.retune_table(a, {"dense": "lr1e-3-d0.3", "mask": "lr4e-3-d0-c0"}, lines)
    assert table["dense_eighth-d0.1-s1"] == {"setting": "dropout 0.1", "valid_bleu": 3.0, "state": "converged",
                                             "chosen": True}
    assert table["dense_eighth-s1"]["setting"] == "dropout 0.3" and table["dense_quarter-d0-s1"]["state"] == "waiting"
    assert any("dense_eighth **chosen** | dropout 0.1 | 3.00 (8)" in x for x in lines)
    # a tie keeps the family's setting
    for name in ("dense_eighth-d0.1-s1", "dense_eighth-d0-s1"):
        _run_with_log(tmp_path, name, [(4, 1.0), (8, 2.0), (12, 2.0), (16, 2.0)])
    assert study.retune_choice(a, "dense_eighth") == ""
    assert {n: r.scored for n, r in planned().items()} == {"dense_eighth-s1": True, "dense_eighth-s2": True,
                                                           "dense_eighth-d0-s1": False, "dense_eighth-d0.1-s1": False}


def test_masks_only_at_twice_the_width_chooses_its_learning_rate_at_the_first_halving_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    ledger = tmp_path / "ledger"
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--patience", "2", "--parts", "width",
                          "--grid", "lr1e-3-d0.3,lr4e-3-d0-c0", "--ledger", str(ledger)])
    _run_with_log(tmp_path, "dense-lr1e-3-d0.3-s1", [(4, 1.0), (8, 2.0)])
    _run_with_log(tmp_path, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0)])
    winners = {"dense": "lr1e-3-d0.3", "mask": "lr4e-3-d0-c0"}
    names = ("masks_only_wide-s1", "masks_only_wide-lr4e-3-s1", "masks_only_wide-lr2e-3-s1")

    def planned():
        return {r.name: r for r in study.plan(a)[0] if r.name.startswith("masks_only_wide")}

    runs = planned()
    assert set(runs) == set(names)  # no seed 2 before the choice
    assert {r.max_update for r in runs.values()} == {8}  # the first halving budget, not convergence
    assert not any(r.scored for r in runs.values()) and all(r.pending for r in runs.values())
    lr = runs["masks_only_wide-lr2e-3-s1"].args  # the family's lr, then the variant's: fairseq takes the last
    assert [x for i, x in enumerate(lr) if i and lr[i - 1] == "--lr"] == ["4e-3", "2e-3"]
    assert runs["masks_only_wide-lr2e-3-s1"].width == 2
    # first of the part's seed-1 runs, before the narrow dense rows' candidates
    order = [r.name for r in study.ready(study.plan(a)[0], {}) if r.seed == 1 and r.priority[0] == 2]
    assert set(order[:3]) == set(names) and order[3] == "dense_eighth-d0-s1"
    _run_with_log(tmp_path, names[0], [(4, 0.01), (8, 0.02), (12, 20.0)])  # adopted past its budget: 12 not read
    _run_with_log(tmp_path, names[1], [(4, 5.0), (8, 9.0)])
    _run_with_log(tmp_path, names[2], [(4, 6.0)])  # not at the budget yet
    assert study.retune_choice(a, "masks_only_wide") is None
    assert not {n for n in study.keep(a, study.plan(a)[0], winners, {}) if n.startswith("masks_only_wide")}
    _run_with_log(tmp_path, names[2], [(4, 6.0), (8, 7.0)])
    assert study.retune_choice(a, "masks_only_wide") == "lr4e-3"
    # at its budget and not chosen yet, a candidate goes to the ledger without weights only once it is final
    runs = planned()
    assert {n: (r.max_update, r.scored) for n, r in runs.items()} == {
        names[0]: (8, False), names[2]: (8, False), names[1]: (a.cap, True), "masks_only_wide-lr4e-3-s2": (a.cap, True)}
    assert runs["masks_only_wide-lr4e-3-s2"].priority == study.queue(2, 2)  # seed 2 in the seed-2 order
    assert runs[names[1]].priority == study.queue(2, 1, -2)
    written = set(study.keep(a, study.plan(a)[0], winners, {}))
    assert {names[0], names[2]} <= written and names[1] not in written
    assert not [f for f in os.listdir(ledger / names[0]) if f.startswith("checkpoint")]
    lines = []
    table = study.retune_table(a, winners, lines)
    assert table[names[1]] == {"setting": "lr 4e-3", "valid_bleu": 9.0, "state": "training", "chosen": True}
    assert table[names[0]]["valid_bleu"] == 0.02 and table["dense_eighth-d0-s1"]["setting"] == "dropout 0"
    assert table[names[2]]["state"] == "reached 8"
    assert any("masks_only_wide **chosen** | lr 4e-3 | 9.00 (8) | 8 (training)" in x for x in lines)
    # the chosen one trains on past the budget: the table keeps its best up to the budget, the choice's figure,
    # and says training, then converged (not "reached 8")
    _run_with_log(tmp_path, names[1], [(4, 5.0), (8, 9.0), (12, 9.5)])
    lines = []
    study.retune_table(a, winners, lines)
    assert any("masks_only_wide **chosen** | lr 4e-3 | 9.00 (8) | 12 (training)" in x for x in lines)
    _run_with_log(tmp_path, names[1], [(4, 5.0), (8, 9.0), (12, 9.5)] + [(16 + 4 * i, 1.0) for i in range(a.patience)])
    assert study.retune_table(a, winners, [])[names[1]]["state"] == "converged"
    _run_with_log(tmp_path, names[1], [(4, 5.0), (8, 9.0)])
    study.write_json(os.path.join(tmp_path, "runs", names[1], "result.json"), {
        "run": names[1], "test_bleu": 5.0, "valid_bleu": 9.0, "best_update": 8, "updates": 16, "cpu_hours": 0.1,
        "artifact_bytes": 10})
    row = study.row_results(a, winners)["masks_only_wide"]
    assert row["runs"] == [names[1]] and row["label"].endswith("(lr 4e-3, chosen at its width)")


def _machine(root, dictionary="de 5\n"):
    """A work directory with a prepared corpus (its dictionaries: what the ledger's fingerprint reads)."""
    for f in ("dict.de.txt", "dict.en.txt"):
        os.makedirs(root / "data" / "bin", exist_ok=True)
        (root / "data" / "bin" / f).write_text(dictionary)
    return root


def _first_machine(tmp_path, monkeypatch, part, grid):
    """Machine A of a ledger test, its study's work directory: (the ledger, the study's arguments but --work,
    A's root, A's parsed arguments)."""
    ledger = tmp_path / "ledger"
    args = ["raw", "--stages", "8:1", "--patience", "2", "--parts", part, "--grid", grid, "--ledger", str(ledger)]
    first = _machine(tmp_path / "A")
    monkeypatch.setattr(study, "WORK", str(first))
    return ledger, args, first, study.parse_args([*args, "--work", str(first)])


def test_finished_runs_outlive_their_machine_through_the_ledger(tmp_path, monkeypatch):
    """Machine A records its finished runs; a fresh machine B restores their rows from the ledger alone, and the
    runs that read a restored run's checkpoint wait for it to be trained again to the update it was chosen at."""
    ledger, args, first, a = _first_machine(tmp_path, monkeypatch, "core", "lr1e-3-d0.1,lr4e-3-d0-c0")
    assert study.restore(a) == [] and (ledger / "study.json").exists()
    dense = _run_with_log(first, "dense-lr1e-3-d0.1-s1", [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)])  # converged
    mask = _run_with_log(first, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0), (12, 3.0)])  # training on
    with open(os.path.join(dense.dir, "train.log"), "a", encoding="utf-8") as f:
        f.write("2026-12-04 | INFO | train_inner | epoch 002:  100 / 9 loss=4.1 nll_loss=3 ppl=8 num_updates=16\n")
        f.write(_saved_line(16, 1.0))
    for run in (dense, mask):
        for name in ("checkpoint_best.pt", "model.olt", "test.hyp"):
            (first / "runs" / run.name / name).write_text("x")
    common.write_json(os.path.join(dense.dir, "result.json"), {"run": dense.name, "test_bleu": 30.0, "valid_bleu": 2.0,
                      "best_update": 8, "updates": 16, "cpu_hours": 0.5, "fp16_bytes": 10, "int8_bytes": 6,
                      "int8_test_bleu": 29.0})
    runs, winners = study.plan(a)
    assert study.keep(a, runs, winners, {}) == ["dense-lr1e-3-d0.1-s1"]  # the one finished run, once
    assert study.keep(a, runs, winners, {}) == []
    mask = _run_with_log(first, mask.name, [(4, 1.0), (8, 2.0), (12, 3.0), (16, 2.0), (20, 2.0)])  # converged
    common.write_json(os.path.join(mask.dir, "result.json"), {"run": mask.name, "test_bleu": 20.0, "valid_bleu": 3.0,
                      "best_update": 12, "updates": 20, "cpu_hours": 0.4, "model_bytes": 5, "artifact_bytes": 9})
    assert study.keep(a, runs, winners, {mask.name: None}) == []  # not while it trains
    assert study.keep(a, runs, winners, {}) == [mask.name]
    assert (ledger / mask.name / "model.olt").exists()  # a masks-only seed: --publish may copy its artifact
    kept = (ledger / dense.name / "train.log").read_text()
    assert "train_inner" not in kept and study.validations(study.Run(dense.name, [], 0, 2, ())) == \
        [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)]
    assert not (ledger / dense.name / "checkpoint_best.pt").exists() and not (ledger / dense.name / "model.olt").exists()
    frozen = {r.name: r for r in runs}["pretrained_frozen-s1"]
    assert str(first / "runs" / dense.name / "checkpoint_best.pt") in frozen.args

    second = _machine(tmp_path / "B")  # a fresh machine: the ledger only
    monkeypatch.setattr(study, "WORK", str(second))
    b = study.parse_args([*args, "--work", str(second)])
    assert study.restore(b) == [dense.name, mask.name] and study.restore(b) == []
    restored = study.Run(dense.name, [], 0, 2, ())
    assert study.validations(restored) == [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)] and study.lost(restored)
    assert study.row_results(b, winners)["dense"]["test_bleu"] == [30.0]  # its row stands without its checkpoint
    runs = {r.name: r for r in study.plan(b)[0]}
    regen = runs["dense-lr1e-3-d0.1-s1.regen"]
    assert regen.max_update == 8 and regen.args == study.tuned_run(b, "dense", "lr1e-3-d0.1", 1, 1).args  # same seed
    frozen = runs["pretrained_frozen-s1"]
    assert str(second / "runs" / regen.name / "checkpoint_last.pt") in frozen.args and regen.name in frozen.needs
    ready = [r.name for r in study.ready(list(runs.values()), {})]
    assert regen.name in ready and "pretrained_frozen-s1" not in ready and dense.name not in ready
    _run_with_log(second, regen.name, [(4, 1.0), (8, 2.0)])  # trained again: it retraced the ledger's run
    assert study.regen_lines(list(runs.values())) == [f"{regen.name}: 2 of 2 validations as in the ledger"]
    assert "pretrained_frozen-s1" in [r.name for r in study.ready(study.plan(b)[0], {})]
    assert regen.priority == frozen.priority  # trained again in its reader's turn, not its own run's
    # once every run that reads it is complete (restored from the ledger too), nothing trains it again
    for name in ("pretrained_frozen-s1", "pretrained_masked-s1"):
        _run_with_log(second, name, [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)])
    shutil.rmtree(os.path.join(second, "runs", regen.name))
    assert not any(r.name.endswith(".regen") for r in study.plan(b)[0])

    other = _machine(tmp_path / "C", dictionary="de 7\n")  # another corpus: its ledger is refused, in one line
    with pytest.raises(study.ConfigError, match="dictionaries .* pass another folder"):
        study.restore(study.parse_args([*args, "--work", str(other)]))


def _checkpoint(path, updates, value):
    """A fairseq-shaped checkpoint: weights, the optimizer's state and its history (the update it was saved at)."""
    torch.save({"cfg": {"model": {"_name": "transformer"}}, "model": {"w": torch.full((300,), value)},
                "last_optimizer_state": {"state": {0: {"exp_avg": torch.full((300,), value)}}},
                "optimizer_history": [{"criterion_name": "x", "optimizer_name": "adam", "lr_scheduler_state": {},
                                       "num_updates": updates}], "extra_state": {"best": value}}, path)


def test_candidates_and_small_runs_in_flight_outlive_their_machine_through_the_ledger(tmp_path, monkeypatch):
    """A candidate converged before its width's choice is recorded with its best weights (chosen later on a fresh
    machine, it is scored from them); a small run in flight is recorded at each save with its last checkpoint and
    resumes on a fresh machine from where it was; the checkpoints go, in parts under the file limit, once a run is
    final; a checkpoint that does not hold the run's last save is not taken."""
    monkeypatch.setattr(study, "PART_BYTES", 1000)  # a few parts each
    ledger, args, first, a = _first_machine(tmp_path, monkeypatch, "width", "lr1e-3-d0.3,lr4e-3-d0-c0")
    study.restore(a)
    winners = {"dense": "lr1e-3-d0.3", "mask": "lr4e-3-d0-c0"}
    _run_with_log(first, "dense-lr1e-3-d0.3-s1", [(4, 1.0), (8, 2.0)])
    _run_with_log(first, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0)])
    candidate = _run_with_log(first, "dense_eighth-d0-s1", [(4, 1.0), (8, 3.0), (12, 2.0), (16, 2.0)], patience=2)
    flight = _run_with_log(first, "dense_eighth-d0.1-s1", [(4, 1.0), (8, 2.0)], patience=2)
    for run, best_at, last_at in ((candidate, 8, 16), (flight, 8, 12)):
        _checkpoint(os.path.join(run.dir, "checkpoint_best.pt"), best_at, 1.0)
        _checkpoint(os.path.join(run.dir, "checkpoint_last.pt"), last_at, 2.0)
    with open(os.path.join(candidate.dir, "train.log"), "a", encoding="utf-8") as f:
        f.write(_saved_line(16, 2.0))
    runs = {r.name: r for r in study.plan(a)[0]}
    assert study.keep(a, list(runs.values()), winners, {flight.name: None}) == [candidate.name]
    kept = sorted(os.listdir(ledger / candidate.name))
    assert "checkpoint_best.pt.1" in kept and not any(f.startswith("checkpoint_last") for f in kept)
    assert all(os.path.getsize(ledger / candidate.name / f) <= 1000 for f in kept if f.startswith("checkpoint"))
    job = study.Job(runs[flight.name], 0, time.time(), 0)
    assert study.carry(a, {flight.name: job}) == []  # its last save (update 8) is not in its log: not taken
    with open(os.path.join(flight.dir, "train.log"), "a", encoding="utf-8") as f:
        f.write(_saved_line(8, 2.0))
    assert study.carry(a, {flight.name: job}) == []  # checkpoint_last.pt holds update 12, the log's last save is 8
    _checkpoint(os.path.join(flight.dir, "checkpoint_last.pt"), 8, 2.0)
    assert study.carry(a, {flight.name: job}) == [flight.name] and study.carry(a, {flight.name: job}) == []
    assert any(f.startswith("checkpoint_last.pt.") for f in os.listdir(ledger / flight.name))
    with monkeypatch.context() as m:
        m.setattr(study, "CARRY_BYTES", 100)  # a larger run in flight is not carried
        _run_with_log(first, flight.name, [(4, 1.0), (8, 2.0), (12, 2.5)])
        with open(os.path.join(flight.dir, "train.log"), "a", encoding="utf-8") as f:
            f.write(_saved_line(12, 2.5))
        _checkpoint(os.path.join(flight.dir, "checkpoint_last.pt"), 12, 2.0)
        assert study.carry(a, {flight.name: job}) == []

    second = _machine(tmp_path / "B")  # a fresh machine: the ledger only
    monkeypatch.setattr(study, "WORK", str(second))
    b = study.parse_args([*args, "--work", str(second)])
    assert study.restore(b) == [candidate.name, flight.name]
    _run_with_log(second, "dense-lr1e-3-d0.3-s1", [(4, 1.0), (8, 2.0)])  # the winners (the ledger holds them once
    _run_with_log(second, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0)])  # they converge)
    restored = {r.name: r for r in study.plan(b)[0]}
    assert not study.lost(restored[candidate.name]) and not study.lost(restored[flight.name])
    best = torch.load(os.path.join(restored[candidate.name].dir, "checkpoint_best.pt"), weights_only=True)
    assert torch.equal(best["model"]["w"], torch.full((300,), 1.0)) and best["last_optimizer_state"] is None
    last = torch.load(os.path.join(restored[flight.name].dir, "checkpoint_last.pt"), weights_only=True)
    assert last["optimizer_history"][-1]["num_updates"] == 8 and "exp_avg" in last["last_optimizer_state"]["state"][0]
    assert not any(study.PART.match(f) for f in os.listdir(restored[flight.name].dir))
    assert study.trained(restored[flight.name]) == 8  # it resumes from update 8, first in the queue
    assert next(r.name for r in study.ready(list(restored.values()), {}) if r.name.startswith("dense_")) == flight.name
    # converged and chosen (the family's 0.3 and d0 tie below d0.1's 3.0), the candidate is final: no checkpoints
    _run_with_log(second, flight.name, [(4, 1.0), (8, 2.0), (12, 2.0), (16, 2.0)])
    _run_with_log(second, "dense_eighth-s1", [(4, 1.0), (8, 2.0), (12, 2.0), (16, 2.0)])
    runs = study.plan(b)[0]
    assert study.retune_choice(b, "dense_eighth") == "d0"
    assert [r.name for r in study.to_score(b, runs, {})] == [candidate.name]
    study.write_json(os.path.join(second, "runs", candidate.name, "result.json"), {"run": candidate.name})
    assert set(study.keep(b, runs, winners, {})) == {candidate.name, flight.name, "dense_eighth-s1"}
    for name in (candidate.name, flight.name):
        assert not any(study.PART.match(f) for f in os.listdir(ledger / name))


def test_the_runs_that_tickets_are_built_on_outlive_their_machine_through_the_ledger(tmp_path, monkeypatch):
    """A run trained again (RUN.regen) and a rewind run, once complete, are recorded with the file later runs read
    (the last checkpoint's weights alone; the weight snapshot as written), in parts; a fresh machine restores them
    and builds its tickets from them without training either again."""
    monkeypatch.setattr(study, "PART_BYTES", 1000)
    ledger, args, first, a = _first_machine(tmp_path, monkeypatch, "prune", "lr1e-3-d0.1,lr4e-3-d0-c0")
    args += ["--kept", "0.5:1"]
    a = study.parse_args([*args, "--work", str(first)])
    study.restore(a)
    dense, rewind = "dense-lr1e-3-d0.1-s1", "dense_rewind-s1"
    tuning = {"mask-lr4e-3-d0-c0-s1": [(4, 1.0), (8, 2.0)], dense: [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)]}

    def winners_on(root):  # the tuning runs, converged (the ledger holds them once they do)
        for name, points in tuning.items():
            _run_with_log(root, name, points)

    winners_on(first)
    for name in (dense, rewind):  # as an earlier machine recorded them: without their checkpoints
        run = _run_with_log(first, name, tuning.get(name, [(500, 1.0)]))
        assert study.record(a, run)
    second = _machine(tmp_path / "B")
    monkeypatch.setattr(study, "WORK", str(second))
    b = study.parse_args([*args, "--work", str(second)])
    assert study.restore(b) == [dense, rewind]
    winners_on(second)
    runs = {r.name: r for r in study.plan(b)[0]}
    regen, rewind_regen = runs[f"{dense}.regen"], runs[f"{rewind}.regen"]
    assert (regen.max_update, rewind_regen.max_update) == (8, 500)
    _run_with_log(second, regen.name, [(4, 1.0), (8, 2.0)])
    _run_with_log(second, rewind_regen.name, [(500, 1.0)])
    _checkpoint(os.path.join(regen.dir, "checkpoint_last.pt"), 8, 3.0)
    torch.save({"model": {"w": torch.full((300,), 4.0)}, "num_updates": 500},
               os.path.join(rewind_regen.dir, "weights_update500.pt"))
    winners = {"dense": "lr1e-3-d0.1", "mask": "lr4e-3-d0-c0"}
    assert set(study.keep(b, list(runs.values()), winners, {})) >= {regen.name, rewind_regen.name}
    assert study.keep(b, list(runs.values()), winners, {}) == []  # once
    for name, file in ((regen.name, "checkpoint_last.pt"), (rewind_regen.name, "weights_update500.pt")):
        parts = [f for f in os.listdir(ledger / name) if study.PART.match(f)]
        assert f"{file}.1" in parts and all(os.path.getsize(ledger / name / f) <= 1000 for f in parts)
    assert not any(study.PART.match(f) for f in os.listdir(ledger / dense))  # a lost run: still nothing to keep

    third = _machine(tmp_path / "C")  # a fresh machine again
    monkeypatch.setattr(study, "WORK", str(third))
    c = study.parse_args([*args, "--work", str(third)])
    assert {regen.name, rewind_regen.name} <= set(study.restore(c))
    winners_on(third)
    runs = {r.name: r for r in study.plan(c)[0]}
    again, rewind_again = runs[regen.name], runs[rewind_regen.name]
    assert study.complete(again) and study.complete(rewind_again)
    assert not study.lost(again) and not study.lost(rewind_again) and study.lost(runs[dense])
    last = torch.load(os.path.join(again.dir, "checkpoint_last.pt"), weights_only=True)
    assert torch.equal(last["model"]["w"], torch.full((300,), 3.0)) and last["last_optimizer_state"] is None
    assert (pathlib.Path(rewind_again.dir, "weights_update500.pt").read_bytes()
            == pathlib.Path(rewind_regen.dir, "weights_update500.pt").read_bytes())
    ticket = runs["ticket_k0.5-s1"]
    assert ticket.ticket == (os.path.join(again.dir, "checkpoint_last.pt"), rewind_again.dir, 0.5)
    ready = [r.name for r in study.ready(list(runs.values()), {})]
    assert "ticket_k0.5-s1" in ready and again.name not in ready and rewind_again.name not in ready
    assert "restored: no checkpoint" not in study.status(c, [again, rewind_again], {})


def test_the_runner_wakes_when_a_job_exits(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    run = study.Run("r", [], 0, 3, ())
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    jobs = {n: study.Job(run, p.pid, time.time(), 0, p) for n, p in (("quick", quick), ("slow", slow))}
    t0 = time.time()
    study.wait(jobs, seconds=20)
    assert time.time() - t0 < 10 and quick.poll() == 0  # woke on the exit, not after the full 20 s
    del jobs["quick"]
    t0 = time.time()
    study.wait(jobs, seconds=1)
    assert 1 <= time.time() - t0 < 10 and slow.poll() is None  # else the whole wait
    slow.kill()
    slow.wait()


def test_a_run_trained_again_stops_where_its_original_resumed(tmp_path, monkeypatch):
    """A run's later launches resumed from its last save before each launch line; a run trained again stops at
    those updates below its own budget and trains to its budget after the last."""
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    run = _run_with_log(tmp_path, "dense-x-s1", [])
    launch = "# 2026-12-04 15:50:04 fairseq-train data --arch transformer\n"
    saved = "2026-12-04 16:18:40 | INFO | fairseq.checkpoint_utils | Saved checkpoint x.pt (epoch {} @ {} updates)\n"
    log = [launch, _valid_line(4, 1.0), saved.format(1, 4), _valid_line(8, 2.0), saved.format(2, 8), launch,
           launch, _valid_line(12, 3.0), saved.format(3, 12), _valid_line(16, 2.5), saved.format(3, 16), launch,
           _valid_line(20, 2.0)]
    pathlib.Path(run.dir, "train.log").write_text("".join(log))
    assert study.resume_points(run) == [8, 16]  # two launches at 8 (the first died at once): one point
    a = study.parse_args(["raw", *TINY, "--work", str(tmp_path), "--cap", "40"])
    run.max_update = 40
    regen = study.regen_run(a, run)
    assert regen.max_update == 12 and regen.stops == (8,)  # chosen at 12: 16 lies beyond it
    assert study.replay_stop(regen) == 8 and study.replay_rewind(regen) is None  # nothing trained yet
    os.makedirs(regen.dir)
    pathlib.Path(regen.dir, "train.log").write_text("".join(log[:3]))  # validated as the original at 4
    assert study.retracing(regen) and study.replay_stop(regen) == 8
    pathlib.Path(regen.dir, "train.log").write_text("".join([launch, _valid_line(4, 1.5), saved.format(1, 4)]))
    # another CPU: a new draw from the first validation on, which it trains through to its budget where it is
    assert not study.retracing(regen) and study.replay_stop(regen) == 12 and study.replay_rewind(regen) is None
    assert "(a new draw: validated otherwise)" in study.status(a, [regen], {})


def test_tuning_plot_once_a_setting_has_validated(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--grid", "lr1e-3-d0.1,lr4e-3-d0-c0"])
    assert study.tuning_plot(a) is None and not (tmp_path / "tuning.png").exists()
    _run_with_log(tmp_path, "mask-lr4e-3-d0-c0-s1", [(4, 1.0), (8, 2.0)])
    assert study.tuning_plot(a) == str(tmp_path / "tuning.png")
    assert (tmp_path / "tuning.png").read_bytes()[:4] == b"\x89PNG"


def test_seeds_aggregate_to_mean_and_spread(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--grid", "lr1e-3-d0.1",
                          "--parts", "core"])
    _run_with_log(tmp_path, "dense-lr1e-3-d0.1-s1", [(4, 1.0), (8, 2.0)])  # the tuning run: seed 1 of the row
    for seed, bleu in ((1, 30.0), (2, 33.0), (3, 31.5)):
        name = f"dense-lr1e-3-d0.1-s{seed}"
        os.makedirs(tmp_path / "runs" / name, exist_ok=True)
        common.write_json(str(tmp_path / "runs" / name / "result.json"),
                          {"run": name, "test_bleu": bleu, "valid_bleu": bleu + 1, "best_update": 8, "updates": 20,
                           "cpu_hours": 0.5, "fp16_bytes": 1000, "int8_bytes": 600, "int8_test_bleu": bleu - 1})
    rows = study.row_results(a, {"dense": "lr1e-3-d0.1", "mask": None})
    r = rows["dense"]
    assert r["test_bleu"] == [30.0, 33.0, 31.5] and r["mean"] == 31.5 and r["spread"] == [30.0, 33.0]
    assert r["seeds_done"] == r["seeds_planned"] == 3 and r["cpu_hours"] == 1.5 and r["int8_test_bleu"] == 30.5


def test_prune_part_plans_pruning_tickets_and_their_rewind_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", "--work", str(tmp_path), "--stages", "8:1", "--patience", "2", "--parts", "prune",
                          "--grid", "lr1e-3-d0.1,lr4e-3-d0-c0"])
    assert (a.kept, a.prune_ramp, a.rewind_update) == ([(0.5, 2), (0.1, 1)], (500, 3000), 500)
    dense, mask = "dense-lr1e-3-d0.1", "mask-lr4e-3-d0-c0"
    _run_with_log(tmp_path, f"{dense}-s1", [(4, 1.0), (8, 2.0), (12, 1.5), (16, 1.0)])  # converged: patience 2
    _run_with_log(tmp_path, f"{mask}-s1", [(4, 1.0), (8, 2.0)])
    runs, winners = study.plan(a)
    runs = {r.name: r for r in runs}
    assert winners == {"dense": "lr1e-3-d0.1", "mask": "lr4e-3-d0-c0"}
    assert set(runs) == {f"{dense}-s1", f"{mask}-s1", f"{dense}-s2", "dense_rewind-s1", "dense_rewind-s2",
                         "magnitude_k0.5-s1", "magnitude_k0.5-s2", "ticket_k0.5-s1", "ticket_k0.5-s2",
                         "magnitude_k0.1-s1", "ticket_k0.1-s1", "masks_only_k0.1-s1"}  # k=0.5's supermask: core's
    mag = runs["magnitude_k0.5-s2"]
    assert mag.args[:mag.args.index("--lr")] == ["--arch", "transformer", "--optimizer", "adam", "--warmup-updates",
                                                  "400", "--weight-decay", "0.0001"]  # the tuned dense recipe ...
    flags = " ".join(map(str, mag.args))
    assert ("--lr 1e-3 --dropout 0.1 --arch pruned_transformer --remaining-ratio 0.5 --prune-start-update 500 "
            "--prune-end-update 3000 --validate-after-updates 3000 --seed 2") in flags  # ... pruned, chosen after the ramp
    assert (mag.max_update, mag.patience, mag.needs) == (a.cap, 2, ())
    # a run that validates only after its ramp saves at each epoch's end (fairseq saves nothing before it validates)
    saves = {r: (cmd := study.train_command(a, runs[r], "bin"))[cmd.index("--save-interval") + 1]
             for r in ("magnitude_k0.5-s2", f"{dense}-s2", "ticket_k0.1-s1")}
    assert saves == {"magnitude_k0.5-s2": "1", f"{dense}-s2": "1000000", "ticket_k0.1-s1": "1000000"}
    rewind = runs["dense_rewind-s2"]
    assert rewind.max_update == 500 and "--save-weights-at-updates 500 --seed 2" in " ".join(map(str, rewind.args))
    ticket = runs["ticket_k0.1-s1"]
    assert ticket.needs == (f"{dense}-s1", "dense_rewind-s1") and study.TICKET not in ticket.args
    assert ticket.ticket == (str(tmp_path / "runs" / f"{dense}-s1" / "checkpoint_best.pt"), rewind.dir[:-1] + "1", 0.1)
    assert "--remaining-ratio 0.1 --seed 1" in " ".join(map(str, ticket.args))
    # the first launch starts from the ticket with fresh optimizer and schedule; a later one resumes its own run
    cmd = study.train_command(a, ticket, "bin")
    assert cmd[cmd.index("--restore-file") + 1] == os.path.join(ticket.dir, "ticket.pt")
    assert {"--reset-optimizer", "--reset-lr-scheduler", "--reset-dataloader", "--reset-meters"} <= set(cmd)
    os.makedirs(ticket.dir)
    open(os.path.join(ticket.dir, "checkpoint_last.pt"), "wb").close()
    assert "--restore-file" not in study.train_command(a, ticket, "bin")
    # a run that saves before it validates (magnitude pruning, until its ramp ends) resumes from its save
    log = os.path.join(mag.dir, "train.log")
    os.makedirs(mag.dir)
    with open(log, "w", encoding="utf-8") as f:
        f.write("| INFO | fairseq.checkpoint_utils | Saved checkpoint x/checkpoint_last.pt (epoch 2 @ 1000 updates, "
                "score None) (writing took 0.1 seconds)\n")
    assert study.trained(mag) == 1000 and not study.complete(mag)
    # the report's pruning comparison waits for every model it compares
    assert study.analysis(a, {"dense": {"runs": [f"{dense}-s1"]}}) is None
    for bad in (["--kept", "0.5:0"], ["--kept", "1.5:1"], ["--kept", "x"], ["--kept", "0.5:1,0.5:2"],
                ["--prune-ramp", "3000:500"], ["--rewind-update", "0"]):
        with pytest.raises(SystemExit):
            study.parse_args(["raw", *bad])


def test_a_published_model_comes_from_the_median_seed_else_the_seed_nearest_its_test_bleu():
    # the study's dense seeds: seed 3 is the median; seed 1 lies 0.31 from it, seed 2 1.19
    order = study.nearest_the_median([42.55, 41.05, 42.24], ["s1", "s2", "s3"])
    assert [name for _, name in order] == ["s3", "s1", "s2"]
    # equally far: the higher scorer first; an even count: the lower middle seed is the median
    assert [n for _, n in study.nearest_the_median([30.0, 31.0, 32.0], ["a", "b", "c"])] == ["b", "c", "a"]
    assert [n for _, n in study.nearest_the_median([30.0, 31.0, 33.0, 40.0], ["a", "b", "c", "d"])] == \
        ["b", "a", "c", "d"]


def test_bootstrap_interval_comes_from_the_sentences():
    refs = [f"the cat {i} sat on the mat number {i}" for i in range(40)]
    same = study.bootstrap_ratio([refs], [refs], refs, samples=200)
    assert same == (1.0, 1.0)
    worse = [r if i % 2 else "a dog" for i, r in enumerate(refs)]
    lo, hi = study.bootstrap_ratio([worse, worse], [refs], refs, samples=200)
    assert 0 < lo < hi < 1  # every resample of sentences keeps the worse system below dense
    # one sentence more wrong moves the interval: it is computed from per-sentence statistics
    worse2 = list(worse)
    worse2[1] = "a dog"
    assert study.bootstrap_ratio([worse2], [refs], refs, samples=200) != study.bootstrap_ratio([worse], [refs], refs,
                                                                                              samples=200)


def test_paired_comparisons_pair_each_rows_seeds_and_the_seeds_both_rows_have(monkeypatch):
    refs = [f"the cat {i} sat on the mat number {i}" for i in range(40)]
    worse = [r if i % 2 else "a dog" for i, r in enumerate(refs)]
    hyps = {"standard-s1": worse, "standard-s2": refs, "mask-x-s1": refs, "mask-x-s2": refs, "mask-x-s3": worse,
            "dense_wide-s1": refs}
    monkeypatch.setattr(study, "read_hyps", lambda name: hyps[name])
    bleu = {n: sacrebleu.corpus_bleu(h, [refs]).score for n, h in hyps.items()}

    def row(*names):
        return {"label": names[0].split("-")[0], "runs": list(names), "test_bleu": [bleu[n] for n in names],
                "mean": statistics.mean(bleu[n] for n in names)}

    rows = {"dense": row("dense_wide-s1"), "masks_only": row("mask-x-s1", "mask-x-s2", "mask-x-s3"),
            "standard": row("standard-s1", "standard-s2"), "masks_only_wide": row("mask-x-s2")}
    lines = []
    out = study.comparisons(rows, refs, lines)
    assert [(c["model"], c["against"]) for c in out] == [("standard", "masks_only")]  # no dense_wide row: no pair
    c = out[0]
    assert c["seeds"] == [2, 3] and c["ratio"] == round(rows["standard"]["mean"] / rows["masks_only"]["mean"], 3)
    assert c["interval"][0] < c["ratio"] < c["interval"][1]
    assert set(c["by_seed"]) == {1, 2}  # seed 3 has no standard twin
    assert c["by_seed"][2] == {"ratio": 1.0, "interval": [1.0, 1.0]}  # the same outputs: no spread
    assert c["by_seed"][1]["interval"][1] < 1  # seed 1 is worse on every resample
    assert "| standard | mask | " in lines[-1] and "2 against 3" in lines[-1] and "s1: " in lines[-1]
    rows["dense_wide"] = row("dense_wide-s1")
    rows["masks_only_wide"]["runs"] = ["mask-x-s2"]  # seed 2 only: no seed both rows have
    out = study.comparisons(rows, refs, [])
    assert out[1]["model"] == "masks_only_wide" and out[1]["by_seed"] == {} and out[1]["seeds"] == [1, 1]
    assert study.seed_of("dense-lr2e-3-d0.3-s2.regen") == 2 and study.seed_of("masks_only_wide-lr2e-3-s12") == 12


def test_bytes_plot_labels_print_over_no_other_label():
    # the study's points of 2026-12-08: three within 8 bytes of each other, and magnitude pruning at k = 0.5, whose
    # label, below its point for the ticket above it, printed over the masked pre-trained embeddings' one a step right
    from one_layer_lottery.io import pyplot

    points = [("standard", 328_168, 33.61), ("masks_only", 328_176, 33.37), ("masks_only_k0.1", 328_176, 17.48),
              ("coats", 492_592, 35.60), ("masks_only_wide", 888_832, 37.20), ("magnitude_k0.1", 840_240, 34.72),
              ("ticket_k0.1", 840_240, 28.91), ("ticket_k0.5", 2_855_424, 41.60),
              ("magnitude_k0.5", 2_855_424, 39.13), ("pretrained_masked", 3_400_672, 37.20),
              ("pretrained_frozen", 3_208_384, 36.53)]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([230_000, 14_000_000], [22.0, 42.0])  # the dense lines' span sets the limits, as in the study's plot
    ax.scatter([x for _, x, _ in points], [y for _, _, y in points])
    ax.set_xscale("log")
    taken = study.place_labels(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    plt.close(fig)
    assert sorted(boxes) == sorted(p[0] for p in points)
    clashes = [(a, b) for a in boxes for b in boxes if a < b and boxes[a].overlaps(boxes[b])]
    assert clashes == []
    assert taken["ticket_k0.5"] == study.LABEL_OFFSETS[0]  # the highest takes the first place
    assert taken["masks_only"] != taken["standard"]  # the same bytes: not the same place


def test_sentence_statistics_are_sacrebleus_extracted_once_per_content():
    from sacrebleu.metrics import BLEU

    refs = [f"the cat {i} sat on the mat number {i}" for i in range(40)]
    hyps = [r if i % 3 else "a dog sat" for i, r in enumerate(refs)]
    fresh = BLEU()._extract_corpus_statistics(hyps, [refs])
    assert study.sentence_stats(hyps, refs).tolist() == fresh
    assert study.sentence_stats(list(hyps), list(refs)) is study.sentence_stats(hyps, refs)  # the same content
    assert study.sentence_stats(hyps, refs[::-1]).tolist() == BLEU()._extract_corpus_statistics(hyps, [refs[::-1]])


def test_the_dense_frontier_at_a_models_bytes_interpolates_in_log_bytes_and_decides_outside_only_where_it_can():
    import math

    points = [("dense_eighth fp16", 400_000, 22.0), ("dense_eighth int8", 390_000, 21.5),
              ("dense_quarter fp16", 1_600_000, 30.0), ("dense_quarter int8", 850_000, 29.8),
              ("masks_only", 394_223, 33.37), ("coats", 800_000, 20.0), ("big", 2_000_000, 25.0),
              ("tiny", 300_000, 10.0)]
    got = {(v["model"], v["form"]): v for v in study.frontier(points)}
    assert len(got) == 12 and not any(m.startswith("dense") for m, _ in got)
    assert got["masks_only", "int8+emb"]["by"] == "no dense model scored yet"  # the third form: none here
    # below every dense model's bytes in fp16: it beats the smallest, which stores more, so it is above
    assert got["masks_only", "fp16"]["verdict"] == "above" and got["masks_only", "fp16"]["dense_bleu"] is None
    # bracketed in int8: the frontier is interpolated in log bytes
    t = (math.log(394_223) - math.log(390_000)) / (math.log(850_000) - math.log(390_000))
    assert got["masks_only", "int8"]["dense_bleu"] == pytest.approx(21.5 + t * 8.3)
    assert got["masks_only", "int8"]["verdict"] == "above"
    # halfway in log bytes between 400k and 1.6M is 800k: the mean of the two dense figures
    assert got["coats", "fp16"]["dense_bleu"] == pytest.approx(26.0) and got["coats", "fp16"]["verdict"] == "below"
    # above every dense model's bytes: below a smaller dense model is below, above it is not decided
    assert got["big", "fp16"]["verdict"] == "below"
    assert study.frontier([("dense fp16", 1e6, 20.0), ("big", 2e6, 25.0)])[0]["verdict"] == "not decided"
    # smaller than every dense model and below the smallest: nothing says where the frontier is there
    assert got["tiny", "fp16"]["verdict"] == got["tiny", "int8"]["verdict"] == "not decided"
    assert study.frontier([("masks_only", 1e5, 30.0)])[0]["by"] == "no dense model scored yet"


def test_the_frontier_ratio_divides_by_the_next_larger_dense_model_in_the_same_form(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    refs = ["a dog runs through the park", "two men play music on the street", "a woman reads a book outside"]
    worse = [x.rsplit(" ", 1)[0] for x in refs]  # every sentence keeps 4-grams: no resample scores 0
    hyps = {("m", "test.hyp"): refs, ("d", "test.hyp"): worse, ("d", "test.int8.hyp"): refs}
    for (run, name), lines in hyps.items():
        (tmp_path / "runs" / run).mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / run / name).write_text("".join(x + "\n" for x in lines))
    rows = {"masks_only": {"runs": ["m"], "mean": 100.0}, "dense": {"runs": ["d"], "mean": 40.0,
                                                                     "int8_test_bleu": 100.0}}
    verdicts = study.frontier([("masks_only", 10, 100.0), ("dense fp16", 20, 40.0), ("dense int8", 15, 100.0)])
    study.frontier_intervals(verdicts, rows, refs)
    got = {v["form"]: v for v in verdicts}
    assert got["fp16"]["larger"] == "dense fp16" and got["fp16"]["over_larger"] == 2.5
    assert got["fp16"]["over_larger_interval"][0] > 1  # the worse fp16 hypotheses, resampled
    assert got["int8"]["over_larger"] == 1.0 and got["int8"]["over_larger_interval"] == [1.0, 1.0]  # int8's own


def test_a_verdict_on_the_interpolated_frontier_stands_only_where_its_interval_does(tmp_path, monkeypatch):
    """Between two dense models the line is resampled with the model: a model level with it (the same hypotheses
    as both dense models) is "level", not above by a rounding; one better on every sentence is above."""
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    refs = [f"a dog number {i} runs through the green park today" for i in range(30)]
    worse = [x.rsplit(" ", 2)[0] for x in refs]
    for run, lines in {"same": worse, "better": refs, "lo": worse, "hi": worse}.items():
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "test.hyp").write_text("".join(x + "\n" for x in lines))
    rows = {"same": {"runs": ["same"], "mean": 30.0}, "better": {"runs": ["better"], "mean": 100.0},
            "lo": {"runs": ["lo"], "mean": 29.99}, "hi": {"runs": ["hi"], "mean": 29.99}}
    points = [("lo fp16", 100, 29.99), ("hi fp16", 400, 29.99), ("same", 200, 30.0), ("better", 200, 100.0)]
    verdicts = study.frontier(points)
    got = {v["model"]: v for v in verdicts if v["form"] == "fp16"}
    assert got["same"]["verdict"] == "above" and got["same"]["t"] == pytest.approx(0.5)  # by the point estimate
    study.frontier_intervals(verdicts, rows, refs)
    assert got["same"]["verdict"] == "level" and got["same"]["over_line_interval"] == [1.0, 1.0]
    assert got["better"]["verdict"] == "above" and got["better"]["over_line_interval"][0] > 1
    lines = []
    study.frontier_lines(points, lines, rows, refs)
    assert any(line.startswith("| same | 200 | 30.00 | fp16 | 29.99 | 1.000 [1.000, 1.000] | level |") for line in lines)


def _tied_transformer(dim: int, ffn: int):
    """A 1+1-layer fairseq Transformer with a tied output table over 30-word dictionaries."""
    from fairseq import options
    from fairseq.models.transformer import TransformerModel

    args = options.parse_args_and_arch(options.get_training_parser(), [
        "x", "--task", "translation", "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
        "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim), "--encoder-ffn-embed-dim", str(ffn),
        "--decoder-ffn-embed-dim", str(ffn), "--share-decoder-input-output-embed"])
    task = type("Task", (), {"source_dictionary": make_dictionary(30), "target_dictionary": make_dictionary(30)})
    return TransformerModel.build_model(args, task)


def test_int8_tables_are_rounded_in_place_and_counted_a_byte_a_value_and_a_scale_a_row():
    import copy

    model = _tied_transformer(16, 32)
    before = common.int8_bytes(common.quantize_int8(copy.deepcopy(model)))
    float_tables = {id(m.weight): m.weight.detach().clone() for m in model.modules()
                    if isinstance(m, torch.nn.Embedding)}
    saved = common.quantize_tables_int8(model)
    tables = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert len(tables) == 2 and saved == sum(w.numel() - 2 * w.shape[0] for w in tables.values())
    for key, w in tables.items():
        scale = (float_tables[key].abs().amax(1, keepdim=True) / 127).half().float()
        scale[scale == 0] = 1
        steps = w.detach() / scale
        assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 127  # scale * an int8
        assert (w.detach() - float_tables[key]).abs().le(scale / 2 + 1e-6).all()  # rounded to the nearest step
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight  # still one table
    assert common.int8_bytes(common.quantize_int8(model)) - saved < before


def test_int8_bytes_are_counted_from_the_quantized_model():
    model = _tied_transformer(64, 256)
    fp16 = common.fp16_bytes(model.state_dict())
    q = common.quantize_int8(model)
    linears = [m for m in q.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert linears and not any(n.endswith("output_projection") for n, m in q.named_modules()
                               if isinstance(m, torch.ao.nn.quantized.dynamic.Linear))  # the tied table stays float
    by_hand = sum(m.weight().numel() + 8 + 2 * m.bias().numel() for m in linears)
    prefixes = tuple(n + "." for n, m in q.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear))
    rest = {k: v for k, v in q.state_dict().items() if isinstance(v, torch.Tensor) and v.is_floating_point()
            and not k.startswith(prefixes) and not k.endswith("version")}
    by_hand += 2 * sum(v.numel() for v in {v.data_ptr(): v for v in rest.values()}.values())
    assert common.int8_bytes(q) == by_hand < fp16


@pytest.fixture(scope="module")
def tiny_study(tiny_corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("study")
    os.symlink(tiny_corpus.root / "prep", work / "data")
    args = [sys.executable, SCRIPT, str(tiny_corpus.root / "raw"), *TINY, "--work", str(work), "--stages", "4:1",
            "--patience", "1", "--cap", "40", "--parts", "tune,prune", "--kept", "0.5:1", "--rewind-update", "4",
            "--prune-ramp", "4:8", "--ledger", str(tmp_path_factory.mktemp("ledger"))]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=1200, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work, args, r


def table_of(text: str, heading: str) -> str:
    """A report's section from its heading to the next one."""
    return text.split(heading)[1].split("###")[0]


@pytest.mark.e2e
def test_runner_converges_scores_reports_and_publishes(tiny_study, tmp_path):
    work, args, r = tiny_study
    assert "[study] mask-lr4e-3-d0.1-c0-s1: converged" in r.stdout
    results = {p.parent.name: json.loads(p.read_text()) for p in (work / "runs").glob("*/result.json")
               if p.parent.name.startswith(("dense", "mask"))}
    assert set(results) == {"dense-lr1e-3-d0.1-s1", "mask-lr4e-3-d0.1-c0-s1"}  # the seed-1 runs of dense, masks-only
    for name, res in results.items():
        ckpt = torch.load(work / "runs" / name / "checkpoint_best.pt", map_location="cpu", weights_only=True)
        assert ckpt["optimizer_history"][-1]["num_updates"] == res["best_update"]  # scored: the validation's pick
        assert res["stopped_by"] == "patience" and res["updates"] < 40  # patience stopped it, not the cap
        if name.startswith("dense"):
            assert 0 < res["int8emb_bytes"] < res["int8_bytes"] < res["fp16_bytes"] and "int8_test_bleu" in res
            assert len((work / "runs" / name / "test.int8emb.hyp").read_text().splitlines()) == 37
        else:
            assert 0 < res["model_bytes"] < res["artifact_bytes"]
        assert len((work / "runs" / name / "test.hyp").read_text().splitlines()) == 37
        # the processes' own CPU time, measured (seconds here: the hours round to 0.0)
        assert res["cpu_hours_estimated"] == 0 and study.compute(str(work / "runs" / name), res["updates"])[0] > 0
    rep = subprocess.run(args + ["--report"], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert rep.returncode == 0 and "### Tuning: dense" in rep.stdout and "### Stored bytes" in rep.stdout
    # every stored form's line names its row's seeds, the same count as the results table's
    seeds = re.search(r"\| (\d/\d(?: \(partial\))?) \|", table_of(rep.stdout, "### Results")).group(1)
    assert re.search(r"\| dense int8 \| [\d,]+ \| [\d.]+ \| " + re.escape(seeds) + r" \|", rep.stdout)
    frontier = json.loads((work / "report.json").read_text())["frontier"]  # masks-only at its bytes, both forms
    assert {(v["model"], v["form"]) for v in frontier} >= {("masks_only", "fp16"), ("masks_only", "int8")}
    assert "### At each model's bytes, the dense frontier" in rep.stdout
    assert all("over_larger_interval" in v for v in frontier if v["larger"])  # (tiny models' BLEU may be 0)
    assert "DEBUG" not in rep.stdout + rep.stderr  # matplotlib's font search under fairseq's DEBUG root logger
    assert (work / "curves.png").read_bytes()[:4] == b"\x89PNG" and (work / "bytes.png").exists()
    assert (work / "tuning.png").read_bytes()[:4] == b"\x89PNG" and "tuning.png" in rep.stdout
    assert "### Trained-weight pruning at convergence" in rep.stdout and "| 0.5 | " in rep.stdout  # part prune
    assert "against dense (validation, `one-layer-lottery analyze`)" in rep.stdout
    assert set(json.loads((work / "analysis.json").read_text())["models"]) == {"magnitude", "ticket", "one_layer"}
    analysis = [x for x in table_of(rep.stdout, "### Seed 1's models").splitlines() if x.startswith("|")]
    assert len(analysis) == 5 and (pathlib.Path(args[args.index("--ledger") + 1]) / "analysis" / "analysis.png").exists()
    fresh = tmp_path / "fresh"  # a new machine with the ledger only: the same tables, the analysis as recorded
    fresh.mkdir()
    os.symlink(work / "data", fresh / "data")
    again = subprocess.run(args + ["--work", str(fresh), "--report"], capture_output=True, text=True, cwd=ROOT,
                           timeout=600, check=False)
    assert again.returncode == 0 and "restored from the ledger" in again.stdout, again.stderr[-2000:]

    assert table_of(again.stdout, "### Results") == table_of(rep.stdout, "### Results") and "| 0.5 | " in again.stdout
    assert "Restored from the ledger without" in again.stdout and "As recorded in the ledger (computed" in again.stdout
    assert [x for x in table_of(again.stdout, "### Seed 1's models").splitlines() if x.startswith("|")] == analysis
    assert (fresh / "analysis.png").exists()
    pub = subprocess.run(args + ["--publish", str(tmp_path / "models")], capture_output=True, text=True, cwd=ROOT,
                         timeout=600, check=False)
    assert pub.returncode == 0 and (tmp_path / "models" / "masks_only.olt").exists()
    published = torch.load(tmp_path / "models" / "dense_fp16.pt", map_location="cpu", weights_only=True)["model"]
    tied = published["decoder.embed_tokens.weight"], published["decoder.output_projection.weight"]
    assert tied[0].dtype == torch.float16 and tied[0].data_ptr() == tied[1].data_ptr()  # stored once, not twice
    dense_run = json.loads((work / "runs" / "dense-lr1e-3-d0.1-s1" / "result.json").read_text())
    assert (tmp_path / "models" / "dense_fp16.pt").stat().st_size < dense_run["fp16_bytes"] + 100_000  # + cfg
    card = (tmp_path / "models" / "README.md").read_text()
    assert "| `masks_only.olt` |" in card and "| mask-" in card and "--parts" in card  # its run and its command
    r = run_card(card)  # the card's command for the dense model, run as written
    assert r.returncode == 0 and re.search(r"^H-0\t", r.stdout, re.MULTILINE), r.stderr[-2000:]
    out = subprocess.run([common.command("one-layer-lottery"), "translate", str(tmp_path / "models" / "masks_only.olt"),
                          "eine kleine Katze"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip()
    # a dense run scored before the int8-table form existed gets it from its checkpoint, and the ledger with it
    path = work / "runs" / "dense-lr1e-3-d0.1-s1" / "result.json"
    before = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in before.items() if not k.startswith("int8emb")}))
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert again.returncode == 0 and "dense-lr1e-3-d0.1-s1: scored in int8 with int8 embedding tables" in again.stdout
    assert json.loads(path.read_text()) == before
    ledger = pathlib.Path(args[args.index("--ledger") + 1]) / "dense-lr1e-3-d0.1-s1"
    assert json.loads((ledger / "result.json").read_text()) == before and (ledger / "test.int8emb.hyp").exists()


@pytest.mark.e2e
def test_the_dense_model_is_published_in_parts_and_from_its_run_trained_again(tiny_study, tmp_path, monkeypatch):
    """Where the dense run's checkpoint did not outlive its machine, its run trained again (RUN.regen) stands in,
    scored on test on its own, for --publish and the analysis (a masks-only run's artifact, expanded, stands in for
    its checkpoint there); a dense file over the repository's limit is also written in parts, and the card's
    commands, run as written with the whole file gone, join them and translate."""
    work, args, _ = tiny_study
    copy, out, dense = tmp_path / "work", tmp_path / "models", "dense-lr1e-3-d0.1-s1"
    shutil.copytree(work, copy, symlinks=True)
    assert study.main(args[2:] + ["--work", str(copy), "--report"]) == 0  # the analysis from the best checkpoints
    first = json.loads((copy / "analysis.json").read_text())
    assert set(first["sources"]) == {"dense", "magnitude", "ticket", "one_layer"}
    assert all("best checkpoint" in how for how in first["sources"].values())
    mask = next(p.parent.name for p in (copy / "runs").glob("mask-*-s1/model.olt"))
    (copy / "runs" / mask / "checkpoint_best.pt").unlink()  # masks-only lost too: its artifact stands in
    regen = copy / "runs" / f"{dense}.regen"
    regen.mkdir()
    shutil.copyfile(copy / "runs" / dense / "train.log", regen / "train.log")  # it retraced the run
    os.replace(copy / "runs" / dense / "checkpoint_best.pt", regen / "checkpoint_last.pt")
    (copy / "runs" / dense / "restored.json").write_text("{}")  # restored from the ledger, its checkpoint lost
    monkeypatch.setattr(study, "PART_BYTES", 40_000)
    assert study.main(args[2:] + ["--work", str(copy), "--publish", str(out)]) == 0
    whole = (out / "dense_fp16.pt").read_bytes()
    parts = sorted(out.glob("dense_fp16.pt.*"), key=lambda p: int(p.suffix[1:]))
    assert len(parts) > 1 and all(p.stat().st_size <= 40_000 for p in parts) and b"".join(
        p.read_bytes() for p in parts) == whole
    card = (out / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| `dense_fp16.pt` |"))
    ledger_bleu = json.loads((copy / "runs" / dense / "result.json").read_text())["test_bleu"]
    assert f"| {ledger_bleu:.2f} | {dense} (trained again to its chosen update " in row, row
    assert "validations as in the ledger; the ledger's test BLEU" in row and f"in {len(parts)} parts" in card
    # the analysis again, from the stand-ins: the same masks and weights, so the same figures
    assert study.main(args[2:] + ["--work", str(copy), "--report"]) == 0
    again = json.loads((copy / "analysis.json").read_text())
    figures = [{label: {k: v for k, v in m.items() if k != "path"} for label, m in r["models"].items()}
               for r in (first, again)]
    assert figures[0] == figures[1] and again["inputs"] != first["inputs"]
    assert "trained again to its chosen update" in again["sources"]["dense"]
    assert "artifact expanded" in again["sources"]["one_layer"] and (copy / "runs" / mask / "expanded.pt").exists()
    assert "Read from stand-ins: dense " in (copy / "report.md").read_text()
    (out / "dense_fp16.pt").unlink()
    r = run_card(card)
    assert r.returncode == 0 and re.search(r"^H-0\t", r.stdout, re.MULTILINE), r.stderr[-2000:]
    assert (out / "dense_fp16.pt").read_bytes() == whole


@pytest.mark.e2e
def test_pruned_models_converge_from_a_ramp_and_a_ticket(tiny_study):
    """Part prune on a tiny budget: magnitude pruning validates (and so is chosen) only after its ramp; the ticket is
    the converged dense model's mask over the rewind run's weights, retrained with it fixed; both scored."""
    work, _, _ = tiny_study
    runs = work / "runs"
    assert (runs / "dense_rewind-s1" / "weights_update4.pt").exists()
    for name in ("magnitude_k0.5-s1", "ticket_k0.5-s1"):
        res = json.loads((runs / name / "result.json").read_text())
        assert res["stopped_by"] == "patience" and res["best_update"] >= (8 if name.startswith("magnitude") else 4)
        assert abs(res["kept_fraction"] - 0.5) < 0.01 and res["sparse_bytes"] > 0, res
        assert len((runs / name / "test.hyp").read_text().splitlines()) == 37
        assert common.pruned(str(runs / name / "checkpoint_best.pt"))[1] == pytest.approx(res["kept_fraction"],
                                                                                           abs=1e-4)
    assert min(int(u) for u in re.findall(r"valid on 'valid' subset .* num_updates (\d+)",
                                           (runs / "magnitude_k0.5-s1" / "train.log").read_text())) == 8
    ticket = torch.load(runs / "ticket_k0.5-s1" / "ticket.pt", map_location="cpu", weights_only=False)
    assert ticket["lottery_ticket"]["rewind_update"] == 4
    assert ticket["lottery_ticket"]["final"] == str(runs / "dense-lr1e-3-d0.1-s1" / "checkpoint_best.pt")
    log = (runs / "ticket_k0.5-s1" / "train.log").read_text()
    assert f"Loaded checkpoint {runs / 'ticket_k0.5-s1' / 'ticket.pt'}" in log
    # the mask stayed fixed: what the ticket zeroed is zero in the chosen checkpoint
    best = torch.load(runs / "ticket_k0.5-s1" / "checkpoint_best.pt", map_location="cpu", weights_only=True)["model"]
    key = "encoder.layers.0.fc1.weight"
    assert torch.equal(best[key] == 0, ticket["model"][key] == 0)


@pytest.mark.e2e
def test_checkpoint_chosen_on_validation_not_the_last(tiny_study, tmp_path, monkeypatch):
    """A run whose best validation is not its last: the test split is scored on checkpoint_best.pt."""
    work, _, _ = tiny_study
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args([str(work / "data" / "raw"), *TINY, "--work", str(tmp_path), "--patience", "1"])
    run = _run_with_log(tmp_path, "dense-constructed", [(4, 5.0), (8, 1.0)])
    early, late = work / "runs" / "dense-lr1e-3-d0.1-s1", work / "runs" / "mask-lr4e-3-d0.1-c0-s1"
    os.link(early / "checkpoint_best.pt", os.path.join(run.dir, "checkpoint_best.pt"))
    os.link(late / "checkpoint_best.pt", os.path.join(run.dir, "checkpoint_last.pt"))
    res = study.score(a, run, str(work / "data"))
    assert res["best_update"] == 4 and res["updates"] == 8
    hyps = (tmp_path / "runs" / "dense-constructed" / "test.hyp").read_text().splitlines()
    bin_dir = str(work / "data" / "bin")
    assert hyps == common.generate(os.path.join(run.dir, "checkpoint_best.pt"), bin_dir)
    assert hyps != common.generate(os.path.join(run.dir, "checkpoint_last.pt"), bin_dir)


def _model(run) -> dict:
    return torch.load(os.path.join(run.dir, "checkpoint_last.pt"), map_location="cpu", weights_only=True)["model"]


@pytest.mark.e2e
def test_a_run_trained_again_retraces_its_original_resumed_in_a_later_epoch(tiny_corpus, tmp_path, monkeypatch):
    """fairseq builds a launch's batches with the epoch it starts in, so a run resumed in a later epoch trains on
    other batches than one that ran through. A run trained again (RUN.regen) stops and resumes where its original
    did, goes back to such a point when it is interrupted anywhere else, and ends bit for bit where it did."""
    work = tmp_path / "w"
    work.mkdir()
    os.symlink(tiny_corpus.root / "prep", work / "data")
    monkeypatch.setattr(study, "WORK", str(work))
    a = study.parse_args([str(tiny_corpus.root / "raw"), *TINY, "--work", str(work), "--max-tokens", "4000",
                          "--cap", "40"])  # 11 updates an epoch

    def train(run, upto):
        job = study.launch(a, dataclasses.replace(run, max_update=upto), str(work / "data" / "bin"))
        assert job.proc.wait() == 0, (pathlib.Path(run.dir) / "train.log").read_text()[-3000:]
        assert study.trained(run) == upto

    args = study.setting_args("dense", "lr1e-3-d0.1") + ["--seed", 1]
    original, straight = (study.Run(name, args, 24, 10 ** 9, ()) for name in ("dense-x-s1", "straight"))
    train(original, 16)  # its session ended at 16, in the second epoch
    train(original, 24)
    train(straight, 24)
    same = [torch.equal(v, _model(original)[k]) for k, v in _model(straight).items()]
    assert not all(same), "fairseq resumed on the same batches: the stops are needed no more"
    regen = study.regen_run(a, original)
    assert (regen.max_update, regen.stops) == (24, (16,))
    train(regen, study.replay_stop(regen))  # to 16, where the original resumed
    assert study.replay_rewind(regen) is None and os.path.exists(study.replay_path(regen, 16))
    train(regen, 20)  # its own session ends at 20
    assert study.replay_rewind(regen) == 16 and study.trained(regen) == 16
    assert "went back from update 20 to 16" in (pathlib.Path(regen.dir) / "train.log").read_text()
    train(regen, study.replay_stop(regen))
    assert all(torch.equal(v, _model(original)[k]) for k, v in _model(regen).items())
    assert study.regen_agreement(regen)[0] == "6 of 6 validations as in the ledger"


@pytest.mark.e2e
def test_a_run_that_validates_after_its_ramp_saves_at_each_epochs_end(tiny_corpus, tmp_path, monkeypatch):
    """fairseq saves nothing at --save-interval-updates before --validate-after-updates: a magnitude-pruning run
    saves at each epoch's end instead, so a session ending in a ramp longer than an epoch loses an epoch at most."""
    monkeypatch.setattr(study, "WORK", str(tmp_path))
    a = study.parse_args(["raw", *TINY, "--work", str(tmp_path), "--parts", "prune", "--prune-ramp", "4:100"])
    extra = study.prune_rows(a)["magnitude_k0.5"][3]
    run = study.Run("magnitude_k0.5-s1", study.setting_args("dense", "lr1e-3-d0.1") + extra, 60, 2, ())
    os.makedirs(run.dir)
    r = subprocess.run(study.train_command(a, run, tiny_corpus.bin), capture_output=True, text=True, cwd=ROOT,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    saves = re.findall(r"Saved checkpoint .*\(epoch (\d+) @ (\d+) updates, score (\S+)\)", r.stdout + r.stderr)
    assert saves[0][0] == "1" and int(saves[0][1]) < 60 and saves[0][2] == "None"  # epoch 1's end, in the ramp
    assert int(saves[-1][1]) == 60 and not os.path.exists(os.path.join(run.dir, "checkpoint_best.pt"))  # unvalidated


@pytest.mark.e2e
def test_an_interrupted_runner_resumes_and_adopts_what_still_trains(tiny_corpus, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    os.symlink(tiny_corpus.root / "prep", work / "data")
    args = [sys.executable, SCRIPT, str(tiny_corpus.root / "raw"), *TINY, "--work", str(work), "--stages", "40:1",
            "--grid", "lr1e-3-d0.1", "--patience", "50", "--cap", "80", "--eval-every", "20", "--parts", "tune",
            "--jobs", "1"]
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid = work / "runs" / "dense-lr1e-3-d0.1-s1" / "pid.json"
    deadline = time.time() + 300
    while not pid.exists() and time.time() < deadline:
        time.sleep(0.2)
    first.kill()  # the runner dies; its fairseq-train lives on
    first.wait()
    trainer = json.loads(pid.read_text())["pid"]
    os.kill(trainer, signal.SIGSTOP)  # held until the next runner has seen it: still training, whatever the timing
    out = tmp_path / "second.log"
    with open(out, "w", encoding="utf-8") as f:
        second = subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        while "followed" not in out.read_text(encoding="utf-8") and second.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        os.kill(trainer, signal.SIGCONT)
        second.wait(timeout=1200)
    text = out.read_text(encoding="utf-8")
    assert second.returncode == 0, text[-3000:]
    assert "dense-lr1e-3-d0.1-s1: still training (started by an earlier runner), followed" in text
    log = (work / "runs" / "dense-lr1e-3-d0.1-s1" / "train.log").read_text()
    assert "Loaded checkpoint" in log  # the second stage resumed from the first stage's checkpoint
    updates = [int(line.split("num_updates ")[1].split()[0]) for line in log.splitlines() if "valid on 'valid'" in line]
    assert updates == [20, 40, 60, 80]  # each validated once: nothing trained twice, nothing restarted from 0
