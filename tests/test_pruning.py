"""Magnitude pruning of fairseq's dense Transformer, rewind points, lottery tickets and the layer analysis."""

import json
import re

import pytest
import torch
from conftest import TRAIN, argparse, hypotheses, make_dictionary, olt, run_cli

DENSE = ["--arch", "pruned_transformer_tiny", "--user-dir", "one_layer_lottery"]


def build_dense(*extra):
    from fairseq import options

    import one_layer_lottery  # noqa: F401
    from one_layer_lottery.pruning import pruner_of

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["dummy", "--task", "translation", *DENSE, *extra])
    task = argparse.Namespace(source_dictionary=make_dictionary(40), target_dictionary=make_dictionary(30))
    from one_layer_lottery.models.pruned_transformer import PrunedTransformerModel

    model = PrunedTransformerModel.build_model(args, task)
    return model, pruner_of(model)


def zeros(state, names):
    return {n: state[n].eq(0) for n in names}


def test_schedule_is_zhu_gupta_cubic():
    from one_layer_lottery.masks import cubic_schedule

    assert [cubic_schedule(0.2, 2, 6, t) for t in (0, 1, 2, 6, 9)] == [1, 1, 1, 0.2, 0.2]
    assert cubic_schedule(0.2, 2, 6, 4) == pytest.approx(1 - 0.8 * (1 - 0.5 ** 3))  # sparsity S (1 - (1 - p)^3)
    assert cubic_schedule(0.5, 3, 3, 3) == 0.5  # start == end: at once


def test_exact_scheduled_count_at_every_update_and_pruned_stay_zero():
    from one_layer_lottery.masks import n_pruned

    torch.manual_seed(0)
    model, pruner = build_dense("--remaining-ratio", "0.2", "--prune-start-update", "2", "--prune-end-update", "6",
                                "--share-decoder-input-output-embed")
    names = [n for n, _ in pruner._targets]
    # every weight matrix and token table once: the tied decoder table is one tensor
    assert "decoder.embed_tokens.weight" in names and "decoder.output_projection.weight" not in names
    assert not any("layer_norm" in n or n.endswith(".bias") for n in names)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    src = torch.randint(4, 40, (3, 7))
    prev = torch.randint(4, 30, (3, 5))

    def check(t):
        out = {}
        for n in names:
            pruned = ~pruner._keep[n] if n in pruner._keep else torch.zeros_like(params[n], dtype=torch.bool)
            assert int(pruned.sum()) == n_pruned(params[n].numel(), pruner.scheduled(t)), (t, n)
            assert bool(params[n][pruned].eq(0).all()), (t, n)
            out[n] = pruned.clone()
        return out

    before = None
    for t in range(9):
        model.set_num_updates(t)  # what fairseq's train_step does before every forward
        now = check(t)
        if before is not None:
            assert all(bool((before[n] & ~now[n]).sum() == 0) for n in names), "a pruned weight came back"
        before = now
        out, _ = model(src, torch.full((3,), 7), prev)
        out.logsumexp(-1).mean().backward()
        assert all(bool(params[n].grad[now[n]].eq(0).all()) for n in names)  # no gradient to pruned weights
        opt.step()
        opt.zero_grad()
        check(t + 1)  # after the step the weights already hold the next update's mask: saved checkpoints are exact
    assert pruner.scheduled(8) == 0.2


def test_global_scope_prunes_the_exact_total_and_layers_differ():
    from one_layer_lottery.masks import n_pruned

    torch.manual_seed(0)
    model, pruner = build_dense("--remaining-ratio", "0.3", "--prune-scope", "global")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = None
    for t in range(3):
        model.set_num_updates(t)
        pruned = {n: ~pruner._keep[n] for n, _ in pruner._targets}
        total = sum(p.numel() for _, p in pruner._targets)
        assert sum(int(v.sum()) for v in pruned.values()) == n_pruned(total, 0.3)
        fractions = {round(float(v.float().mean()), 3) for v in pruned.values()}
        assert len(fractions) > 3  # each tensor finds its own sparsity
        if before is not None:
            assert all(bool((before[n] & ~pruned[n]).sum() == 0) for n in pruned)
        before = pruned
        out, _ = model(torch.randint(4, 40, (3, 7)), torch.full((3,), 7), torch.randint(4, 30, (3, 5)))
        out.logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()


def test_bad_pruning_options_are_one_line_errors():
    from one_layer_lottery.errors import ConfigError

    for extra, msg in ((["--remaining-ratio", "0"], "outside (0, 1]"), (["--remaining-ratio", "1.1"], "outside (0, 1]"),
                       (["--remaining-ratio", "0.5", "--prune-start-update", "5", "--prune-end-update", "3"],
                        "precedes"),
                       (["--prune-end-update", "3"], "needs --remaining-ratio"),
                       (["--prune-scope", "global"], "needs --remaining-ratio"),
                       (["--save-weights-at-updates", "0,x"], "non-negative update counts")):
        with pytest.raises(ConfigError, match=re.escape(msg)):
            build_dense(*extra)


