"""Raw parallel text -> sentencepiece -> fairseq-preprocess, and BLEU of fairseq-generate output."""

import glob
import gzip
import logging
import os
import re
import shutil

from .errors import ConfigError
from .io import write_text

SPLIT_PREFIXES = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}


def _open(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def find_split(raw_dir: str, split: str, lang: str) -> str:
    """The raw file of one split and language: {prefix}*.{lang}[.gz], the shortest name first."""
    found = []
    for prefix in SPLIT_PREFIXES[split]:
        for pattern in (f"{prefix}.{lang}", f"{prefix}.{lang}.gz", f"{prefix}*.{lang}", f"{prefix}*.{lang}.gz"):
            found += glob.glob(os.path.join(raw_dir, pattern))
        if found:
            return min(set(found), key=lambda p: (len(p), p))
    raise ConfigError(f"no {split} file for language {lang!r} in {raw_dir!r}: expected "
                      f"{' or '.join(p + '*.' + lang for p in SPLIT_PREFIXES[split])} (optionally .gz)")


def read_pairs(raw_dir: str, split: str, src: str, tgt: str) -> list[tuple[str, str]]:
    ps, pt = find_split(raw_dir, split, src), find_split(raw_dir, split, tgt)
    with _open(ps) as fs, _open(pt) as ft:
        s, t = fs.read().splitlines(), ft.read().splitlines()
    if len(s) != len(t):
        raise ConfigError(f"{ps!r} has {len(s)} lines but {pt!r} has {len(t)}: parallel files must match line for line")
    return [(a.strip(), b.strip()) for a, b in zip(s, t)]


def clean(pairs: list[tuple[str, str]], max_words: int) -> tuple[list[tuple[str, str]], int]:
    """Drop pairs with an empty side or a side longer than max_words; returns (kept, dropped)."""
    kept = [(a, b) for a, b in pairs if a and b and len(a.split()) <= max_words and len(b.split()) <= max_words]
    return kept, len(pairs) - len(kept)


def _write(path: str, lines: list[str]) -> None:
    write_text(path, "".join(line + "\n" for line in lines))


def prepare(raw_dir: str, out_dir: str, src: str, tgt: str, vocab_size: int = 8000, max_words: int = 250,
            workers: int = 2, log=print, joined: bool = False) -> dict[str, int]:
    """Clean, learn & apply sentencepiece, then fairseq-preprocess into out_dir/bin.

    One sentencepiece model per language, or with `joined` one for both and a joined dictionary.
    """
    import sentencepiece as spm

    if not os.path.isdir(raw_dir):
        raise ConfigError(f"data directory {raw_dir!r} does not exist")
    splits = {s: read_pairs(raw_dir, s, src, tgt) for s in ("train", "valid", "test")}
    splits["train"], dropped = clean(splits["train"], max_words)
    if not splits["train"]:
        raise ConfigError(f"{raw_dir!r}: no usable training pairs (all empty or longer than {max_words} words)")
    log(f"[prepare] {raw_dir}: train {len(splits['train'])} pairs ({dropped} dropped: empty or > {max_words} words), "
        f"valid {len(splits['valid'])}, test {len(splits['test'])}")
    work = out_dir + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("raw", "spm", "bin"):
        os.makedirs(os.path.join(work, sub))
    for split, pairs in splits.items():
        for i, lang in enumerate((src, tgt)):
            _write(os.path.join(work, "raw", f"{split}.{lang}"), [p[i] for p in pairs])
    for lang in (src, tgt):
        name = "joined" if joined else lang
        prefix = os.path.join(work, "spm", f"spm.{name}")
        if not os.path.exists(prefix + ".model"):
            log(f"[prepare] sentencepiece {name}: vocab {vocab_size}")
            inputs = [os.path.join(work, "raw", f"train.{x}") for x in ((src, tgt) if joined else (lang,))]
            spm.SentencePieceTrainer.train(
                input=",".join(inputs), model_prefix=prefix, vocab_size=vocab_size, character_coverage=1.0,
                model_type="unigram", hard_vocab_limit=False, num_threads=workers, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        for split in splits:
            with open(os.path.join(work, "raw", f"{split}.{lang}"), encoding="utf-8") as f:
                lines = f.read().splitlines()
            _write(os.path.join(work, "spm", f"{split}.{lang}"), [" ".join(p) for p in sp.encode(lines, out_type=str)])
    _preprocess(["--source-lang", src, "--target-lang", tgt, "--trainpref", os.path.join(work, "spm", "train"),
                 "--validpref", os.path.join(work, "spm", "valid"), "--testpref", os.path.join(work, "spm", "test"),
                 "--destdir", os.path.join(work, "bin"), "--workers", str(workers)]
                + (["--joined-dictionary"] if joined else []), work, out_dir, log)
    return {s: len(p) for s, p in splits.items()}


def run_preprocess(args: list[str], log=None) -> None:
    """fairseq-preprocess with these arguments, its own main run in this process (a second process would pay
    fairseq's start-up again, 4-5 s); its log goes to DESTDIR/preprocess.log as the command's does, not to ours."""
    from fairseq import options

    if log:
        log("[prepare] fairseq-preprocess " + " ".join(args))
    root = logging.getLogger()
    root_state = list(root.handlers), root.level
    from fairseq_cli import preprocess  # its import configures the root logger (stdout, INFO): undone below

    root.handlers[:] = root_state[0]
    root.setLevel(root_state[1])
    logger = logging.getLogger("fairseq_cli.preprocess")
    state = list(logger.handlers), logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        preprocess.main(options.get_preprocessing_parser().parse_args(args))
    except Exception as e:  # what the command would have printed as its traceback's last line
        raise ConfigError(f"fairseq-preprocess failed: {type(e).__name__}: {e}") from e
    finally:
        for h in logger.handlers[len(state[0]):]:  # main adds a file handler per call
            h.close()
        logger.handlers[:] = state[0]
        logger.setLevel(state[1])
        logger.propagate = state[2]


def _preprocess(args: list[str], work: str, out_dir: str, log=None) -> None:
    """fairseq-preprocess into `work`, then `work` replaces `out_dir` (never half-written)."""
    run_preprocess(args, log)
    publish(work, out_dir)


def publish(work: str, out_dir: str) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(work, out_dir)


def prepare_test(prepared: str, source: str, reference: str, out_dir: str, src: str, tgt: str) -> str:
    """Binarize an extra test set with a prepared directory's own sentencepiece models and dictionaries.

    Returns the binarized directory (its `test` split); `reference` stays raw for scoring.
    """
    import sentencepiece as spm

    for path in (source, reference):
        if not os.path.isfile(path):
            raise ConfigError(f"extra test file {path!r} does not exist")
    src_lines, ref_lines = read_lines(source), read_lines(reference)
    if len(src_lines) != len(ref_lines):
        raise ConfigError(f"{source!r} has {len(src_lines)} lines but {reference!r} has {len(ref_lines)}: "
                          f"parallel files must match line for line")
    work = out_dir + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    for lang, lines in ((src, src_lines), (tgt, ref_lines)):
        model = os.path.join(prepared, "spm", f"spm.{lang}.model")
        if not os.path.isfile(model):
            model = os.path.join(prepared, "spm", "spm.joined.model")
        sp = spm.SentencePieceProcessor(model_file=model)
        _write(os.path.join(work, f"test.{lang}"), [" ".join(p) for p in sp.encode(lines, out_type=str)])
    _preprocess(["--source-lang", src, "--target-lang", tgt, "--testpref", os.path.join(work, "test"),
                 "--destdir", os.path.join(work, "bin"), "--srcdict", os.path.join(prepared, "bin", f"dict.{src}.txt"),
                 "--tgtdict", os.path.join(prepared, "bin", f"dict.{tgt}.txt"), "--workers", "1"], work, out_dir)
    return os.path.join(out_dir, "bin")


def read_hypotheses(generate_output: str) -> list[str]:
    """Detokenized hypotheses (D- lines) of fairseq-generate, in corpus order."""
    hyps = {}
    for line in generate_output.splitlines():
        m = re.match(r"^D-(\d+)\t[^\t]*\t(.*)$", line)
        if m:
            hyps[int(m.group(1))] = m.group(2)
    return [hyps[i] for i in sorted(hyps)]


def bleu(hypotheses: list[str], references: list[str], tokenized: bool = False) -> tuple[float, str]:
    """Detokenized sacreBLEU and its signature. `tokenized`: the text is tokenized on purpose (the embedded corpus
    writes " ." as a word), so sacreBLEU's warning that it looks tokenized is off (its `force`; the score is the
    same)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ConfigError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    metric = sacrebleu.metrics.BLEU(force=tokenized)
    score = metric.corpus_score(hypotheses, [references])
    return score.score, str(metric.get_signature())


def compound_split(lines: list[str]) -> list[str]:
    """Split hyphenated compounds as fairseq's compound_split_bleu.sh does (a-b -> a ##AT##-##AT## b)."""
    return [re.sub(r"(\S)-(\S)", r"\1 ##AT##-##AT## \2", line) for line in lines]


def read_lines(path: str) -> list[str]:
    with _open(path) as f:
        return f.read().splitlines()


