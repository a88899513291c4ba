"""The shell recipes in scripts/, run as a user runs them."""

import csv
import os
import re
import shlex
import shutil
import subprocess

import pytest
from conftest import ROOT, SHARED_DATA, script_env

pytestmark = pytest.mark.e2e  # runs fairseq-* commands, CLIs or scripts in subprocesses

MULTI30K = os.path.join(SHARED_DATA, "multi30k")


def sh(*args, check=True):
    r = subprocess.run(["bash", *map(str, args)], cwd=ROOT, env=script_env(), capture_output=True, text=True,
                       timeout=900, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.mark.skipif(not os.path.isdir(MULTI30K), reason=f"real corpus not found at {MULTI30K} (see shared/data)")
def test_prepare_iwslt14_recipe_offline_on_multi30k(tmp_path):
    out = tmp_path / "m30k"
    sh("scripts/prepare-iwslt14.sh", "--from", MULTI30K, out)
    assert (out / "bin" / "dict.de.txt").exists() and (out / "bin" / "train.de-en.en.bin").exists()
    n = len((out / "raw" / "test.en").read_text(encoding="utf-8").splitlines())
    assert n == 1000  # test_2016_flickr


def test_prepare_wmt_recipe_joined_dictionary(tiny_corpus, tmp_path):
    out = tmp_path / "wmt"
    os.makedirs(tmp_path / "raw")
    for split in ("train", "valid", "test"):
        for side, lang in (("src", "en"), ("tgt", "de")):
            os.symlink(os.path.join(tiny_corpus.raw, f"{split}.{side}"), tmp_path / "raw" / f"{split}.{lang}")
    sh("scripts/prepare-wmt14-en-de.sh", "--from", tmp_path / "raw", out)
    assert (out / "bin" / "dict.en.txt").read_text() == (out / "bin" / "dict.de.txt").read_text()
    assert (out / "spm" / "spm.joined.model").exists()


def test_train_and_evaluate_recipes(tiny_corpus, tmp_path):
    data = os.path.join(tiny_corpus.root, "prep")
    save = tmp_path / "ckpt"
    sh("scripts/train.sh", "cpu_tiny", os.path.join(data, "bin"), save, "optimization.max_update=0",
       "optimization.max_epoch=2", "checkpoint.no_epoch_checkpoints=false", "dataset.max_tokens=1024",
       "model.encoder_layers=1", "model.decoder_layers=1")
    r = sh("scripts/evaluate.sh", data, save / "checkpoint_last.pt")
    assert "detokenized sacreBLEU: BLEU" in r.stdout and "nrefs:1" in r.stdout
    assert "tokenized BLEU (fairseq): BLEU4 =" in r.stdout
    r = sh("scripts/evaluate.sh", data, save, "--wmt", "--average", "2")
    assert "checkpoint_avg2.pt" in r.stdout and "compound-split BLEU: BLEU" in r.stdout
    bad = sh("scripts/evaluate.sh", data, save, "--beam", "4", check=False)
    assert bad.returncode == 1 and "unknown option --beam" in bad.stderr


def test_sweep_collects_csv_and_plot(tiny_corpus, tmp_path):
    data = os.path.join(tiny_corpus.root, "prep")
    sweep = tmp_path / "sweep"
    sh("scripts/sweep.sh", "cpu_tiny", data, sweep, "model.remaining_ratio=0.3,0.7", "optimization.max_update=3",
       "dataset.max_tokens=1024", "model.encoder_layers=1", "model.decoder_layers=1")
    with open(sweep / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["model.remaining_ratio"] for r in rows) == ["0.3", "0.7"]
    assert "checkpoint.save_dir" not in rows[0]
    assert all(0 <= float(r["bleu"]) <= 100 for r in rows)
    assert (sweep / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_pretrained_embeddings_recipe(tiny_corpus, tmp_path):
    data = os.path.join(tiny_corpus.root, "prep")
    shrink = " ".join(f"++model.{k}" for k in (
        "encoder_layers=1", "decoder_layers=1", "encoder_embed_dim=32", "decoder_embed_dim=32",
        "encoder_ffn_embed_dim=32", "decoder_ffn_embed_dim=32", "encoder_attention_heads=2",
        "decoder_attention_heads=2")) + (" optimization.max_update=2 dataset.max_tokens=1024 task.eval_bleu=false"
                                         " checkpoint.best_checkpoint_metric=loss"
                                         " checkpoint.maximize_best_checkpoint_metric=false")
    r = subprocess.run(["bash", "scripts/pretrained-embeddings.sh", data, str(tmp_path), "iwslt14", "small"], cwd=ROOT,
                       env=script_env(OVERRIDES=shrink), capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    import torch

    dense = torch.load(tmp_path / "iwslt14_dense_small" / "checkpoint_best.pt", weights_only=True)["model"]
    sm = torch.load(tmp_path / "iwslt14_one_layer_small_pretrained_emb" / "checkpoint_best.pt", weights_only=True)
    assert torch.equal(sm["model"]["encoder.embed_tokens.weight"], dense["encoder.embed_tokens.weight"].float())
    assert sm["cfg"]["model"]["_name"] == "one_layer_supermask_transformer_iwslt_de_en"
    bad = sh("scripts/pretrained-embeddings.sh", data, tmp_path, "iwslt14", "huge", check=False)
    assert bad.returncode == 1 and "unknown task/size 'iwslt14/huge'" in bad.stderr


def test_demo_script_end_to_end_on_a_raw_directory(tiny_corpus, tmp_path):
    """The first README command's pipeline (scripts/demo.sh), shrunk: DATA=DIR branch, summary printed."""
    env = script_env(WORK=str(tmp_path / "demo"), UPDATES="3", DIM="32", FFN="32", LAYERS="1", HEADS="2",
                     VOCAB="300", SRC="src", TGT="tgt")
    r = subprocess.run(["bash", "scripts/demo.sh", tiny_corpus.raw], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for line in ("BLEU supermask:", "BLEU dense:", "BLEU ratio supermask/dense:", "mask bits:", "wall time (demo):",
                 "stored bytes supermask:", "stored bytes dense:"):
        assert line in r.stdout, r.stdout[-2000:]
    # the demo's multicoated mask: one inner coat, stored where the mask (k = 0.5) keeps, so 1.5 bits a score (every
    # weight here has an even count)
    assert "inner mask coats: 0.25" in r.stdout, r.stdout[-2000:]
    scores = int(re.search(r"trainable \(scores\): ([\d,]+)", r.stdout).group(1).replace(",", ""))
    bits = int(re.search(r"mask bits: ([\d,]+)", r.stdout).group(1).replace(",", ""))
    assert bits == 3 * scores // 2
    bad = subprocess.run(["bash", "scripts/demo.sh", str(tmp_path / "nope")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr


def test_demo_script_end_to_end_on_the_embedded_corpus(tmp_path):
    """The first README command as a user runs it, with no data directory: the embedded synthetic corpus (20,000
    pairs; shrunk model and budget). Its text writes " ." as a word on purpose, so its BLEU step passes --tokenized
    (test_data checks that this silences sacreBLEU's warning that the text looks tokenized, which a trained model's
    500 test hypotheses set off; a 2-update model's do not): seen here in the commands the script runs."""
    env = script_env(WORK=str(tmp_path / "demo"), UPDATES="2", DIM="16", FFN="16", LAYERS="1", HEADS="2",
                     VOCAB="300")
    spy, log = tmp_path / "spy", tmp_path / "commands.txt"
    spy.mkdir()
    real = shutil.which("one-layer-lottery", path=env["PATH"])
    (spy / "one-layer-lottery").write_text(
        f'#!/usr/bin/env bash\necho "$*" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n')
    (spy / "one-layer-lottery").chmod(0o755)
    env["PATH"] = f"{spy}{os.pathsep}{env['PATH']}"
    r = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                       check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "embedded default corpus: SYNTHETIC" in r.stdout and "BLEU ratio supermask/dense:" in r.stdout
    assert len((tmp_path / "demo" / "data" / "raw" / "test.tgt").read_text(encoding="utf-8").splitlines()) == 500
    bleu = [line.split() for line in log.read_text().splitlines() if line.startswith("bleu ")]
    assert len(bleu) == 2 and all("--tokenized" in args for args in bleu), log.read_text()


def test_lottery_ticket_recipe_end_to_end(tiny_corpus, tmp_path):
    data = os.path.join(tiny_corpus.root, "prep")
    small = ["+model.encoder_layers=1", "+model.decoder_layers=1", "+model.encoder_embed_dim=32",
             "+model.decoder_embed_dim=32", "+model.encoder_ffn_embed_dim=64", "+model.decoder_ffn_embed_dim=64",
             "optimization.max_epoch=0", "optimization.max_update=4", "task.eval_bleu=false",
             "checkpoint.best_checkpoint_metric=loss", "checkpoint.maximize_best_checkpoint_metric=false",
             "dataset.max_tokens=1024", "common.log_interval=1"]
    out = tmp_path / "lt"
    r = sh("scripts/lottery-ticket.sh", "iwslt14_dense_small", os.path.join(data, "bin"), out, "--kept", "0.4",
           "--rewind-update", "2", "--sign-only", *small)
    assert (out / "dense" / "weights_update2.pt").exists()
    assert re.search(r"\[lottery-ticket\] ticket_0.4: detokenized sacreBLEU: BLEU", r.stdout)
    import torch

    from one_layer_lottery.masks import n_pruned
    from one_layer_lottery.pruning import is_prunable

    ticket = torch.load(out / "ticket_0.4.pt", weights_only=True)
    assert ticket["lottery_ticket"]["sign_only"] and ticket["lottery_ticket"]["rewind_update"] == 2
    retrained = torch.load(out / "ticket_0.4" / "checkpoint_last.pt", weights_only=True)["model"]
    for k, v in retrained.items():
        if is_prunable(k, v):
            assert torch.equal(v.eq(0), ticket["model"][k].eq(0)), k  # retrained under the ticket's mask
            assert int(v.eq(0).sum()) == n_pruned(v.numel(), 0.4), k
    for bad, needle in ((["--kept", "1.2", "--rewind-update", "2"], "'1.2' is outside (0, 1]"),
                        (["--kept", "0.5", "--rewind-update", "x"], "--rewind-update 'x'"),
                        (["--kept", "0.5", "--rewind-update", "1", "--beam", "4"], "unknown option --beam")):
        r = sh("scripts/lottery-ticket.sh", "iwslt14_dense_small", os.path.join(data, "bin"), tmp_path / "bad", *bad,
               check=False)
        assert r.returncode == 1 and needle in r.stderr and not (tmp_path / "bad").exists()


def test_glue_sweep_collects_accuracy_one_layer_vs_standard(tiny_glue, tmp_path):
    sweep = tmp_path / "sweep"
    sh("scripts/sweep.sh", "glue_qqp_one_layer_base_random_emb", tiny_glue, sweep, "model.remaining_ratio=0.3,0.7",
       "model._name=one_layer_supermask_roberta_tiny,supermask_roberta_tiny", "common.fp16=false",
       "optimization.max_update=2", "optimization.max_epoch=1", "lr_scheduler.total_num_update=2",
       "lr_scheduler.warmup_updates=1", "dataset.batch_size=16", "dataset.num_workers=0", "+model.max_positions=128",
       "task.max_positions=128")
    with open(sweep / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["model._name"], r["model.remaining_ratio"]) for r in rows) == [
        ("one_layer_supermask_roberta_tiny", "0.3"), ("one_layer_supermask_roberta_tiny", "0.7"),
        ("supermask_roberta_tiny", "0.3"), ("supermask_roberta_tiny", "0.7")]
    assert all(0 <= float(r["accuracy"]) <= 100 for r in rows) and "bleu" not in rows[0]
    assert (sweep / "results.png").read_bytes()[:4] == b"\x89PNG"
