import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import MASKED, ROOT, SM, TRAIN, build_model, hypotheses, make_dictionary, olt, run_card, run_cli

from one_layer_lottery import artifact
from one_layer_lottery.errors import ConfigError

PUBLISHED = os.path.join(ROOT, "models", "multi30k-de-en")  # the converged study's models (benchmarks/study.py)


def _fails_one_line(r, out, *needles):
    assert r.returncode == 1, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for n in needles:
        assert n in err[0], err[0]
    assert not os.path.exists(out)


@pytest.mark.e2e
def test_round_trip_is_byte_identical(trained, tiny_corpus, tmp_path):
    art, back = tmp_path / "model.olt", tmp_path / "expanded.pt"
    r = run_cli("one-layer-lottery", "export", trained, art, "--json")
    rep = json.loads(r.stdout.splitlines()[-1])
    assert rep["bytes"] == art.stat().st_size and rep["ratio_to_dense"] < 0.1
    assert rep["floor"] <= rep["bytes"]
    run_cli("one-layer-lottery", "expand", art, back, "--data", tiny_corpus.bin)
    # masks identical, frozen weights regenerated identical
    a = torch.load(trained, map_location="cpu", weights_only=True)["model"]
    b = torch.load(back, map_location="cpu", weights_only=True)["model"]
    assert set(a) == set(b)
    from one_layer_lottery.masks import topk_mask

    for k in a:
        if k.endswith(".scores"):
            assert torch.equal(topk_mask(a[k], 0.5), topk_mask(b[k], 0.5)), k
        else:
            assert torch.equal(a[k], b[k]), k
    assert hypotheses(tiny_corpus.bin, trained) == hypotheses(tiny_corpus.bin, back)
    # no pickle: the file is safetensors (8-byte header length, then JSON)
    raw = art.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    json.loads(raw[8:8 + n])


