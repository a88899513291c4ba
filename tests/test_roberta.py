"""The one-layer supermask RoBERTa classifier, trained through fairseq's own sentence_prediction task."""

import json
import os

import pytest
import torch
from conftest import ROOT, olt, run_cli

pytestmark = pytest.mark.e2e  # runs fairseq-* commands, CLIs or scripts in subprocesses

CLS = ["--user-dir", "one_layer_lottery", "--task", "sentence_prediction", "--num-classes", "2", "--init-token", "0",
       "--separator-token", "2", "--max-positions", "128", "--criterion", "sentence_prediction", "--lr", "3e-3",
       "--max-tokens", "4096", "--required-batch-size-multiple", "1", "--log-format", "simple", "--num-workers", "0",
       "--no-epoch-checkpoints", "--disable-validation"]
SMALL_DENSE = ["--arch", "roberta", "--encoder-layers", "1", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim",
               "128", "--encoder-attention-heads", "2", "--optimizer", "adam"]


def train(data, save, *extra, updates=6):
    run_cli("fairseq-train", data, *CLS, "--max-update", str(updates), "--save-dir", save, *extra)
    return save / "checkpoint_last.pt"


def build(data, *extra):
    """The one-layer classifier built from these flags as fairseq-train builds it, in this process."""
    from fairseq import options, tasks

    flags = [os.path.join(ROOT, a) if a == "one_layer_lottery" else a for a in CLS]
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), *flags, "--arch", "one_layer_supermask_roberta_tiny", "--optimizer", "masked_adam",
        *map(str, extra)])
    return tasks.setup_task(args).build_model(args)


def frozen_and_scores(sd):
    return ({k: v for k, v in sd.items() if k.endswith(".frozen_weight") or ".shared_layer_weights." in k},
            {k: v for k, v in sd.items() if k.endswith(".scores")})


@pytest.fixture(scope="module")
def one_layer(tiny_glue, tmp_path_factory):
    return train(tiny_glue, tmp_path_factory.mktemp("rob"), "--arch", "one_layer_supermask_roberta_tiny",
                 "--optimizer", "masked_adam", "--seed", "3")


def test_trains_masks_and_head_only_with_frozen_shared_weights(tiny_glue, one_layer):
    from one_layer_lottery.masks import n_pruned, topk_mask
    from one_layer_lottery.models.supermask_roberta import SupermaskRobertaModel
    from one_layer_lottery.supermask import SupermaskModule

    sd = torch.load(one_layer, weights_only=True)["model"]
    frozen, scores = frozen_and_scores(sd)
    # one storage for the layer shared by both depths; a mask per depth
    assert sum(".shared_layer_weights." in k for k in frozen) == 6
    assert not any(".layers.1." in k for k in frozen)
    # frozen weights bit-identical to a fresh build from the seed: training never touched them
    from fairseq import checkpoint_utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(one_layer)], arg_overrides={"data": tiny_glue})
    fresh = SupermaskRobertaModel.build_model(cfg.model, task).state_dict()
    for k, v in frozen.items():
        assert torch.equal(v, fresh[k]), k
    for k, v in scores.items():
        assert not torch.equal(v, fresh[k]), f"{k} did not train"
        assert int(topk_mask(v, 0.5).sum()) == v.numel() - n_pruned(v.numel(), 0.5)
    m0 = topk_mask(sd["encoder.sentence_encoder.layers.0.fc1.scores"], 0.5)
    m1 = topk_mask(sd["encoder.sentence_encoder.layers.1.fc1.scores"], 0.5)
    assert not torch.equal(m0, m1)  # masks differ across depths
    model = models[0]
    layers = model.encoder.sentence_encoder.layers
    assert layers[0].fc1.get_frozen_weight().data_ptr() == layers[1].fc1.get_frozen_weight().data_ptr()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and not n.endswith(".scores")}
    assert trainable == {f"classification_heads.sentence_classification_head.{m}.{w}"
                         for m in ("dense", "out_proj") for w in ("weight", "bias")}
    assert all(isinstance(m, SupermaskModule) for m in (layers[0].fc1, model.encoder.sentence_encoder.embed_tokens))


