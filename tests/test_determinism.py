import hashlib
import json

import pytest
import torch
from conftest import MASKED, SM, build_model, run_cli

from one_layer_lottery.init import InitSpec, generate_weight

# Pinned checksums of the frozen random weights. A change here orphans every published artifact
# (they store the seed, not the weights): change generation only with a new artifact format version.
PINNED_TENSOR = "63e59b29cb044aaa571d5fb4fa5dee0c73be8a5e5b02a080d0723c26da9d725c"
PINNED_MODEL = "a01da2e27c1e6d9cf4564124d775bde7887b4314a476037383d72d6f1b9b8f25"  # the tuned preset (default)
# before per-role inits (format-1 artifacts) every model was drawn as the paper preset draws it now
PINNED_MODEL_FORMAT_1 = "7ad6e1a4bee51092cfd6f4014313cd1058220993846336fbfced3206af1ef718"


def _sha(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_weight_generation_is_pinned():
    spec = InitSpec("kaiming_uniform", 0.5, True)
    assert _sha([generate_weight(1234, "encoder.layer.fc1", (16, 8), spec)]) == PINNED_TENSOR


def _model_sha(model) -> str:
    sd = model.state_dict()
    return _sha(sd[k] for k in sorted(k for k in sd if not k.endswith((".scores", "version"))))


def test_model_weights_are_pinned():
    torch.manual_seed(999)  # the global RNG must not matter
    assert _model_sha(build_model("one_layer_supermask_transformer_tiny", "--weight-seed", "1234")) == PINNED_MODEL
    paper = build_model("one_layer_supermask_transformer_tiny", "--weight-seed", "1234", "--init-preset", "paper")
    assert _model_sha(paper) == PINNED_MODEL_FORMAT_1


@pytest.mark.e2e
def test_format_1_artifacts_are_refused_in_one_line(trained, tmp_path):
    """Format 1 (before per-role inits) was written only by this repository's early commits: refused, one line."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from one_layer_lottery import artifact
    from one_layer_lottery.errors import ConfigError

    artifact.export(str(trained), str(tmp_path / "a.olt"))
    with safe_open(tmp_path / "a.olt", framework="pt") as f:
        meta = json.loads(f.metadata()["one_layer_lottery"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["format_version"] = 1
    save_file(tensors, tmp_path / "old.olt", metadata={"one_layer_lottery": json.dumps(meta)})
    with pytest.raises(ConfigError, match="format version 1; this version reads 2, 3, 4") as e:
        artifact.load_model(str(tmp_path / "old.olt"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_moving_keeps_generated_values(dtype):
    w = generate_weight(7, "x", (8, 8), InitSpec())
    model = build_model("one_layer_supermask_transformer_tiny", "--weight-seed", "7").to(dtype)
    assert model.encoder.layers[1].fc1.get_frozen_weight().dtype == dtype
    assert torch.equal(w.to(dtype), generate_weight(7, "x", (8, 8), InitSpec()).to(dtype))


@pytest.mark.e2e
def test_exact_resume(tiny_corpus, tmp_path):
    """6 updates in one go == 3 updates, stop, resume from checkpoint_last.pt, 3 more; bit for bit. (Within the
    first epoch: a resume in a later epoch draws other batches, test_study.py.)"""
    common = [*SM, *MASKED, "--seed", "4", "--dropout", "0.1", "--save-interval-updates", "3"]
    run_cli("fairseq-train", tiny_corpus.bin, *common, "--max-update", "6", "--save-dir", tmp_path / "straight")
    run_cli("fairseq-train", tiny_corpus.bin, *common, "--max-update", "3", "--save-dir", tmp_path / "resumed")
    run_cli("fairseq-train", tiny_corpus.bin, *common, "--max-update", "6", "--save-dir", tmp_path / "resumed")
    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for i, s in a["last_optimizer_state"]["state"].items():
        assert torch.equal(s["exp_avg"], b["last_optimizer_state"]["state"][i]["exp_avg"])