def test_ticket_rewinds_exactly_under_the_final_mask():
    from one_layer_lottery.masks import n_pruned
    from one_layer_lottery.pruning import make_ticket

    g = torch.Generator().manual_seed(0)
    final = {"a.weight": torch.randn(8, 16, generator=g), "a.bias": torch.randn(8, generator=g)}
    rewind = {k: torch.randn(v.shape, generator=g) for k, v in final.items()}
    out, _ = make_ticket(final, rewind, ["a.weight"], 0.25)
    keep = out["a.weight"].ne(0)
    assert int((~keep).sum()) == n_pruned(128, 0.25)
    order = final["a.weight"].abs().flatten().argsort(descending=True)
    assert torch.equal(keep.flatten()[order[:32]], torch.ones(32, dtype=torch.bool))  # the 32 largest final |W|
    assert torch.equal(out["a.weight"][keep], rewind["a.weight"][keep])  # rewind values, exactly
    assert torch.equal(out["a.bias"], rewind["a.bias"])  # everything else rewinds whole
    signed, mags = make_ticket(final, rewind, ["a.weight"], 0.25, sign_only=True)
    c = mags["a.weight"]
    assert c == pytest.approx(float(rewind["a.weight"].std()))
    assert torch.equal(signed["a.weight"].ne(0), keep)
    kept = signed["a.weight"][keep]
    assert torch.equal(kept.abs(), torch.full_like(kept, c))
    assert torch.equal(kept.sign(), rewind["a.weight"][keep].sign())


TIED = ["--share-decoder-input-output-embed"]  # the study's dense models tie their output projection


@pytest.fixture(scope="module")
def pruned_run(tiny_corpus, tmp_path_factory):
    save = tmp_path_factory.mktemp("pruned")
    run_cli("fairseq-train", tiny_corpus.bin, *DENSE, *TRAIN, "--max-update", "6", "--seed", "2",
            "--remaining-ratio", "0.25", "--prune-start-update", "1", "--prune-end-update", "4",
            "--save-weights-at-updates", "0,3,6", *TIED, "--save-dir", save)
    return save


@pytest.mark.e2e
def test_fairseq_train_prunes_saves_rewind_points_resumes_and_generates(tiny_corpus, pruned_run):
    from one_layer_lottery.masks import n_pruned
    from one_layer_lottery.pruning import is_prunable

    sd = torch.load(pruned_run / "checkpoint_last.pt", weights_only=True)["model"]
    names = [k for k, v in sd.items() if is_prunable(k, v)]
    assert len(names) >= 10
    for n in names:
        assert int(sd[n].eq(0).sum()) == n_pruned(sd[n].numel(), 0.25), n
    w0 = torch.load(pruned_run / "weights_update0.pt", weights_only=True)
    w3 = torch.load(pruned_run / "weights_update3.pt", weights_only=True)
    assert (w0["num_updates"], w3["num_updates"]) == (0, 3) and set(w0["model"]) == set(sd)
    assert not any(bool(w0["model"][n].eq(0).all()) for n in names)
    w6 = torch.load(pruned_run / "weights_update6.pt", weights_only=True)  # the run's last update: saved too
    assert w6["num_updates"] == 6 and all(torch.equal(w6["model"][n], sd[n].float()) for n in names)
    table, out = (w0["model"][f"decoder.{n}.weight"] for n in ("embed_tokens", "output_projection"))
    assert table.data_ptr() == out.data_ptr()  # the tied output projection: stored once, as in the checkpoint
    # resume: 2 more updates; what was pruned stays zero and the count stays exact
    run_cli("fairseq-train", tiny_corpus.bin, *DENSE, *TRAIN, "--max-update", "8", "--seed", "2",
            "--remaining-ratio", "0.25", "--prune-start-update", "1", "--prune-end-update", "4", *TIED,
            "--save-dir", pruned_run)
    sd2 = torch.load(pruned_run / "checkpoint_last.pt", weights_only=True)["model"]
    for n in names:
        assert bool(sd2[n][sd[n].eq(0)].eq(0).all()), n
        assert int(sd2[n].eq(0).sum()) == n_pruned(sd[n].numel(), 0.25), n
    assert any(not torch.equal(sd[n], sd2[n]) for n in names)  # it did train
    hyps = hypotheses(tiny_corpus.bin, pruned_run / "checkpoint_last.pt")
    assert len(hyps) == 37