def test_classifier_layer_scores_learn_at_a_tenth_of_the_lr_by_default(tiny_glue, one_layer):
    """The default that lets the classifier learn (README, "Sentence classification"): the layers' scores start
    ten times larger than --layer-score-lr-scale 1 starts them; the embedding's do not."""
    from fairseq import checkpoint_utils

    from one_layer_lottery.models.supermask_roberta import SupermaskRobertaModel

    _, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(one_layer)], arg_overrides={"data": tiny_glue})
    torch.manual_seed(0)
    default = SupermaskRobertaModel.build_model(cfg.model, task).state_dict()
    cfg.model.layer_score_lr_scale = 1.0  # a Namespace: RoBERTa models take fairseq's legacy arguments
    torch.manual_seed(0)
    plain = SupermaskRobertaModel.build_model(cfg.model, task).state_dict()
    for k in (k for k in plain if k.endswith(".scores")):
        factor = 10 if ".layers." in k else 1
        torch.testing.assert_close(default[k], plain[k] * factor, rtol=1e-6, atol=0)


def test_predicts_through_stock_loading_and_round_trips_exactly(tiny_glue, one_layer, tmp_path):
    r = json.loads(run_cli("one-layer-lottery", "classify", one_layer, tiny_glue, "--json").stdout)
    assert r["examples"] == 60 and 0 <= r["accuracy"] <= 100 and r["majority_accuracy"] >= 50
    olt("export", one_layer, tmp_path / "m.olt")
    olt("expand", tmp_path / "m.olt", tmp_path / "back.pt", "--data", tiny_glue)
    a = olt("classify", one_layer, tiny_glue, "--predictions", tmp_path / "a.txt")
    b = olt("classify", tmp_path / "back.pt", tiny_glue, "--predictions", tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() and a.stdout == b.stdout
    info = json.loads(olt("inspect", tmp_path / "m.olt", "--json").stdout)
    assert info["totals"]["mask_bits"] == sum(m["bits"] for m in info["modules"])
    assert "encoder.sentence_encoder.fc1" in info["overlap"]


def test_masked_head_and_standard_arch(tiny_glue, tmp_path):
    ckpt = train(tiny_glue, tmp_path / "std", "--arch", "supermask_roberta_tiny", "--optimizer", "masked_adam",
                 "--classification-head", "masked", updates=3)
    sd = torch.load(ckpt, weights_only=True)["model"]
    assert "classification_heads.sentence_classification_head.out_proj.scores" in sd
    assert not any(k.endswith(".bias") for k in sd)  # nothing but masks learned
    frozen, _ = frozen_and_scores(sd)
    w0 = frozen["encoder.sentence_encoder.layers.0.fc1.frozen_weight"]
    assert not torch.equal(w0, frozen["encoder.sentence_encoder.layers.1.fc1.frozen_weight"])  # a layer per depth
    olt("export", ckpt, tmp_path / "m.olt")
    olt("expand", tmp_path / "m.olt", tmp_path / "back.pt")
    a = olt("classify", ckpt, tiny_glue, "--predictions", tmp_path / "a.txt")
    b = olt("classify", tmp_path / "back.pt", tiny_glue, "--predictions", tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() and a.stdout == b.stdout


def test_bert_init_preset_draws_every_masked_weight_from_n0_002_and_the_artifact_regenerates_it(tiny_glue, tmp_path):
    ckpt = train(tiny_glue, tmp_path / "bert", "--arch", "one_layer_supermask_roberta_tiny", "--optimizer",
                 "masked_adam", "--init-preset", "bert", updates=2)
    frozen, _ = frozen_and_scores(torch.load(ckpt, weights_only=True)["model"])
    table = next(v for k, v in frozen.items() if "embed_tokens" in k)
    for w in [table, *(v for k, v in frozen.items() if ".shared_layer_weights." in k)]:
        assert abs(w.float().std().item() / 0.02 - 1) < 0.1 and w.abs().max() > 3 * 0.02
    olt("export", ckpt, tmp_path / "m.olt")
    olt("expand", tmp_path / "m.olt", tmp_path / "back.pt")
    back, _ = frozen_and_scores(torch.load(tmp_path / "back.pt", weights_only=True)["model"])
    assert back.keys() == frozen.keys() and all(torch.equal(back[k], v) for k, v in frozen.items())


def test_pretrained_roberta_embeddings_frozen_and_bad_ones_refused(tiny_glue, dense_ckpt, tmp_path):
    dense = train(tiny_glue, tmp_path / "dense", *SMALL_DENSE, updates=2)
    ckpt = train(tiny_glue, tmp_path / "pre", "--arch", "one_layer_supermask_roberta_tiny", "--optimizer",
                 "masked_adam", "--pretrained-embeddings", dense, updates=2)
    sd, d = (torch.load(p, weights_only=True)["model"] for p in (ckpt, dense))
    for key in ("encoder.sentence_encoder.embed_tokens.weight", "encoder.sentence_encoder.embed_positions.weight"):
        assert torch.equal(sd[key], d[key]), key
    assert not any("embed_tokens.scores" in k for k in sd)
    olt("export", ckpt, tmp_path / "m.olt", "--embeddings-dtype", "float32")
    olt("expand", tmp_path / "m.olt", tmp_path / "back.pt")
    a = olt("classify", ckpt, tiny_glue, "--predictions", tmp_path / "a.txt")
    b = olt("classify", tmp_path / "back.pt", tiny_glue, "--predictions", tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() and a.stdout == b.stdout
    import one_layer_lottery  # noqa: F401  (fairseq checkpoints pickle an argparse.Namespace: the safe-load allow-list)

    state = torch.load(dense, weights_only=True)
    rows = state["model"]["encoder.sentence_encoder.embed_tokens.weight"].shape[0]
    state["model"]["encoder.sentence_encoder.embed_tokens.weight"] = torch.zeros(rows + 8, 64)
    torch.save(state, tmp_path / "more_rows.pt")
    other = tmp_path / "other_data"
    (other / "input0").mkdir(parents=True)
    with open(f"{tiny_glue}/input0/dict.txt", encoding="utf-8") as f:
        lines = f.readlines()
    lines[3], lines[4] = lines[4], lines[3]
    (other / "input0" / "dict.txt").write_text("".join(lines), encoding="utf-8")
    state = torch.load(dense, weights_only=True)
    state["cfg"]["task"]["data"] = str(other)
    torch.save(state, tmp_path / "other_dict.pt")
    cases = ((dense_ckpt, [], "a translation checkpoint"),
             (tmp_path / "more_rows.pt", [], f"embedding has {rows + 8} rows, the dictionary has {rows} symbols"),
             (tmp_path / "other_dict.pt", [], "dictionary differs from"),
             (dense, ["--encoder-embed-dim", "32"], "embedding dim is 64, the model's is 32"),
             (tmp_path / "missing.pt", [], "does not exist"))
    from one_layer_lottery.errors import ConfigError

    for path, extra, needle in cases:  # as fairseq-train builds the model, in this process
        with pytest.raises(ConfigError) as e:
            build(tiny_glue, "--pretrained-embeddings", path, *extra)
        assert needle in str(e.value) and "\n" not in str(e.value), (needle, str(e.value))
    # and as the command: one line, exit 1, nothing written
    r = run_cli("fairseq-train", tiny_glue, *CLS, "--arch", "one_layer_supermask_roberta_tiny", "--optimizer",
                "masked_adam", "--pretrained-embeddings", tmp_path / "more_rows.pt", "--max-update", "1", "--save-dir",
                tmp_path / "bad", check=False)
    assert r.returncode == 1 and f"embedding has {rows + 8} rows" in r.stderr, r.stderr[-500:]
    assert r.stderr.strip().splitlines()[-1].startswith("one_layer_lottery: error:")
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").glob("*.pt"))


def test_prepare_glue_refuses_wrong_columns_in_one_line(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.tsv").write_text("sentence\tlabel\nfine film\t1\n", encoding="utf-8")
    (raw / "dev.tsv").write_text("sentence\tlabel\nbad film\t0\n", encoding="utf-8")
    r = olt("prepare-glue", "RTE", raw, tmp_path / "out", check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "has no column 'sentence1' (its columns: sentence, label)" in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
