import json
import logging
import os

import pytest
from conftest import olt, run_cli


def _write(d, name, lines):
    d.mkdir(exist_ok=True)
    (d / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _corpus(tmp_path, train_src, train_tgt):
    raw = tmp_path / "raw"
    _write(raw, "train.de", train_src)
    _write(raw, "train.en", train_tgt)
    for split in ("valid", "test"):
        _write(raw, f"{split}.de", ["ein hund läuft", "die katze schläft"])
        _write(raw, f"{split}.en", ["a dog runs", "the cat sleeps"])
    return raw


@pytest.mark.e2e
def test_prepare_drops_empty_and_overlong_pairs(tmp_path):
    src = [f"der hund {i} läuft schnell" for i in range(200)] + ["", "wort " * 40, "noch ein satz"]
    tgt = [f"the dog {i} runs fast" for i in range(200)] + ["an empty source", "word", ""]
    raw = _corpus(tmp_path, src, tgt)
    r = run_cli("one-layer-lottery", "prepare", raw, tmp_path / "out", "--src", "de", "--tgt", "en",
                "--vocab-size", "100", "--max-words", "30")
    assert "train 200 pairs (3 dropped: empty or > 30 words)" in r.stdout
    kept = (tmp_path / "out" / "raw" / "train.de").read_text(encoding="utf-8").splitlines()
    assert len(kept) == 200 and "" not in kept
    assert (tmp_path / "out" / "bin" / "train.de-en.de.bin").exists()


def test_prepare_bad_inputs_fail_in_one_line_and_write_nothing(tmp_path):
    r = olt("prepare", tmp_path / "nope", tmp_path / "out", "--src", "de", "--tgt", "en", check=False)
    assert r.returncode == 1 and r.stderr.strip().endswith(f"data directory '{tmp_path / 'nope'}' does not exist")
    raw = _corpus(tmp_path, ["a b", "c d", "e f"], ["a b", "c d"])
    r = olt("prepare", raw, tmp_path / "out", "--src", "de", "--tgt", "en", check=False)
    assert r.returncode == 1 and "has 3 lines but" in r.stderr and "must match line for line" in r.stderr
    _write(raw, "train.en", ["a b", "c d", "e f"])
    os.remove(raw / "valid.en")
    r = olt("prepare", raw, tmp_path / "out", "--src", "de", "--tgt", "en", check=False)
    assert r.returncode == 1 and "no valid file for language 'en'" in r.stderr
    assert not (tmp_path / "out").exists()
    r = olt("export", tmp_path / "missing.pt", tmp_path / "x.olt", check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr and not (tmp_path / "x.olt").exists()


def test_preprocess_runs_in_process_quietly_and_fails_in_one_line(tmp_path, capsys):
    """fairseq-preprocess's main in this process: its binaries and its own log file, nothing on our stdout or
    logging; a failure is one ConfigError line."""
    from one_layer_lottery.data import run_preprocess
    from one_layer_lottery.errors import ConfigError

    _write(tmp_path, "train.x", ["a b c", "b c d"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    run_preprocess(["--only-source", "--trainpref", str(tmp_path / "train.x"), "--destdir", str(tmp_path / "bin"),
                    "--workers", "1"])
    assert (tmp_path / "bin" / "train.bin").exists() and (tmp_path / "bin" / "dict.txt").exists()
    assert "Wrote preprocessed data" in (tmp_path / "bin" / "preprocess.log").read_text()
    assert capsys.readouterr().out == "" and root.handlers == handlers and root.level == level
    assert logging.getLogger("fairseq_cli.preprocess").handlers == []
    with pytest.raises(ConfigError, match="fairseq-preprocess failed: FileNotFoundError") as e:
        run_preprocess(["--only-source", "--trainpref", str(tmp_path / "missing"), "--destdir",
                        str(tmp_path / "bin2"), "--workers", "1"])
    assert "\n" not in str(e.value)


def test_bleu_of_text_tokenized_on_purpose(tmp_path, caplog):
    """`bleu --tokenized` (the demo's embedded corpus writes " ." as a word): the same score, without sacreBLEU's
    warning that the text looks tokenized, which it gives from 100 such lines."""
    refs = [f"the dog {i} runs ." for i in range(120)]
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    gen = "".join(f"D-{i}\t-0.5\t{r if i % 3 else 'a cat sleeps .'}\n" for i, r in enumerate(refs))
    (tmp_path / "gen.txt").write_text(gen, encoding="utf-8")
    scores = {}
    for flags in ((), ("--tokenized",)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sacrebleu"):
            scores[flags] = json.loads(olt("bleu", tmp_path / "gen.txt", tmp_path / "ref.txt", "--json", *flags)
                                       .stdout)["bleu"]
        warned = any("tokenized" in rec.getMessage() for rec in caplog.records if rec.name == "sacrebleu")
        assert warned == (not flags), caplog.text
    assert scores[()] == scores[("--tokenized",)] and 0 < scores[()] < 100
