"""GLUE TSV -> BPE -> fairseq's sentence_prediction layout (OUT/input0, OUT/input1, OUT/label), offline.

The BPE is fairseq's GPT-2 BPE when its files are given (encoder.json and vocab.bpe, as RoBERTa uses them,
with RoBERTa's dict.txt when it is given too), else a sentencepiece model learned on the task's training text.
Reports use the dev split, as GLUE papers do (the test splits carry no labels).
"""

import csv
import gzip
import os
import shutil

from .data import _write, publish, run_preprocess
from .errors import ConfigError

# task: (sentence columns, label column, dev file stem)
TASKS = {
    "SST-2": (("sentence",), "label", "dev"),
    "MRPC": (("#1 String", "#2 String"), "Quality", "dev"),
    "RTE": (("sentence1", "sentence2"), "label", "dev"),
    "QQP": (("question1", "question2"), "is_duplicate", "dev"),
    "MNLI": (("sentence1", "sentence2"), "gold_label", "dev_matched"),
}


def find(raw_dir: str, stem: str) -> str:
    for name in (f"{stem}.tsv", f"{stem}.tsv.gz"):
        path = os.path.join(raw_dir, name)
        if os.path.isfile(path):
            return path
    raise ConfigError(f"{raw_dir!r} has no {stem}.tsv (or {stem}.tsv.gz)")


def read_tsv(path: str, task: str) -> tuple[list[tuple[str, ...]], list[str]]:
    """(sentences of each row, label of each row) of one GLUE file; one clear line if its columns are not the task's."""
    columns, label, _ = TASKS[task]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC's header starts with a BOM
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise ConfigError(f"{path!r} is empty")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in (*columns, label) if c not in header]
    if missing:
        raise ConfigError(f"{path!r} has no column {missing[0]!r} (its columns: {', '.join(header)}); "
                          f"a {task} file has {', '.join(repr(c) for c in (*columns, label))}")
    idx = [header.index(c) for c in columns]
    li = header.index(label)
    sentences, labels = [], []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise ConfigError(f"{path!r} line {n} has {len(row)} columns, the header {len(header)}")
        if row[li].strip() in ("", "-1"):
            raise ConfigError(f"{path!r} line {n} has no label: use the train and dev splits (test carries none)")
        sentences.append(tuple(row[i].strip() for i in idx))
        labels.append(row[li].strip())
    return sentences, labels


def prepare_glue(task: str, raw_dir: str, out_dir: str, gpt2_bpe: str | None = None, dictionary: str | None = None,
                 vocab_size: int = 8000, workers: int = 2, log=print) -> dict[str, int]:
    if task not in TASKS:
        raise ConfigError(f"task {task!r} is unknown; allowed: {', '.join(TASKS)}")
    if not os.path.isdir(raw_dir):
        raise ConfigError(f"data directory {raw_dir!r} does not exist")
    if dictionary and not gpt2_bpe:
        raise ConfigError("--dict is RoBERTa's dictionary of GPT-2 BPE symbols: give --gpt2-bpe DIR with it")
    if dictionary and not os.path.isfile(dictionary):
        raise ConfigError(f"dictionary {dictionary!r} does not exist")
    splits = {"train": read_tsv(find(raw_dir, "train"), task), "valid": read_tsv(find(raw_dir, TASKS[task][2]), task)}
    n_inputs = len(TASKS[task][0])
    log(f"[prepare-glue] {task} {raw_dir}: train {len(splits['train'][0])}, dev {len(splits['valid'][0])} rows, "
        f"{n_inputs} sentence(s) a row")
    work = out_dir + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "text"))
    for split, (sentences, labels) in splits.items():
        for i in range(n_inputs):
            _write(os.path.join(work, "text", f"{split}.raw.input{i}"), [s[i] for s in sentences])
        _write(os.path.join(work, "text", f"{split}.label"), labels)
    encode = _gpt2_encoder(gpt2_bpe) if gpt2_bpe else _sentencepiece(work, n_inputs, vocab_size, workers, log)
    for split in splits:
        for i in range(n_inputs):
            with open(os.path.join(work, "text", f"{split}.raw.input{i}"), encoding="utf-8") as f:
                _write(os.path.join(work, "text", f"{split}.input{i}"), encode(f.read().splitlines()))
    text = os.path.join(work, "text")
    for i in range(n_inputs):
        given = dictionary or (os.path.join(work, "input0", "dict.txt") if i else None)
        run_preprocess(["--only-source", "--trainpref", os.path.join(text, f"train.input{i}"),
                        "--validpref", os.path.join(text, f"valid.input{i}"), "--destdir", os.path.join(work, f"input{i}"),
                        "--workers", str(workers)] + (["--srcdict", given] if given else []), log)
    run_preprocess(["--only-source", "--trainpref", os.path.join(text, "train.label"), "--validpref",
                    os.path.join(text, "valid.label"), "--destdir", os.path.join(work, "label"), "--workers", "1"], log)
    publish(work, out_dir)
    return {"train": len(splits["train"][0]), "valid": len(splits["valid"][0]), "inputs": n_inputs}


def _gpt2_encoder(bpe_dir: str):
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    files = [os.path.join(bpe_dir, f) for f in ("encoder.json", "vocab.bpe")]
    for path in files:
        if not os.path.isfile(path):
            raise ConfigError(f"GPT-2 BPE file {path!r} does not exist (--gpt2-bpe needs encoder.json and vocab.bpe)")
    bpe = get_encoder(*files)
    return lambda lines: [" ".join(map(str, bpe.encode(line))) for line in lines]


def _sentencepiece(work: str, n_inputs: int, vocab_size: int, workers: int, log):
    import sentencepiece as spm

    prefix = os.path.join(work, "text", "spm")
    inputs = ",".join(os.path.join(work, "text", f"train.raw.input{i}") for i in range(n_inputs))
    log(f"[prepare-glue] sentencepiece: vocab {vocab_size}")
    spm.SentencePieceTrainer.train(input=inputs, model_prefix=prefix, vocab_size=vocab_size, character_coverage=1.0,
                                   model_type="unigram", hard_vocab_limit=False, num_threads=workers, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    return lambda lines: [" ".join(p) for p in sp.encode(lines, out_type=str)]
