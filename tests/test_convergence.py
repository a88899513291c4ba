"""benchmarks/convergence.py's machinery on a tiny budget (the real run is on Multi30k; see the README)."""

import csv
import json
import os

import pytest
from conftest import ROOT, benchmark_main, run_benchmark

SCRIPT = os.path.join(ROOT, "benchmarks", "convergence.py")
TINY = ["--src", "src", "--tgt", "tgt", "--dim", "32", "--ffn", "64", "--layers", "1", "--heads", "2",
        "--vocab", "600", "--max-tokens", "1024", "--warmup", "2"]


def _run(*args):
    return run_benchmark("convergence.py", *args)


@pytest.fixture(scope="module")
def tiny_run(tiny_corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("convergence")
    os.symlink(tiny_corpus.root / "prep", work / "data")  # the same corpus and vocabulary, prepared once
    raw = tiny_corpus.root / "raw"
    r = _run(raw, *TINY, "--work", work, "--models", "dense,pretrained_emb", "--updates", "4", "--eval-every", "2",
             "--extra-test", f"again={raw / 'test.src'},{raw / 'test.tgt'}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work, r


@pytest.mark.e2e
def test_csv_png_json_and_tensorboard(tiny_run):
    work, r = tiny_run
    with open(work / "convergence.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["model", "label", "update", "wall_s", "valid_loss", "bleu"]
    assert [(x["model"], x["update"]) for x in rows] == [("dense", "2"), ("dense", "4"), ("pretrained_emb", "2"),
                                                          ("pretrained_emb", "4")]
    assert all(float(x["valid_loss"]) > 0 and float(x["wall_s"]) > 0 for x in rows)
    for png in ("convergence.png", "bytes.png"):
        assert (work / png).read_bytes()[:4] == b"\x89PNG"
    assert any(p.name.startswith("events.out.tfevents") for p in (work / "tb" / "dense").rglob("*"))
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["updates"] == 4 and set(result["models"]) == {"dense", "pretrained_emb"}
    for m in result["models"].values():
        assert {"final_bleu", "best_bleu", "ratio_final", "ratio_best", "bytes", "train_s", "bleu_again"} <= set(m)
    # the artifact of the supermask model (mask bits + fp16 embeddings) is smaller than the dense fp16 weights
    assert 0 < result["models"]["pretrained_emb"]["bytes"] < result["models"]["dense"]["bytes"]
    assert "[dense] update 2: valid loss" in r.stdout  # progress while it runs


@pytest.mark.e2e
def test_extra_test_uses_the_runs_own_vocabulary(tiny_run):
    """The extra set here is the test split itself: scored through its own preprocessing, same BLEU."""
    work, r = tiny_run
    for m in json.loads(r.stdout.strip().splitlines()[-1])["models"].values():
        assert m["bleu_again"] == m["final_bleu"]
    assert (work / "extra" / "again" / "bin" / "dict.src.txt").read_text() == (
        work / "data" / "bin" / "dict.src.txt").read_text()


@pytest.fixture(scope="module")
def ablation_work(tiny_corpus, tmp_path_factory):
    """One work directory for both uses of benchmarks/ablation.py: the dense run of seed 1 is trained once and
    reused, as a user's second ablation.py run in the same WORK reuses it."""
    work = tmp_path_factory.mktemp("ablation")
    os.symlink(tiny_corpus.root / "prep", work / "data")
    return work


def _ablation(tiny_corpus, work, *args):
    r = run_benchmark("ablation.py", tiny_corpus.root / "raw", *TINY, "--work", work, "--seeds", "1", "--updates", "2",
                      *args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.e2e
def test_ablation_table_on_a_tiny_budget(tiny_corpus, ablation_work):
    result = _ablation(tiny_corpus, ablation_work, "--settings", "tuned,embed_gain_2")
    rows = {row["setting"]: row for row in result["settings"]}
    assert rows["tuned"]["delta_vs_tuned"] == 0 and rows["embed_gain_2"]["flags"] == "--embed-gain 2"
    assert len(result["dense_bleu"]) == 1  # a dense BLEU of 0 after 2 updates prints "-" for the ratio
    # the run with --embed-gain 2 really trained with it
    log = (ablation_work / "embed_gain_2.seed1" / "random_emb.train.log").read_text()
    assert "'embed_gain': 2.0" in log or "embed_gain=2.0" in log


@pytest.mark.e2e
def test_ratio_sweep_on_a_tiny_budget(tiny_corpus, ablation_work):
    """The Fig. 2 sweep: one run per (variant, k), the dense model trained once and lending its embeddings."""
    result = _ablation(tiny_corpus, ablation_work, "--ratios", "0.9", "--variants",
                       "one_layer:random,standard:pretrained")
    got = {(row["variant"], row["remaining_ratio"]) for row in result["ratios"]}
    assert got == {("one_layer:random", 0.9), ("standard:pretrained", 0.9)}
    assert (ablation_work / "ratio_sweep.png").stat().st_size > 0
    with open(ablation_work / "ratio_sweep.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    log = (ablation_work / "k0.9.standard.pretrained.seed1" / "pretrained_emb.train.log").read_text()
    assert "remaining_ratio=0.9" in log and "'_name': 'supermask_transformer_tiny'" in log
    assert len(list(ablation_work.glob("*/dense/checkpoint_last.pt"))) == 1 + 1  # trained once, linked once


@pytest.mark.parametrize("args, needle, code", [
    (["--models", "dense,huge"], "unknown ['huge']; allowed: dense, random_emb", 2),
    (["--models", "pretrained_emb"], "pretrained_emb needs dense", 2),
    (["--extra-test", "broken"], "expected NAME=SOURCE_FILE,REFERENCE_FILE", 2),
    (["--eval-every", "0"], "--eval-every 0 must be a positive number", 2),
    (["--extra-test", "x=missing.de,missing.en"], "extra test file 'missing.de' does not exist", 1),
])
def test_bad_input(tmp_path, args, needle, code):
    (tmp_path / "raw").mkdir()
    got, err = benchmark_main("convergence.py", tmp_path / "raw", *TINY, "--work", tmp_path / "w", *args)
    assert got == code and needle in err, err
    assert not (tmp_path / "w" / "convergence.csv").exists()


def test_missing_data_directory(tmp_path):
    code, err = benchmark_main("convergence.py", tmp_path / "nowhere", "--work", tmp_path / "w")
    assert code == 1 and "data directory" in err and "does not exist" in err


@pytest.mark.parametrize("args, needle", [
    (["--settings", "best"], "unknown ['best']; allowed: tuned, paper"),
    (["--ratios", "0.5,1.5"], "every k must lie in (0, 1]"),
])
def test_ablation_bad_arguments(args, needle):
    code, err = benchmark_main("ablation.py", "raw", *args)
    assert code == 2 and needle in err, err
