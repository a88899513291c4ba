"""Real kills (SIGKILL) during checkpoint saves and artifact exports: the previous file survives."""

import os
import random
import signal
import subprocess
import time

import pytest
import torch
from conftest import BIN, ROOT, TRAIN, olt

from one_layer_lottery import artifact

pytestmark = pytest.mark.e2e  # runs fairseq-* commands, CLIs or scripts in subprocesses


def _start(*args):
    return subprocess.Popen([os.path.join(BIN, args[0]), *map(str, args[1:])], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(p):
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def test_kill_during_checkpoint_saves_leaves_loadable_checkpoints(tiny_corpus, tmp_path):
    # a wide model and tiny batches: saving (hundreds of MB) takes longer than an update
    save = tmp_path / "ckpt"
    args = ["fairseq-train", tiny_corpus.bin, "--user-dir", "one_layer_lottery", "--arch",
            "one_layer_supermask_transformer_iwslt_de_en", *TRAIN, "--max-tokens", "64", "--max-update", "10000",
            "--save-interval-updates", "1", "--keep-interval-updates", "1", "--save-dir", save]
    rng = random.Random(0)
    for _ in range(3):
        p = _start(*args)
        deadline = time.time() + 180
        seen = set(save.glob("checkpoint_*_*.pt")) if save.exists() else set()
        # fairseq saves checkpoint_E_U.pt first (atomically), then copies it to checkpoint_last.pt:
        # kill right after a new one appears, inside that copy
        while time.time() < deadline:
            new = set(save.glob("checkpoint_*_*.pt")) - seen if save.exists() else set()
            if new and (save / "checkpoint_last.pt").exists():
                break
            time.sleep(0.01)
        assert time.time() < deadline, "training never saved"
        time.sleep(rng.uniform(0.0, 0.3))
        _kill(p)
        state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=True)
        assert "model" in state and state["optimizer_history"][-1]["num_updates"] >= 1


def test_kill_during_export_keeps_previous_artifact(trained, tmp_path):
    out = tmp_path / "model.olt"
    artifact.export(str(trained), str(out))
    before = out.read_bytes()
    # a bigger checkpoint to export over it: the wide one-layer model with random scores
    from conftest import build_model

    model = build_model("one_layer_supermask_transformer_iwslt_de_en_wide", src_words=6000, tgt_words=6000)
    state = torch.load(trained, map_location="cpu", weights_only=True)
    data = tmp_path / "bin"
    data.mkdir()
    for lang, n in (("src", 6000), ("tgt", 6000)):
        (data / f"dict.{lang}.txt").write_text("".join(f"w{i} 1\n" for i in range(n)))
    cfg = dict(state["cfg"])
    cfg["model"] = dict(cfg["model"], _name="one_layer_supermask_transformer_iwslt_de_en_wide", **{
        k: getattr(model.args, k) for k in ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim",
                                            "decoder_ffn_embed_dim", "encoder_layers", "decoder_layers",
                                            "encoder_attention_heads", "decoder_attention_heads")},
        weight_seed=model.args.weight_seed)
    cfg["task"] = dict(cfg["task"], data=str(data), source_lang="src", target_lang="tgt")
    big = tmp_path / "big.pt"
    torch.save({"cfg": cfg, "model": model.state_dict()}, big)
    for delay in (0.5, 1.5, 2.5, 4.0):
        p = _start("one-layer-lottery", "export", big, out)
        time.sleep(delay)
        finished = p.poll() is not None
        _kill(p)
        now = out.read_bytes()
        assert now == before or finished or artifact.read(str(out))
        if now != before:  # the export completed: the new file is whole
            artifact.read(str(out))
            before = now
    olt("inspect", out)