@pytest.mark.e2e
def test_a_run_resumed_inside_its_ramp_keeps_what_it_pruned_and_ends_exact(tiny_corpus, tmp_path):
    """The study's magnitude-pruning runs save at epochs' ends inside their ramp: a launch that resumes there
    rebuilds the masks from the weights (what was pruned is zero, so it ranks below every kept weight)."""
    from one_layer_lottery.masks import cubic_schedule, n_pruned
    from one_layer_lottery.pruning import is_prunable

    ramp = ["--remaining-ratio", "0.25", "--prune-start-update", "1", "--prune-end-update", "6", "--seed", "2"]
    run_cli("fairseq-train", tiny_corpus.bin, *DENSE, *TRAIN, "--max-update", "3", *ramp, *TIED, "--save-dir",
            tmp_path)
    mid = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["model"]
    names = [k for k, v in mid.items() if is_prunable(k, v)]
    k3 = cubic_schedule(0.25, 1, 6, 3)
    assert 0.25 < k3 < 1 and all(int(mid[n].eq(0).sum()) == n_pruned(mid[n].numel(), k3) for n in names)
    run_cli("fairseq-train", tiny_corpus.bin, *DENSE, *TRAIN, "--max-update", "8", *ramp, *TIED, "--save-dir",
            tmp_path)
    end = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["model"]
    for n in names:
        assert bool(end[n][mid[n].eq(0)].eq(0).all()), n  # pruned before the resume: pruned still
        assert int(end[n].eq(0).sum()) == n_pruned(end[n].numel(), 0.25), n


@pytest.mark.e2e
def test_lottery_ticket_retrains_with_its_mask_fixed(tiny_corpus, pruned_run, tmp_path):
    from one_layer_lottery.masks import n_pruned
    from one_layer_lottery.pruning import is_prunable

    # the mask of the final (25 % kept) weights at 20 % kept, over the initialisation
    r = olt("ticket", pruned_run, tmp_path / "ticket.pt", "--remaining-ratio", "0.2", "--rewind-update", "0", "--json")
    info = json.loads(r.stdout)
    final = torch.load(pruned_run / "checkpoint_last.pt", weights_only=True)["model"]
    tensors = {t.data_ptr(): t for k, t in final.items() if is_prunable(k, t)}  # the tied table counted once
    assert info["rewind_update"] == 0 and info["kept"] == info["total"] - sum(
        n_pruned(t.numel(), 0.2) for t in tensors.values())
    ticket = torch.load(tmp_path / "ticket.pt", weights_only=True)["model"]
    save = tmp_path / "retrain"
    run_cli("fairseq-train", tiny_corpus.bin, *DENSE, *TRAIN, "--max-update", "3", "--seed", "2",
            "--restore-file", tmp_path / "ticket.pt", "--reset-optimizer", "--reset-lr-scheduler",
            "--reset-dataloader", "--reset-meters", "--remaining-ratio", "0.2", *TIED, "--save-dir", save)
    out = torch.load(save / "checkpoint_last.pt", weights_only=True)["model"]
    names = [k for k, v in out.items() if is_prunable(k, v)]
    for n in names:
        assert torch.equal(out[n].eq(0), ticket[n].eq(0)), n  # the ticket's mask, unchanged
    assert any(not torch.equal(out[n], ticket[n]) for n in names)
    # a rewind point that was not saved: one line, exit 1, nothing written
    r = olt("ticket", pruned_run, tmp_path / "t2.pt", "--remaining-ratio", "0.5", "--rewind-update", "2", check=False)
    assert r.returncode == 1 and "rewind update 2 was not saved" in r.stderr and "saved: 0, 3" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "t2.pt").exists()
    r = olt("ticket", pruned_run, tmp_path / "t3.pt", "--remaining-ratio", "1.5", check=False)
    assert r.returncode == 1 and "outside (0, 1]" in r.stderr


@pytest.mark.e2e
def test_fairseq_train_refuses_bad_sparsity_in_one_line(tiny_corpus, tmp_path):
    r = run_cli("fairseq-train", tiny_corpus.bin, *DENSE, *TRAIN, "--max-update", "1", "--remaining-ratio", "1.5",
                "--save-dir", tmp_path, check=False)
    assert r.returncode == 1 and "--remaining-ratio: remaining ratio 1.5 is outside (0, 1]" in r.stderr
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.e2e
def test_analyze_compares_layers_with_the_reference(tiny_corpus, pruned_run, trained, tmp_path):
    ref = pruned_run / "checkpoint_last.pt"
    r = olt("analyze", ref, ref, trained, "--data", tiny_corpus.bin, "--labels",
        "itself,supermask", "--sentences", "30", "--json", "--png", tmp_path / "a.png")
    out = json.loads(r.stdout)
    itself, sm = out["models"]["itself"], out["models"]["supermask"]
    assert out["sentences"] >= 30
    assert set(itself["cka_by_layer"]) == {"encoder.0", "encoder.1", "decoder.0", "decoder.1"}
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in itself["cka_by_layer"].values())
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in itself["attention_agreement"].values())
    assert len(itself["attention_agreement"]) == 6  # encoder self, decoder self and cross, 2 layers each
    assert itself["kept_total"] == pytest.approx(0.25, abs=0.01)
    assert itself["kept_by_module"]["encoder.layers.0.fc1"] == 0.25
    assert all(v == 0.5 for v in sm["kept_by_layer"].values())  # every supermask tensor keeps exactly k
    assert all(v < 0.999 for v in sm["cka_by_layer"].values())
    assert all(0 < v < 0.999 for v in sm["attention_agreement"].values())
    assert (tmp_path / "a.png").stat().st_size > 10_000
    r = olt("analyze", ref, tmp_path / "missing.pt", "--data", tiny_corpus.bin, check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
