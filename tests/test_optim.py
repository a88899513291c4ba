import pytest
import torch
from conftest import MASKED, SM, build_model, run_cli


def _masked_adam(params):
    from fairseq.optim import OPTIMIZER_REGISTRY
    from fairseq.optim.adam import FairseqAdamConfig

    return OPTIMIZER_REGISTRY["masked_adam"](FairseqAdamConfig(lr=[1e-3], adam_betas="(0.9, 0.98)", tpu=False), params)


def _trained(model):
    return [p for p in model.parameters() if p.requires_grad]


def test_the_check_reads_the_tensors_it_is_given():
    from one_layer_lottery.errors import ConfigError

    scale = build_model("one_layer_supermask_transformer_tiny", "--learned-output-scale")
    plain = build_model("one_layer_supermask_transformer_tiny")  # built last: the older model is still checked
    _masked_adam(_trained(plain))
    with pytest.raises(ConfigError, match=r"1 non-score tensors require grad \(first: decoder.output_scale\)"):
        _masked_adam(_trained(scale))
    # fairseq's FP16Optimizer hands over fp32 copies: one per tensor, or one flat tensor
    _masked_adam([torch.nn.Parameter(p.data.float()) for p in _trained(plain)])
    _masked_adam([torch.nn.Parameter(torch.cat([p.data.view(-1) for p in _trained(plain)]))])
    with pytest.raises(ConfigError, match="non-score tensors"):
        _masked_adam([torch.nn.Parameter(p.data.float()) for p in _trained(scale)])
    with pytest.raises(ConfigError, match="trains supermask models only"):
        _masked_adam([torch.nn.Parameter(torch.zeros(3, 5))])  # a tensor of no supermask model
    with pytest.raises(ConfigError, match="trains supermask models only"):
        _masked_adam(_trained(plain) + [torch.nn.Parameter(torch.zeros(3))])


@pytest.mark.e2e
def test_masked_adam_trains_scores_and_keeps_state_for_scores_only(tiny_corpus, tmp_path):
    assert "masked_adam" in MASKED
    run_cli("fairseq-train", tiny_corpus.bin, *SM, *MASKED, "--max-update", "3", "--save-dir", tmp_path,
            "--adam-betas", "(0.9,0.98)", "--clip-norm", "0.1", "--update-freq", "2")
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    scores = sum(t.numel() for k, t in state["model"].items() if k.endswith(".scores"))
    opt = state["last_optimizer_state"]["state"]
    assert sum(s["exp_avg"].numel() for s in opt.values()) == scores
    assert sum(s["exp_avg_sq"].numel() for s in opt.values()) == scores
    assert state["optimizer_history"][-1]["optimizer_name"] == "MaskedOnlyFairseqAdam"


@pytest.mark.e2e
def test_masked_optimizer_refuses_other_trainable_tensors(tiny_corpus, tmp_path):
    r = run_cli("fairseq-train", tiny_corpus.bin, *SM, *MASKED, "--max-update", "2", "--save-dir", tmp_path,
                "--learned-output-scale", check=False)
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "non-score tensors require grad" in err[0] and "output_scale" in err[0]
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.e2e
def test_masked_optimizer_refuses_dense_models(tiny_corpus, tmp_path):
    r = run_cli("fairseq-train", tiny_corpus.bin, "--user-dir", "one_layer_lottery", "--arch", "transformer",
                "--encoder-layers", "1",
                "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", *MASKED,
                "--max-update", "1", "--save-dir", tmp_path, check=False)
    assert r.returncode == 1 and "trains supermask models only" in r.stderr
