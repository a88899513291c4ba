import pytest
import torch
from conftest import ROOT, run_cli

pytestmark = pytest.mark.e2e  # runs fairseq-* commands, CLIs or scripts in subprocesses


def test_hydra_train_composes_config_and_keeps_arch_defaults(tiny_corpus, tmp_path):
    # the yaml sets the shape; deleting the FFN sizes must give the named architecture's, not base defaults
    run_cli("fairseq-hydra-train", "--config-dir", f"{ROOT}/configs", "--config-name", "cpu_tiny",
            f"task.data={tiny_corpus.bin}", f"common.user_dir={ROOT}/one_layer_lottery",
            "optimization.max_update=2", f"checkpoint.save_dir={tmp_path}/ckpt", f"hydra.run.dir={tmp_path}/out",
            "model.encoder_layers=2", "~model.encoder_ffn_embed_dim", "~model.decoder_ffn_embed_dim",
            "dataset.max_tokens=1024")
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    cfg, sd = state["cfg"]["model"], state["model"]
    assert cfg["_name"] == "one_layer_supermask_transformer_tiny" and cfg["share_layer_weights"] is True
    assert cfg["encoder_layers"] == 2 and cfg["decoder_layers"] == 3
    assert cfg["encoder_ffn_embed_dim"] == 128 and cfg["encoder_embed_dim"] == 128  # tiny arch / the yaml
    assert sd["encoder.shared_layer_weights.fc1"].shape == (128, 128)
    assert sum(k.endswith("fc1.scores") for k in sd) == 2 + 3