@pytest.mark.e2e
def test_artifact_translates_plain_text_as_fairseq_generate_does(trained, tiny_corpus, tmp_path):
    """The artifact carries its sentencepiece models: plain text in and out, the same as fairseq-generate on the
    expanded checkpoint; `translate` refuses a missing or corrupt artifact in one line."""
    art = tmp_path / "m.olt"
    artifact.export(str(trained), str(art))
    model, _, _, meta = artifact.load_model(str(art))
    assert not model.training and meta["format_version"] == 4 and "coats" not in meta
    assert len(meta["vocabulary"]["sentencepiece"]) == 2 and artifact.carries_sentencepiece(meta)
    sources = (tiny_corpus.root / "prep" / "raw" / "test.src").read_text(encoding="utf-8").splitlines()
    hub = artifact.hub(str(art), beam=5, max_len_a=1.2, max_len_b=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = [hub.translate(s) for s in sources]
    assert not [w for w in caught if "pin_memory" in str(w.message)]  # a translation prints nothing but itself
    olt("expand", art, tmp_path / "back.pt")
    r = run_cli("fairseq-generate", tiny_corpus.bin, "--user-dir", "one_layer_lottery", "--path", tmp_path / "back.pt",
                "--beam", "5", "--max-len-a", "1.2", "--max-len-b", "10", "--batch-size", "1",
                "--required-batch-size-multiple", "1", "--remove-bpe", "sentencepiece")
    from one_layer_lottery.data import read_hypotheses

    assert ours == read_hypotheses(r.stdout)
    cli = run_cli("one-layer-lottery", "translate", art, sources[0], sources[1])
    assert cli.stdout.splitlines() == ours[:2]
    (tmp_path / "broken.olt").write_bytes(art.read_bytes()[:1000])
    for bad, needle in ((tmp_path / "missing.olt", "does not exist"),
                        (tmp_path / "broken.olt", "is truncated, corrupt or not an artifact")):
        r = run_cli("one-layer-lottery", "translate", bad, "x", check=False)
        assert r.returncode == 1 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _as_format_2(path, out):
    """Rewrite a format-4 artifact in format 2's layout: the dictionaries as JSON metadata, the sentencepiece models
    alone in their xz stream (what the study's ledger and the published models held before 2026-12-06)."""
    import lzma

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["one_layer_lottery"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open, not a dict)
    parts = artifact._vocabulary(meta, tensors)
    vocab, meta["format_version"] = meta.pop("vocabulary"), 2
    del tensors["vocabulary"]
    meta["dicts"] = {"src": parts[0].decode(), "tgt": parts[1].decode()}
    if parts[2:]:
        tensors["sentencepiece"] = torch.frombuffer(bytearray(lzma.compress(b"".join(parts[2:]))), dtype=torch.uint8)
        meta["sentencepiece"] = vocab["sentencepiece"]
    save_file(tensors, out, metadata={"one_layer_lottery": json.dumps(meta)})


@pytest.mark.e2e
def test_earlier_formats_translate_and_upgrade_to_the_same_file(good_artifact, tiny_corpus, tmp_path):
    """Format 2 (dictionaries as JSON metadata) still loads and translates plain text as format 4 does, and
    `upgrade` rewrites it as export wrote it, byte for byte and smaller; a vocabulary that does not unpack is refused
    in one line."""
    old, new = tmp_path / "old.olt", tmp_path / "new.olt"
    _as_format_2(good_artifact, old)
    assert artifact.read(str(old))[0]["format_version"] == 2
    sources = (tiny_corpus.root / "prep" / "raw" / "test.src").read_text(encoding="utf-8").splitlines()[:4]
    hubs = [artifact.hub(str(p), beam=5) for p in (good_artifact, old)]
    assert [hubs[0].translate(x) for x in sources] == [hubs[1].translate(x) for x in sources]
    r = olt("upgrade", old, new)
    assert f"{good_artifact.stat().st_size:,} bytes (was {old.stat().st_size:,})" in r.stdout
    assert new.read_bytes() == good_artifact.read_bytes() and new.stat().st_size < old.stat().st_size
    with open(good_artifact, "rb") as f:  # the vocabulary's stream, garbled in place
        raw = bytearray(f.read())
    from safetensors import safe_open

    with safe_open(good_artifact, framework="pt") as f:
        blob = f.get_tensor("vocabulary").numpy().tobytes()
    at = bytes(raw).index(blob)
    raw[at + 100:at + 200] = bytes(100)
    (tmp_path / "garbled.olt").write_bytes(raw)
    out = tmp_path / "out.pt"
    _fails_one_line(olt("expand", tmp_path / "garbled.olt", out, check=False), out, "vocabulary does not unpack")
    _fails_one_line(olt("upgrade", tmp_path / "missing.olt", out, check=False), out, "does not exist")


@pytest.mark.e2e
def test_pretrained_embeddings_stored_fp16_or_fp32(tiny_corpus, dense_ckpt, tmp_path):
    save = tmp_path / "sm"
    run_cli("fairseq-train", tiny_corpus.bin, *SM, *TRAIN, "--max-update", "2", "--save-dir", save,
            "--pretrained-embeddings", dense_ckpt)
    ckpt = save / "checkpoint_last.pt"
    sizes = {}
    for dtype in ("float16", "float32"):
        art = tmp_path / f"{dtype}.olt"
        sizes[dtype] = artifact.export(str(ckpt), str(art), embeddings_dtype=dtype)["bytes"]
        _, tensors = artifact.read(str(art))
        assert tensors["tensor:encoder.embed_tokens.weight"].dtype == getattr(torch, dtype)
    emb = torch.load(dense_ckpt, weights_only=True)["model"]["encoder.embed_tokens.weight"].numel()
    assert sizes["float32"] - sizes["float16"] >= 2 * emb
    back = tmp_path / "back.pt"
    artifact.expand(str(tmp_path / "float32.olt"), str(back))
    assert hypotheses(tiny_corpus.bin, ckpt) == hypotheses(tiny_corpus.bin, back)


@pytest.mark.e2e
def test_masked_pretrained_embeddings(tiny_corpus, dense_ckpt, tmp_path):
    """The authors' mode: the pre-trained tables masked like every other weight, scaled by sqrt(1/k)."""
    save = tmp_path / "sm"
    run_cli("fairseq-train", tiny_corpus.bin, *SM, *MASKED, "--max-update", "3", "--save-dir", save,
            "--pretrained-embeddings", dense_ckpt, "--pretrained-embeddings-mode", "masked")
    ckpt = save / "checkpoint_last.pt"
    sd = torch.load(ckpt, weights_only=True)["model"]
    dense = torch.load(dense_ckpt, weights_only=True)["model"]
    for side in ("encoder", "decoder"):  # frozen through training, the dense table times sqrt(1/0.5)
        assert torch.equal(sd[f"{side}.embed_tokens.stored_weight"], dense[f"{side}.embed_tokens.weight"] * 2 ** 0.5)
        assert f"{side}.embed_tokens.scores" in sd
    art, back = tmp_path / "m.olt", tmp_path / "back.pt"
    artifact.export(str(ckpt), str(art), embeddings_dtype="float32")
    _, tensors = artifact.read(str(art))
    assert torch.equal(tensors["tensor:encoder.embed_tokens.stored_weight"], sd["encoder.embed_tokens.stored_weight"])
    artifact.expand(str(art), str(back))
    assert hypotheses(tiny_corpus.bin, ckpt) == hypotheses(tiny_corpus.bin, back)


@pytest.mark.e2e
def test_learned_output_scale_is_trained_and_stored(tiny_corpus, tmp_path):
    save = tmp_path / "sm"
    run_cli("fairseq-train", tiny_corpus.bin, *SM, *TRAIN, "--max-update", "3", "--save-dir", save,
            "--learned-output-scale")
    ckpt = save / "checkpoint_last.pt"
    scale = torch.load(ckpt, weights_only=True)["model"]["decoder.output_scale"]
    assert scale.numel() == 1 and scale.item() != 1.0  # it learned
    art, back = tmp_path / "m.olt", tmp_path / "back.pt"
    artifact.export(str(ckpt), str(art))
    _, tensors = artifact.read(str(art))
    assert torch.equal(tensors["tensor:decoder.output_scale"], scale)
    artifact.expand(str(art), str(back))
    assert hypotheses(tiny_corpus.bin, ckpt) == hypotheses(tiny_corpus.bin, back)
    r = run_cli("fairseq-train", tiny_corpus.bin, *SM, *MASKED, "--max-update", "1", "--save-dir", tmp_path / "m",
                "--learned-output-scale", check=False)
    assert r.returncode != 0 and "non-score tensors require grad (first: decoder.output_scale)" in r.stderr


def test_size_within_two_percent_of_floor(tmp_path):
    model = build_model("one_layer_supermask_transformer_iwslt_de_en", src_words=8844, tgt_words=6628).eval()
    cfg = {"model": {"_name": "one_layer_supermask_transformer_iwslt_de_en", "remaining_ratio": 0.5}}
    r = artifact.export_model(model, cfg, make_dictionary(8844), make_dictionary(6628), str(tmp_path / "a.olt"))
    assert r["floor"] <= r["bytes"] <= 1.02 * r["floor"]
    assert r["mask_bits"] == sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def good_artifact(trained, tmp_path_factory):
    art = tmp_path_factory.mktemp("art") / "good.olt"
    artifact.export(str(trained), str(art))
    return art


@pytest.mark.e2e
def test_bad_artifacts(good_artifact, tmp_path, tiny_corpus):
    raw = good_artifact.read_bytes()
    truncated = tmp_path / "truncated.olt"
    truncated.write_bytes(raw[: len(raw) // 2])
    corrupt = tmp_path / "corrupt.olt"
    corrupt.write_bytes(raw[:8] + b"\x00garbage" + raw[16:])
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8:8 + n].decode().replace('\\"format_version\\": 4', '\\"format_version\\": 99')
    assert '99' in header
    future = tmp_path / "future.olt"
    future.write_bytes(struct.pack("<Q", len(header.encode())) + header.encode() + raw[8 + n:])
    cases = [(truncated, "truncated, corrupt"), (corrupt, "truncated, corrupt"),
             (future, "format version 99"), (tmp_path / "missing.olt", "does not exist")]
    for path, needle in cases:
        out = tmp_path / "out.pt"
        _fails_one_line(olt("expand", path, out, check=False), out, needle)
    other = tmp_path / "otherbin"
    shutil.copytree(tiny_corpus.bin, other)
    with open(other / "dict.tgt.txt", "a", encoding="utf-8") as f:
        f.write("extra 1\n")
    out = tmp_path / "out.pt"
    _fails_one_line(olt("expand", good_artifact, out, "--data", other, check=False), out,
                    "differs from the artifact's tgt dictionary")


@pytest.mark.e2e
def test_export_refuses_non_supermask_and_broken_checkpoints(dense_ckpt, tmp_path):
    out = tmp_path / "x.olt"
    _fails_one_line(olt("export", dense_ckpt, out, check=False), out, "is not a supermask model", "'transformer'")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(dense_ckpt.read_bytes()[:1000])
    _fails_one_line(olt("export", broken, out, check=False), out, "is not a readable fairseq checkpoint")


@pytest.mark.e2e
def test_inspect_checkpoint_and_artifact_agree(trained, good_artifact, tmp_path):
    png = tmp_path / "overlap.png"
    a = json.loads(olt("inspect", trained, "--json").stdout)
    b = json.loads(olt("inspect", good_artifact, "--json", "--png", png).stdout)
    assert a["modules"] == b["modules"] and a["overlap"] == b["overlap"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    t = b["totals"]
    assert t["artifact_bytes"] == good_artifact.stat().st_size
    assert t["scores_trainable"] == t["mask_bits"] > t["unique_random_weights"]
    # one-layer tiny: 2 depths; each depth's mask of a module type is itself (1.0) and differs from the other
    enc = b["overlap"]["encoder.fc1"]
    assert enc[0][0] == 1.0 and 0.2 < enc[0][1] < 0.6
    e = b["mask_entropy"]  # every tiny mask is a bit a weight; rows of 32-64 weights vary a little around 0.5
    assert e == a["mask_entropy"] and e["weights"] == t["mask_bits"] and 0.8 < e["row_bits"] / e["weights"] < 1
    text = olt("inspect", good_artifact).stdout
    assert "Table-1 row" in text and "encoder.layers.1.fc1" in text and "mask entropy" in text


def test_row_entropy_bounds_what_coding_the_masks_could_save():
    from one_layer_lottery.report import row_entropy_bits

    rows = torch.zeros(8, 100, dtype=torch.bool)
    rows[:4] = True  # whole rows kept or dropped: nothing left to code once the rows' fractions are known
    assert row_entropy_bits({"a": rows.numpy()}) == 0
    tenth = torch.zeros(8, 100, dtype=torch.bool)
    tenth[:, ::10] = True
    half = torch.zeros(6, 4, 3, dtype=torch.bool)  # a convolution-shaped mask: rows of 12
    half.view(6, -1)[:, :6] = True
    flat = torch.tensor([True, False, True, False])  # a vector is one row
    h = -(0.1 * math.log2(0.1) + 0.9 * math.log2(0.9))
    got = row_entropy_bits({"t": tenth.numpy(), "h": half.numpy(), "f": flat.numpy()})
    assert got == pytest.approx(800 * h + 72 + 4)


def test_shared_embedding_table_stored_once(tmp_path):
    flags = ["--share-all-embeddings", "--pretrained-embeddings", "dense.pt"]
    model = build_model("one_layer_supermask_transformer_tiny", *flags, src_words=40, tgt_words=40,
                        _pretrained_embeddings_in_checkpoint=True).eval()
    torch.nn.init.normal_(model.encoder.embed_tokens.weight)
    assert model.encoder.embed_tokens is model.decoder.embed_tokens
    cfg = {"model": {"_name": "one_layer_supermask_transformer_tiny", "remaining_ratio": 0.5,
                     "share_all_embeddings": True, "pretrained_embeddings": "dense.pt",
                     "_pretrained_embeddings_in_checkpoint": True, "weight_seed": model.args.weight_seed,
                     "init_preset": "tuned"}}
    d = make_dictionary(40)
    artifact.export_model(model, cfg, d, d, str(tmp_path / "a.olt"), embeddings_dtype="float32")
    _, tensors = artifact.read(str(tmp_path / "a.olt"))
    assert [k for k in tensors if "embed_tokens" in k] == ["tensor:encoder.embed_tokens.weight"]
    back, _, _, _ = artifact.load_model(str(tmp_path / "a.olt"))
    for k, v in model.state_dict().items():
        if not k.endswith(".scores"):
            assert torch.equal(back.state_dict()[k], v), k


@pytest.mark.e2e
def test_example_translates_from_an_artifact(trained, tiny_corpus):
    r = subprocess.run([sys.executable, "examples/translate_from_artifact.py", str(trained),
                        os.path.join(tiny_corpus.root, "prep"), "2"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("hypothesis:") == 2 and "-> artifact" in r.stdout


@pytest.mark.e2e
def test_multicoated_annealed_round_trip(tiny_corpus, tmp_path):
    """Multicoated masks trained with k annealed: the log shows k, the artifact stores every coat exactly."""
    save = tmp_path / "sm"
    r = run_cli("fairseq-train", tiny_corpus.bin, *SM, *MASKED, "--max-update", "6", "--save-dir", save,
                "--multicoat-ratios", "0.25,0.1", "--ratio-anneal-updates", "4", "--log-interval", "1")
    inner = "\n".join(line for line in (r.stdout + r.stderr).splitlines() if "train_inner" in line)
    ks = [float(x) for x in re.findall(r"remaining_ratio=([\d.]+)", inner)]
    assert ks[:2] == [1.0, pytest.approx(0.5 + 0.5 * 0.75 ** 3, abs=1e-4)] and ks[-1] == 0.5, ks
    ckpt = save / "checkpoint_last.pt"
    art, back = tmp_path / "m.olt", tmp_path / "back.pt"
    rep = artifact.export(str(ckpt), str(art))
    meta, tensors = artifact.read(str(art))
    assert meta["format_version"] == 5 and set(meta["coats"].values()) == {2}
    # each inner coat stored only inside the coat around it: a bit a weight, then one per entry kept at 0.5 and 0.25
    numel = {name: math.prod(s) for name, s in meta["masks"].items()}
    assert meta["nested_coats"] and rep["mask_bits"] == sum(3 * n - int(0.5 * n) - int(0.75 * n) for n in numel.values())
    assert {k: t.numel() for k, t in tensors.items() if k.startswith("coat1:")} == \
        {f"coat1:{name}": math.ceil((n - int(0.5 * n)) / 8) for name, n in numel.items()}
    for path in (art, ckpt):  # inspect counts the bits the artifact stores: every coat's plane, from either file
        assert json.loads(olt("inspect", path, "--json").stdout)["totals"]["mask_bits"] == rep["mask_bits"], path
    sd = torch.load(ckpt, weights_only=True)["model"]
    from one_layer_lottery.masks import topk_mask

    model, _, _, _ = artifact.load_model(str(art))
    for name, m in model.named_modules():
        if hasattr(m, "coat_masks"):
            for k, plane in zip((0.5, 0.25, 0.1), [m.mask(), *m.coat_masks()]):
                assert torch.equal(plane, topk_mask(sd[f"{name}.scores"], k)), name
    artifact.expand(str(art), str(back))
    assert hypotheses(tiny_corpus.bin, ckpt) == hypotheses(tiny_corpus.bin, back)
    from safetensors.torch import save_file

    from one_layer_lottery.masks import pack_bits, unpack_levels

    # format 4 (every coat a full plane, as the study's ledger held until 2026-12-06) reads to the same model, and
    # `upgrade` rewrites it as export writes it now, byte for byte
    old, new, full = tmp_path / "old.olt", tmp_path / "new.olt", dict(tensors)
    for name, n in numel.items():
        levels = torch.from_numpy(unpack_levels(meta, tensors, name, n))
        for i in (1, 2):
            full[f"coat{i}:{name}"] = pack_bits(levels > i)
    save_file(full, str(old), metadata={"one_layer_lottery": json.dumps(
        {**{k: v for k, v in meta.items() if k not in ("nested_coats", "dicts")}, "format_version": 4})})
    assert old.stat().st_size > art.stat().st_size
    assert torch.equal(*(torch.cat([v.flatten() for k, v in artifact.load_model(str(p))[0].state_dict().items()
                                    if k.endswith(".scores")]) for p in (art, old)))
    assert "format 5" in olt("upgrade", old, new).stdout and new.read_bytes() == art.read_bytes()
    # a nested coat cut short, or one missing from the file, is corruption, in one line
    bad = tmp_path / "bad.olt"
    short = {k: v[:-1] if k.startswith("coat1:") else v for k, v in tensors.items()}
    save_file(short, str(bad), metadata={"one_layer_lottery": json.dumps(meta)})
    with pytest.raises(ConfigError, match="coat1:.* has the wrong size"):
        artifact.read(str(bad))
    tensors.pop(next(k for k in tensors if k.startswith("coat2:")))
    save_file(tensors, str(bad), metadata={"one_layer_lottery": json.dumps(meta)})
    with pytest.raises(ConfigError, match="coat2:.* is missing"):
        artifact.read(str(bad))


@pytest.mark.e2e
def test_nm_mask_trained_packed_and_round_trip(tiny_corpus, tmp_path):
    """2:4 supermasks through fairseq's trainer; the artifact stores pattern indices (2/3 bit a weight)."""
    save = tmp_path / "sm"
    run_cli("fairseq-train", tiny_corpus.bin, *SM, *MASKED, "--max-update", "4", "--save-dir", save,
            "--mask-structure", "2:4")
    ckpt = save / "checkpoint_last.pt"
    sd = torch.load(ckpt, weights_only=True)["model"]
    from one_layer_lottery.masks import nm_mask

    for k, v in sd.items():
        if k.endswith(".scores"):
            assert bool((nm_mask(v, 2, 4).view(-1, 4).sum(1) == 2).all()), k
    art, back = tmp_path / "m.olt", tmp_path / "back.pt"
    rep = artifact.export(str(ckpt), str(art))
    meta, tensors = artifact.read(str(art))
    weights = sum(math.prod(s) for s in meta["masks"].values())
    assert meta["format_version"] == 4 and set(map(tuple, meta["nm"].values())) == {(2, 4)}
    assert not any(k.startswith("mask:") for k in tensors) and rep["mask_bits"] <= weights * 2 / 3 + 8 * len(meta["nm"])
    for path in (art, ckpt):
        assert json.loads(olt("inspect", path, "--json").stdout)["totals"]["mask_bits"] == rep["mask_bits"], path
    model, _, _, _ = artifact.load_model(str(art))
    for name, m in model.named_modules():
        if hasattr(m, "structure"):
            assert torch.equal(m.mask(), nm_mask(sd[f"{name}.scores"], 2, 4)), name
    artifact.expand(str(art), str(back))
    assert hypotheses(tiny_corpus.bin, ckpt) == hypotheses(tiny_corpus.bin, back)
    for path in (ckpt, art):  # inspect reads the structured masks from either file
        r = olt("inspect", path, "--json")
        rep = json.loads(r.stdout.strip().splitlines()[-1])
        assert {round(m["remaining_ratio"], 6) for m in rep["modules"]} == {0.5}
        # the pattern indices store under a bit a weight: the entropy line counts only masks stored a bit a weight
        assert rep["mask_entropy"] is None or rep["mask_entropy"]["weights"] < weights


@pytest.mark.e2e
@pytest.mark.parametrize("path", sorted(os.path.join(PUBLISHED, f) for f in os.listdir(PUBLISHED) if f.endswith(".olt")))
def test_published_models_translate_raw_german_and_their_card_matches_the_ledger(path):
    """Each committed artifact translates plain German to plain English as the README shows, and the folder's card
    gives it the test BLEU its run recorded in the study's ledger."""
    out = olt("translate", path, "Ein Hund läuft durch den Park.").stdout.strip()
    assert re.fullmatch(r"A dog \w+ through the park\.", out), out
    cells, ledger_bleu = _card_row(os.path.basename(path))
    assert float(cells[2]) == ledger_bleu
    assert int(cells[5].replace(",", "")) == os.path.getsize(path)


def _card_row(name: str) -> tuple[list[str], float]:
    """The published folder's card row of one file (its cells) and the test BLEU its run recorded in the study's
    ledger (the run's name leads the run cell, before any note)."""
    with open(os.path.join(PUBLISHED, "README.md"), encoding="utf-8") as f:
        row = next(line for line in f if line.startswith(f"| `{name}` |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    with open(os.path.join(ROOT, "benchmarks", "study_runs", "multi30k", cells[3].split()[0], "result.json"),
              encoding="utf-8") as f:
        return cells, json.load(f)["test_bleu"]


@pytest.mark.e2e
def test_the_published_dense_model_joins_from_its_parts_and_translates_with_the_cards_commands(tmp_path):
    """The committed dense model, in parts under the repository's file limit: the card's commands, run as written
    (on a copy of the folder), join them and translate with stock fairseq-interactive; its bytes and its test BLEU
    (or, where a run trained again stands in, the ledger's) are the card's."""
    parts = sorted((p for p in os.listdir(PUBLISHED) if re.fullmatch(r"dense_fp16\.pt\.\d+", p)),
                   key=lambda p: int(p.rsplit(".", 1)[1]))
    if not parts:
        pytest.skip("the dense model is not published yet (models/multi30k-de-en has no dense_fp16.pt.N)")
    assert all(os.path.getsize(os.path.join(PUBLISHED, p)) < 2 * 2**20 for p in parts)
    copy = tmp_path / "models"
    shutil.copytree(PUBLISHED, copy, ignore=shutil.ignore_patterns("dense_fp16.pt", "*.olt"))
    with open(os.path.join(PUBLISHED, "README.md"), encoding="utf-8") as f:
        r = run_card(f.read(), ("models/multi30k-de-en", str(copy)))
    assert f"dense_fp16.pt.{{0..{len(parts) - 1}}} >" in r.args[-1]
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"^D-0\t\S+\tA dog [\w ]+ through the park\.$", r.stdout, re.MULTILINE), r.stdout[-2000:]
    cells, ledger_bleu = _card_row("dense_fp16.pt")
    assert int(cells[5].replace(",", "")) == (copy / "dense_fp16.pt").stat().st_size
    stood_in = re.search(r"the ledger's test BLEU ([\d.]+)", cells[3])
    assert float(stood_in.group(1) if stood_in else cells[2]) == ledger_bleu
