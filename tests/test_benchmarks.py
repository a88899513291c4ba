"""The machinery of the newer benchmarks on tiny budgets (their real runs and figures are in the README)."""

import csv
import json
import os

import pytest
from conftest import benchmark_main, run_benchmark

TINY = ["--src", "src", "--tgt", "tgt", "--dim", "32", "--ffn", "64", "--layers", "1", "--heads", "2",
        "--vocab", "600", "--max-tokens", "1024", "--warmup", "2"]


def _run(script, *args, timeout=900):
    return run_benchmark(script, *args, timeout=timeout)


@pytest.mark.e2e
def test_sparse_comparison_table_plot_bytes_and_analysis(tiny_corpus, tmp_path):
    work = tmp_path / "sparse"
    work.mkdir()
    os.symlink(tiny_corpus.root / "prep", work / "data")  # the same corpus, prepared once per session
    r = _run("sparse_comparison.py", tiny_corpus.root / "raw", *TINY, "--work", work, "--kept", "0.5",
             "--methods", "one_layer,magnitude,ticket", "--updates", "4", "--rewind-update", "1",
             "--analysis-sentences", "20")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])["results"]
    assert set(result) == {"dense", "one_layer_0.5", "magnitude_0.5", "ticket_0.5"}
    # bytes under one rule: a supermask stores positions only, a pruned model positions + half its values
    assert result["one_layer_0.5"]["bytes"] < result["ticket_0.5"]["bytes"] < result["dense"]["bytes"]
    assert result["ticket_0.5"]["bytes"] == result["magnitude_0.5"]["bytes"]
    assert all(0 <= r_["mean_cka"] <= 1 for n, r_ in result.items() if n != "dense")
    with open(work / "sparse.csv", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (work / "sparse.png").read_bytes()[:4] == b"\x89PNG" and (work / "analysis.png").exists()
    assert (work / "dense" / "weights_update1.pt").exists() and (work / "tickets" / "ticket_0.5.pt").exists()


@pytest.mark.e2e
def test_artifact_size_adds_a_coated_row_stored_in_one_and_a_half_bits_a_weight():
    """`artifact_size.py --coats 0.25` as a user runs it: the coated row (format 5) stores 1.5 mask bits a weight, its
    inner coat only inside the mask, and its file stays within 0.5 % of its floor; its text table lines up."""
    r = _run("artifact_size.py", "--archs", "iwslt_de_en", "--coats", "0.25", "--json", timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])["rows"]
    plain, coated = (next(x for x in rows if x["coats"] == c and x["embeddings"].startswith("random")) for c in
                     (None, "0.25"))
    assert (plain["format_version"], coated["format_version"]) == (4, 5)
    assert coated["mask_bits"] * 2 == plain["mask_bits"] * 3
    assert coated["ratio_to_floor"] < 1.005 and coated["artifact_bytes"] < 1.51 * plain["artifact_bytes"]
    table = [line for line in r.stdout.splitlines() if " artifact " in line]
    assert len(table) == 3 and len({line.index(" artifact ") for line in table}) == 1, table  # the columns line up


@pytest.mark.e2e
def test_speed_sweep_writes_paired_ratios(tmp_path):
    r = _run("speed.py", "--sweep", "--shapes", "tiny", "--tokens", "64,128", "--rounds", "2", "--sentences", "2",
             "--length", "3", "--out", tmp_path, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(row["shape"], row["tokens"], row["rounds"]) for row in result["rows"]] == [("tiny", 64, 2),
                                                                                       ("tiny", 128, 2)]
    for row in result["rows"]:
        s = row["step_ratio"]
        assert s["min"] <= s["median"] <= s["max"] and row["decode_ratio"]["median"] > 0 and row["peak_mem_ratio"] > 0
    with open(tmp_path / "speed_sweep.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {"step_ratio_median", "step_ratio_min", "step_ratio_max", "decode_ratio_median"} <= set(rows[0])
    assert (tmp_path / "speed_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "worst step median" in r.stdout


@pytest.mark.e2e
def test_glue_benchmark_on_a_tiny_budget(tiny_glue, tmp_path):
    glue = tmp_path / "glue"
    glue.mkdir()
    os.symlink(os.path.dirname(tiny_glue), glue / "RTE")  # train.tsv and dev.tsv in RTE's layout
    r = _run("glue_accuracy.py", glue, "--tasks", "RTE", "--work", tmp_path / "w", "--scale", "0.005", "--dim", "32",
             "--ffn", "64", "--layers", "1", "--heads", "2", "--max-positions", "128", "--vocab", "300",
             "--layer-score-lr-scales", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])["results"]["RTE"]
    assert set(result) == {"dense", "random_emb", "pretrained_emb", "random_emb@1", "pretrained_emb@1"}
    assert "layer_score_lr_scale=1.0" in (tmp_path / "w" / "RTE" / "random_emb@1.log").read_text()
    for m in result.values():
        assert m["examples"] == 60 and 0 <= m["accuracy"] <= 100 and m["majority_accuracy"] >= 50
    assert (tmp_path / "w" / "RTE" / "mlm" / "checkpoint_last.pt").exists()
    assert "ratio to dense" in r.stdout


@pytest.mark.parametrize("script, args, needle", [
    ("sparse_comparison.py", ["raw", "--kept", "0.5,1.2"], "every fraction kept must lie in (0, 1)"),
    ("speed.py", ["--sweep", "--shapes", "tiny,huge"], "unknown ['huge']"),
    ("glue_accuracy.py", ["glue", "--tasks", "CoLA"], "unknown ['CoLA']"),
    ("glue_accuracy.py", ["glue", "--layer-score-lr-scales", "0.1,-1"],
     "--layer-score-lr-scales: '-1' is not a positive number"),
])
def test_bad_arguments_exit_2_naming_the_value(script, args, needle):
    code, err = benchmark_main(script, *args)
    assert code == 2 and needle in err, err
