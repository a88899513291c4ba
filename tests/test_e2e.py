"""End to end through the real CLIs, exactly as the README shows them."""

import json
import os
import re
import shutil
import subprocess

import pytest
import torch
from conftest import ROOT, SM, TRAIN, olt, run_cli

pytestmark = pytest.mark.e2e  # runs fairseq-* commands, CLIs or scripts in subprocesses


def _fresh_build(ckpt_path, seed):
    """The model fairseq-train built before its first update, rebuilt from the checkpoint's config."""
    from fairseq import tasks, utils
    from omegaconf import OmegaConf

    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(state["cfg"])
    task = tasks.setup_task(cfg.task)
    utils.set_torch_seed(seed)
    return state, task.build_model(cfg.model)


def test_only_scores_change_during_fairseq_training(trained):
    state, fresh = _fresh_build(trained, seed=3)
    trained_sd, fresh_sd = state["model"], fresh.state_dict()
    assert set(trained_sd) == set(fresh_sd)
    scores = [k for k in trained_sd if k.endswith(".scores")]
    frozen = [k for k in trained_sd if not k.endswith(".scores")]
    assert scores and frozen
    for k in frozen:  # bit-identical to the initial value: regenerated from the weight seed
        assert torch.equal(trained_sd[k], fresh_sd[k]), k
    changed = [k for k in scores if not torch.equal(trained_sd[k], fresh_sd[k])]
    assert len(changed) == len(scores)  # every score tensor was trained (same init: same --seed)
    assert state["cfg"]["model"]["weight_seed"] == 3


def test_generate_and_bleu(trained, tiny_corpus, tmp_path):
    r = run_cli("fairseq-generate", tiny_corpus.bin, "--user-dir", "one_layer_lottery", "--path", trained,
                "--beam", "5", "--batch-size", "16", "--required-batch-size-multiple", "1", "--remove-bpe",
                "sentencepiece", "--max-len-b", "20")
    m = re.search(r"Generate test with beam=5: BLEU4 = ([\d.]+)", r.stdout)
    assert m, r.stdout[-2000:]
    # 37 sentences, batches of 16: fairseq drops a last batch smaller than --required-batch-size-multiple
    assert r.stdout.count("\nD-") + r.stdout.startswith("D-") == 37
    out = tmp_path / "gen.txt"
    out.write_text(r.stdout)
    b = olt("bleu", out, os.path.join(tiny_corpus.raw, "test.tgt"), "--json")
    res = json.loads(b.stdout)
    assert res["sentences"] == 37 and 0 <= res["bleu"] <= 100 and res["signature"].startswith("nrefs:1")


def test_interactive_translates(trained, tiny_corpus):
    from conftest import BIN

    with open(os.path.join(tiny_corpus.root, "prep", "spm", "test.src"), encoding="utf-8") as f:
        line = f.readline()
    r = subprocess.run([os.path.join(BIN, "fairseq-interactive"), tiny_corpus.bin, "--user-dir", "one_layer_lottery",
                        "--path", str(trained), "--beam", "2", "--max-len-b", "10"],
                       input=line, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"^H-0\t", r.stdout, re.MULTILINE)


def test_summary_counts(trained):
    r = olt("summary", trained, "--json")
    s = json.loads(r.stdout)
    assert s["arch"] == "one_layer_supermask_transformer_tiny" and s["share_layer_weights"] is True
    assert s["scores"] > s["frozen_random"] > 0


def test_pretrained_embeddings_frozen_and_portable(tiny_corpus, dense_ckpt, tmp_path):
    emb = tmp_path / "dense.pt"
    shutil.copy(dense_ckpt, emb)
    save = tmp_path / "sm"
    run_cli("fairseq-train", tiny_corpus.bin, *SM, *TRAIN, "--max-update", "3", "--save-dir", save,
            "--pretrained-embeddings", emb, "--share-decoder-input-output-embed")
    dense = torch.load(dense_ckpt, map_location="cpu", weights_only=True)["model"]
    sm = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    for side in ("encoder", "decoder"):
        key = f"{side}.embed_tokens.weight"
        assert torch.equal(sm["model"][key], dense[key].float())
        assert f"{side}.embed_tokens.scores" not in sm["model"]
    assert sm["cfg"]["model"]["_pretrained_embeddings_in_checkpoint"] is True
    emb.unlink()  # the checkpoint alone must be enough to translate
    run_cli("fairseq-generate", tiny_corpus.bin, "--user-dir", "one_layer_lottery", "--path",
            save / "checkpoint_last.pt", "--beam", "1", "--max-len-b", "5", "--batch-size", "64")


def _fails_one_line(r, *needles):
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


# one case of each path a bad value takes out of fairseq-train (our validation, fairseq's argparse choices, an
# architecture name, a missing file); every other value's message is checked in-process in test_model.py
@pytest.mark.parametrize("flags, needles", [
    (["--remaining-ratio", "0"], ["remaining ratio 0.0 is outside (0, 1]"]),
    (["--init-preset", "best"], ["invalid choice: 'best'", "tuned"]),
    (["--arch", "one_layer_supermask_transformer_huge"], ["invalid choice: 'one_layer_supermask_transformer_huge'"]),
    (["--pretrained-embeddings", "missing.pt"], ["'missing.pt' does not exist"]),
])
def test_bad_input_fails_before_training(tiny_corpus, tmp_path, flags, needles):
    save = tmp_path / "save"
    r = run_cli("fairseq-train", tiny_corpus.bin, *SM, *TRAIN, "--max-update", "2", "--save-dir", save, *flags,
                check=False)
    _fails_one_line(r, *needles)
    assert not list(save.glob("*.pt")) if save.exists() else True


def test_pretrained_embeddings_wrong_dim(tiny_corpus, dense_ckpt, tmp_path):
    r = run_cli("fairseq-train", tiny_corpus.bin, *SM, *TRAIN, "--encoder-embed-dim", "32", "--max-update", "2",
                "--save-dir", tmp_path, "--pretrained-embeddings", dense_ckpt, check=False)
    _fails_one_line(r, "encoder embedding dim is 64, the model's is 32")


def test_pretrained_embeddings_wrong_dictionary(tiny_corpus, tmp_path):
    # same sizes, two target symbols swapped: only a symbol-by-symbol check can tell
    other = tmp_path / "bin"
    shutil.copytree(tiny_corpus.bin, other)
    lines = (other / "dict.tgt.txt").read_text(encoding="utf-8").splitlines()
    lines[10], lines[11] = lines[11], lines[10]
    (other / "dict.tgt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_cli("fairseq-train", other, "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
            "--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "64",
            "--decoder-ffn-embed-dim", "64", *TRAIN, "--max-update", "1", "--save-dir", tmp_path / "d")
    r = run_cli("fairseq-train", tiny_corpus.bin, *SM, *TRAIN, "--max-update", "2", "--save-dir", tmp_path / "s",
                "--pretrained-embeddings", tmp_path / "d" / "checkpoint_last.pt", check=False)
    _fails_one_line(r, "decoder dictionary differs", "at line 11")
